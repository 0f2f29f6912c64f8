// Command fabricsim plays both roles of Hyperledger Fabric's deployment
// pattern on swarm, for weft's end-to-end test, with nothing but the
// standard library (it is built static into a one-file scratch image).
//
//	fabricsim peer       a validating peer: a swarm task named by
//	                     --hostname 'vp{{.Task.Slot}}'
//	fabricsim chaincode  a chaincode container, started by its peer
//
// A peer listens on CORE_PEER_LISTENADDRESS (:7051) for a one-line
// protocol, starts one chaincode container through the Docker API of its
// own host (CORE_VM_ENDPOINT) on the network CORE_VM_DOCKER_HOSTCONFIG_NETWORKMODE
// with the name server CORE_VM_DOCKER_HOSTCONFIG_DNS, as Fabric does, dials
// every peer of CORE_PEER_GOSSIP_BOOTSTRAP by name once a second, and
// serves what it knows as JSON on FABRICSIM_STATUS_ADDR (:9000).
//
// A chaincode dials its peer at CORE_PEER_ADDRESS by name, registers as
// CORE_CHAINCODE_ID_NAME and holds the connection, dialling again whenever
// it breaks.
//
// The protocol: a client sends one line, "HELLO <peer id>" (a peer) or
// "REGISTER <chaincode id>" (a chaincode); the peer answers "PEER <its id>"
// and closes, or "REGISTERED <its id>" and keeps the chaincode's connection
// until it breaks.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	role := "peer"
	if len(os.Args) > 1 {
		role = os.Args[1]
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("role", role)
	// As PID 1 of its container the process gets no default SIGTERM
	// handling: without this, every stop would wait for the kill timeout.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	var err error
	switch role {
	case "peer":
		var cfg peerConfig
		if cfg, err = peerConfigFromEnv(os.Getenv); err == nil {
			err = newPeer(cfg, log).run(ctx)
		}
	case "chaincode":
		err = runChaincode(ctx, log, chaincodeConfigFromEnv(os.Getenv))
	default:
		err = fmt.Errorf("unknown role %q: want peer or chaincode", role)
	}
	if err != nil && ctx.Err() == nil {
		log.Error("exiting", "err", err)
		os.Exit(1)
	}
}

// fields splits a list written with commas, spaces or both, as Fabric's
// list-valued CORE_* variables are.
func fields(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' })
}

// envOr returns getenv(key), or def if it is empty.
func envOr(getenv func(string) string, key, def string) string {
	if v := getenv(key); v != "" {
		return v
	}
	return def
}
