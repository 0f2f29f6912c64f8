package main

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"
)

// chaincodeConfig is what a peer hands its chaincode container.
type chaincodeConfig struct {
	// PeerAddress is the peer's name and port (CORE_PEER_ADDRESS).
	PeerAddress string
	// ID is the chaincode's name (CORE_CHAINCODE_ID_NAME).
	ID string
}

func chaincodeConfigFromEnv(getenv func(string) string) chaincodeConfig {
	return chaincodeConfig{
		PeerAddress: envOr(getenv, "CORE_PEER_ADDRESS", "peer:7051"),
		ID:          envOr(getenv, "CORE_CHAINCODE_ID_NAME", "simcc"),
	}
}

// runChaincode registers with the peer and holds the connection, dialling
// (and so resolving the peer's name) again whenever it breaks, until ctx
// ends.
func runChaincode(ctx context.Context, log *slog.Logger, cfg chaincodeConfig) error {
	log = log.With("chaincode", cfg.ID, "peer", cfg.PeerAddress)
	for ctx.Err() == nil {
		start := time.Now()
		err := register(ctx, log, cfg)
		log.Warn("not registered", "err", err)
		// Dial again at once after a connection that lasted; otherwise
		// wait a second, so that a peer not up yet is not hammered.
		if time.Since(start) < time.Second {
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
	return nil
}

// register dials the peer, registers and returns when the connection ends.
func register(ctx context.Context, log *slog.Logger, cfg chaincodeConfig) error {
	dctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	c, err := (&net.Dialer{KeepAlive: 5 * time.Second}).DialContext(dctx, "tcp", cfg.PeerAddress)
	if err != nil {
		return err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "REGISTER %s\n", cfg.ID); err != nil {
		return err
	}
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	peerID, ok := strings.CutPrefix(strings.TrimSpace(line), "REGISTERED ")
	if !ok {
		return fmt.Errorf("peer %s refused: %q", cfg.PeerAddress, line)
	}
	_ = c.SetDeadline(time.Time{})
	log.Info("registered", "peer_id", peerID, "remote", c.RemoteAddr().String())
	_, err = r.ReadByte()
	return fmt.Errorf("connection to %s ended: %w", c.RemoteAddr(), err)
}
