package keyservice

// This file owns the server side: a manager's listener, the mutual TLS
// handshake with the identity the files hold at that moment, and the one
// request and one response of a connection.

import (
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// server is a manager's listener and the connections it serves.
type server struct {
	l  net.Listener
	wg sync.WaitGroup
}

// connTimeout bounds a whole connection: handshake, request, response.
const connTimeout = 10 * time.Second

func (s *Service) listen() (*server, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(s.cfg.BindAddr, strconv.Itoa(s.cfg.Port)))
	if err != nil {
		return nil, err
	}
	srv := &server{l: l}
	srv.wg.Add(1)
	go func() {
		defer srv.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					continue
				}
				return
			}
			select {
			case s.sem <- struct{}{}:
			default:
				c.Close() // too many at once: the client retries
				continue
			}
			srv.wg.Add(1)
			go func() {
				defer srv.wg.Done()
				defer func() { <-s.sem }()
				s.serveConn(c)
			}()
		}
	}()
	return srv, nil
}

func (srv *server) close() {
	srv.l.Close()
	srv.wg.Wait()
}

// serveConn answers one client: its certificate must be this swarm's, its
// node one the swarm still lists; a manager's keyring is merged into ours;
// the answer is our keyring.
func (s *Service) serveConn(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(connTimeout))
	from, _ := netip.ParseAddrPort(c.RemoteAddr().String())
	tc := tls.Server(c, &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			id, err := s.ids.Current()
			if err != nil {
				return nil, err
			}
			if id.Role != RoleManager {
				return nil, errors.New("this node is no longer a manager")
			}
			return id.serverConfig(), nil
		},
	})
	if err := tc.Handshake(); err != nil {
		s.log.Debug("key service: handshake refused", "from", from.String(), "err", err)
		return
	}
	peer := peerOf(tc.ConnectionState().PeerCertificates)
	var req request
	if err := readMessage(tc, &req); err != nil {
		_ = writeMessage(tc, response{V: protocol, Err: err.Error()})
		return
	}
	if !s.isNode(peer.Node) {
		s.log.Warn("key service: refused a node the swarm does not list", "node", peer.Node, "from", from.String())
		_ = writeMessage(tc, response{V: protocol, Err: "node " + peer.Node + " is not in this swarm"})
		return
	}
	s.authenticated(from.Addr())
	if req.Ring != nil && peer.Role == RoleManager {
		remote, err := req.Ring.decode()
		if err != nil {
			_ = writeMessage(tc, response{V: protocol, Err: "keyring: " + err.Error()})
			return
		}
		if err := s.mergeIn(remote); err != nil {
			s.log.Warn("keyring from a manager not applied", "node", peer.Node, "err", err)
		}
	}
	s.log.Debug("key service: keyring handed out", "node", peer.Node, "role", peer.Role, "from", from.String())
	_ = writeMessage(tc, response{V: protocol, Ring: encodeRing(s.cfg.Keyring.Ring())})
}
