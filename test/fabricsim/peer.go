package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// peerConfig is a peer's configuration, read from the variables Fabric's
// peer reads (CORE_*) plus a few of fabricsim's own (FABRICSIM_*).
type peerConfig struct {
	// ID names the peer (CORE_PEER_ID; default: the hostname).
	ID string
	// Address is where chaincode and other peers reach this peer, by name
	// (CORE_PEER_ADDRESS; default: ID:7051).
	Address string
	// Listen is the address the peer listens on (CORE_PEER_LISTENADDRESS).
	Listen string
	// Bootstrap lists the peers to dial, itself included or not
	// (CORE_PEER_GOSSIP_BOOTSTRAP, space- or comma-separated).
	Bootstrap []string
	// VMEndpoint is the Docker API that runs chaincode (CORE_VM_ENDPOINT).
	VMEndpoint string
	// NetworkMode and DNS are the chaincode container's HostConfig
	// (CORE_VM_DOCKER_HOSTCONFIG_NETWORKMODE, CORE_VM_DOCKER_HOSTCONFIG_DNS).
	NetworkMode string
	DNS         []string
	// Image is the chaincode's image (FABRICSIM_IMAGE).
	Image string
	// Chaincode is the chaincode's name (FABRICSIM_CHAINCODE).
	Chaincode string
	// StatusAddr serves the peer's status as JSON (FABRICSIM_STATUS_ADDR).
	StatusAddr string
}

func peerConfigFromEnv(getenv func(string) string) (peerConfig, error) {
	host, _ := os.Hostname()
	c := peerConfig{
		ID:          envOr(getenv, "CORE_PEER_ID", host),
		Listen:      envOr(getenv, "CORE_PEER_LISTENADDRESS", ":7051"),
		Bootstrap:   fields(getenv("CORE_PEER_GOSSIP_BOOTSTRAP")),
		VMEndpoint:  envOr(getenv, "CORE_VM_ENDPOINT", "unix:///var/run/docker.sock"),
		NetworkMode: getenv("CORE_VM_DOCKER_HOSTCONFIG_NETWORKMODE"),
		DNS:         fields(getenv("CORE_VM_DOCKER_HOSTCONFIG_DNS")),
		Image:       getenv("FABRICSIM_IMAGE"),
		Chaincode:   envOr(getenv, "FABRICSIM_CHAINCODE", "simcc"),
		StatusAddr:  envOr(getenv, "FABRICSIM_STATUS_ADDR", ":9000"),
	}
	c.Address = envOr(getenv, "CORE_PEER_ADDRESS", c.ID+":7051")
	switch {
	case c.ID == "":
		return c, errors.New("no peer ID: set CORE_PEER_ID")
	case c.Image == "":
		return c, errors.New("no chaincode image: set FABRICSIM_IMAGE")
	case c.NetworkMode == "":
		return c, errors.New("no chaincode network: set CORE_VM_DOCKER_HOSTCONFIG_NETWORKMODE")
	}
	return c, nil
}

// Status is what a peer serves on its status address.
type Status struct {
	ID       string `json:"id"`
	Address  string `json:"address"`
	Hostname string `json:"hostname"`
	// Chaincode is the container the peer started for its chaincode.
	Chaincode ChaincodeContainer `json:"chaincode"`
	// Registered lists the chaincodes connected to the peer now.
	Registered []Registration `json:"registered"`
	// Peers holds the last attempt on each bootstrap peer, by address.
	Peers map[string]PeerContact `json:"peers"`
}

// ChaincodeContainer is the state of the chaincode container a peer starts.
type ChaincodeContainer struct {
	Name    string `json:"name"`
	ID      string `json:"id,omitempty"`
	Started bool   `json:"started"`
	Error   string `json:"error,omitempty"`
}

// Registration is one chaincode connection held by a peer.
type Registration struct {
	Chaincode string    `json:"chaincode"`
	Remote    string    `json:"remote"`
	Since     time.Time `json:"since"`
}

// PeerContact is the outcome of the last hello to another peer.
type PeerContact struct {
	// ID is the id the peer answered with.
	ID string `json:"id,omitempty"`
	// Remote is the address the name resolved to and was dialled.
	Remote string    `json:"remote,omitempty"`
	OK     bool      `json:"ok"`
	Error  string    `json:"error,omitempty"`
	At     time.Time `json:"at"`
}

type peer struct {
	cfg peerConfig
	log *slog.Logger

	mu        sync.Mutex
	chaincode ChaincodeContainer
	conns     map[net.Conn]Registration
	peers     map[string]PeerContact
}

func newPeer(cfg peerConfig, log *slog.Logger) *peer {
	return &peer{
		cfg:       cfg,
		log:       log.With("peer", cfg.ID),
		chaincode: ChaincodeContainer{Name: fmt.Sprintf("dev-%s-%s", cfg.ID, cfg.Chaincode)},
		conns:     map[net.Conn]Registration{},
		peers:     map[string]PeerContact{},
	}
}

// run serves until ctx ends.
func (p *peer) run(ctx context.Context) error {
	ln, err := net.Listen("tcp", p.cfg.Listen)
	if err != nil {
		return err
	}
	statusLn, err := net.Listen("tcp", p.cfg.StatusAddr)
	if err != nil {
		ln.Close()
		return err
	}
	p.log.Info("peer up", "listen", p.cfg.Listen, "address", p.cfg.Address, "bootstrap", p.cfg.Bootstrap)
	status := &http.Server{Handler: http.HandlerFunc(p.serveStatus), ReadHeaderTimeout: 5 * time.Second}
	var wg sync.WaitGroup
	wg.Go(func() { _ = status.Serve(statusLn) })
	wg.Go(func() { p.accept(ctx, ln) })
	wg.Go(func() { p.startChaincode(ctx) })
	for _, ep := range p.cfg.Bootstrap {
		if ep != p.cfg.Address {
			wg.Go(func() { p.greet(ctx, ep) })
		}
	}
	<-ctx.Done()
	ln.Close()
	_ = status.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	wg.Wait()
	return nil
}

func (p *peer) serveStatus(w http.ResponseWriter, r *http.Request) {
	host, _ := os.Hostname()
	p.mu.Lock()
	s := Status{
		ID:         p.cfg.ID,
		Address:    p.cfg.Address,
		Hostname:   host,
		Chaincode:  p.chaincode,
		Registered: []Registration{},
		Peers:      make(map[string]PeerContact, len(p.peers)),
	}
	for _, reg := range p.conns {
		s.Registered = append(s.Registered, reg)
	}
	for ep, c := range p.peers {
		s.Peers[ep] = c
	}
	p.mu.Unlock()
	slices.SortFunc(s.Registered, func(a, b Registration) int { return a.Since.Compare(b.Since) })
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(s)
}

// accept serves connections until ln is closed. It does not wait for the
// chaincode connections it holds: run closes them on its way out.
func (p *peer) accept(ctx context.Context, ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() == nil {
				p.log.Error("accept", "err", err)
			}
			return
		}
		go p.handle(c)
	}
}

// handle answers one connection: a peer's hello, or a chaincode's
// registration, held until the connection breaks.
func (p *peer) handle(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return
	}
	verb, arg, _ := strings.Cut(strings.TrimSpace(line), " ")
	switch verb {
	case "HELLO":
		fmt.Fprintf(c, "PEER %s\n", p.cfg.ID)
	case "REGISTER":
		if arg == "" {
			fmt.Fprintln(c, "ERR no chaincode id")
			return
		}
		if _, err := fmt.Fprintf(c, "REGISTERED %s\n", p.cfg.ID); err != nil {
			return
		}
		_ = c.SetDeadline(time.Time{})
		reg := Registration{Chaincode: arg, Remote: c.RemoteAddr().String(), Since: time.Now().UTC()}
		p.mu.Lock()
		p.conns[c] = reg
		p.mu.Unlock()
		p.log.Info("chaincode registered", "chaincode", arg, "remote", reg.Remote)
		// The chaincode sends nothing more: reading returns when the
		// connection breaks or run closes it.
		_, err := c.Read(make([]byte, 1))
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
		p.log.Info("chaincode gone", "chaincode", arg, "remote", reg.Remote, "err", err)
	default:
		fmt.Fprintf(c, "ERR unknown request %q\n", verb)
	}
}

// greet says hello to the peer at ep (a name and port) once a second
// until ctx ends, recording each outcome.
func (p *peer) greet(ctx context.Context, ep string) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		c := p.hello(ctx, ep)
		p.mu.Lock()
		if prev := p.peers[ep]; prev.OK != c.OK || prev.Remote != c.Remote {
			p.log.Info("peer contact", "endpoint", ep, "ok", c.OK, "remote", c.Remote, "id", c.ID, "err", c.Error)
		}
		p.peers[ep] = c
		p.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (p *peer) hello(ctx context.Context, ep string) PeerContact {
	pc := PeerContact{At: time.Now().UTC()}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	// Each attempt resolves the name again, so a peer that moves is
	// found at its new address.
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", ep)
	if err != nil {
		pc.Error = err.Error()
		return pc
	}
	defer c.Close()
	pc.Remote = c.RemoteAddr().String()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if _, err := fmt.Fprintf(c, "HELLO %s\n", p.cfg.ID); err != nil {
		pc.Error = err.Error()
		return pc
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		pc.Error = err.Error()
		return pc
	}
	id, ok := strings.CutPrefix(strings.TrimSpace(line), "PEER ")
	if !ok || id == "" {
		pc.Error = fmt.Sprintf("unexpected answer %q", line)
		return pc
	}
	pc.ID, pc.OK = id, true
	return pc
}

// startChaincode starts the peer's chaincode container on its own host,
// trying again until it succeeds or ctx ends.
func (p *peer) startChaincode(ctx context.Context) {
	backoff := time.Second
	for {
		id, err := p.launch(ctx)
		p.mu.Lock()
		p.chaincode.ID, p.chaincode.Started = id, err == nil
		p.chaincode.Error = ""
		if err != nil {
			p.chaincode.Error = err.Error()
		}
		p.mu.Unlock()
		if err == nil {
			p.log.Info("chaincode started", "container", p.chaincode.Name, "id", id)
			return
		}
		p.log.Warn("start chaincode", "container", p.chaincode.Name, "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

// launch creates and starts the chaincode container as Fabric's peer does:
// same network as the peer (HostConfig.NetworkMode), weft's name server
// (HostConfig.Dns), and the peer's address by name in its environment.
// A container of that name left by an earlier peer of the same ID on this
// host is replaced.
func (p *peer) launch(ctx context.Context) (string, error) {
	d, err := newDockerClient(p.cfg.VMEndpoint)
	if err != nil {
		return "", err
	}
	defer d.close()
	spec := containerSpec{
		Image: p.cfg.Image,
		Cmd:   []string{"chaincode"},
		Env: []string{
			"CORE_PEER_ADDRESS=" + p.cfg.Address,
			"CORE_CHAINCODE_ID_NAME=" + p.cfg.Chaincode + ":" + p.cfg.ID,
		},
		Labels: map[string]string{
			"fabricsim.peer":      p.cfg.ID,
			"fabricsim.chaincode": p.cfg.Chaincode,
		},
		HostConfig: hostConfig{NetworkMode: p.cfg.NetworkMode, DNS: p.cfg.DNS},
	}
	id, err := d.createContainer(ctx, p.chaincode.Name, spec)
	if errors.Is(err, errConflict) {
		if err := d.removeContainer(ctx, p.chaincode.Name); err != nil {
			return "", err
		}
		id, err = d.createContainer(ctx, p.chaincode.Name, spec)
	}
	if err != nil {
		return "", err
	}
	return id, d.startContainer(ctx, id)
}
