package keyservice

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestIdentityFromSwarmFiles(t *testing.T) {
	ca := newCA(t)
	dir := ca.node(t, "cluster1", RoleManager, "node1", certOpts{})
	id, err := loadIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	if id.Cluster != "cluster1" || id.Node != "node1" || id.Role != RoleManager {
		t.Fatalf("identity %+v", id)
	}
	if _, err := loadIdentity(t.TempDir()); !errors.Is(err, errNoSwarm) {
		t.Fatalf("no certificates: %v", err)
	}
	// An encrypted node key (swarm autolock) is named as such.
	enc := ca.node(t, "cluster1", RoleWorker, "node2", certOpts{})
	if err := os.WriteFile(filepath.Join(enc, certsSubdir, nodeKey), []byte("-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadIdentity(enc); err == nil || !strings.Contains(err.Error(), "autolock") {
		t.Fatalf("encrypted key: %v", err)
	}
	// A certificate the swarm's root did not sign is refused, even our own.
	other := newCA(t)
	if err := os.WriteFile(filepath.Join(dir, certsSubdir, rootCert), other.pem, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := loadIdentity(dir); err == nil {
		t.Fatal("a node certificate not signed by the root CA was accepted")
	}
}

// TestIdentityFollowsTheFiles: swarm renewing the certificate, promoting
// the node, or the node leaving, are seen at the next Current.
func TestIdentityFollowsTheFiles(t *testing.T) {
	ca := newCA(t)
	dir := t.TempDir()
	ids := &identities{dir: dir}
	if _, err := ids.Current(); !errors.Is(err, errNoSwarm) {
		t.Fatalf("before the swarm: %v", err)
	}
	ca.write(t, dir, "c", RoleWorker, "n1", certOpts{})
	id, err := ids.Current()
	if err != nil || id.Role != RoleWorker {
		t.Fatalf("after joining: %+v, %v", id, err)
	}
	if again, _ := ids.Current(); again != id {
		t.Fatal("unchanged files read again")
	}
	ca.write(t, dir, "c", RoleManager, "n1", certOpts{})
	if id, err := ids.Current(); err != nil || id.Role != RoleManager {
		t.Fatalf("after promotion: %+v, %v", id, err)
	}
	if err := os.RemoveAll(filepath.Join(dir, certsSubdir)); err != nil {
		t.Fatal(err)
	}
	if _, err := ids.Current(); !errors.Is(err, errNoSwarm) {
		t.Fatalf("after leaving: %v", err)
	}
}

// TestHandshake: real TLS 1.3 handshakes between a manager's server and
// clients holding various certificates; only members of the same swarm
// get through, and a client accepts only a manager as server.
func TestHandshake(t *testing.T) {
	ca := newCA(t)
	mgr := mustID(t, ca.node(t, "c1", RoleManager, "m1", certOpts{}))
	worker := mustID(t, ca.node(t, "c1", RoleWorker, "w1", certOpts{}))
	for _, tc := range []struct {
		name   string
		client *Identity
		server *Identity
		ok     bool
		// outsider: the client accepts any server, so that what is
		// tested is the server's check of the client.
		outsider bool
	}{
		{"worker to manager", worker, mgr, true, false},
		{"manager to manager", mustID(t, ca.node(t, "c1", RoleManager, "m2", certOpts{})), mgr, true, false},
		{"client of another cluster, same CA", looseID(t, ca, "c2", RoleWorker, "x", certOpts{}), mgr, false, true},
		{"client of another CA", looseID(t, newCA(t), "c1", RoleWorker, "w1", certOpts{}), mgr, false, true},
		{"expired client", looseID(t, ca, "c1", RoleWorker, "old", certOpts{notAfter: time.Now().Add(-time.Minute)}), mgr, false, true},
		{"client without a role", looseID(t, ca, "c1", "", "norole", certOpts{noOU: true}), mgr, false, true},
		{"server-only certificate as client", looseID(t, ca, "c1", RoleWorker, "srv", certOpts{usages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}), mgr, false, true},
		{"worker as server", mgr, worker, false, false},
		{"no client certificate", nil, mgr, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := handshake(tc.client, tc.server, tc.outsider)
			t.Logf("%v", err)
			if (err == nil) != tc.ok {
				t.Fatalf("handshake: %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func mustID(t testing.TB, dir string) *Identity {
	t.Helper()
	id, err := loadIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// looseID is an identity whose own certificate would not pass the check
// (an attacker's): built without it, and trusting ca.
func looseID(t testing.TB, ca *testCA, cluster, role, node string, o certOpts) *Identity {
	t.Helper()
	certPEM, keyPEM := ca.issue(t, cluster, role, node, o)
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	return &Identity{Cluster: cluster, Node: node, Role: role, cert: cert, roots: roots, notAfter: o.notAfter}
}

// handshake runs a TLS handshake over a pipe; client nil sends no
// certificate; an outsider's client accepts any server.
func handshake(client, server *Identity, outsider bool) error {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	_ = a.SetDeadline(time.Now().Add(5 * time.Second))
	_ = b.SetDeadline(time.Now().Add(5 * time.Second))
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true}
	if client != nil && !outsider {
		cfg = client.clientConfig()
	} else if client != nil {
		cfg.Certificates = []tls.Certificate{client.cert}
	}
	errc := make(chan error, 1)
	go func() {
		s := tls.Server(b, server.serverConfig())
		err := s.Handshake()
		if err == nil {
			// TLS 1.3: the client learns of a refused certificate only
			// when it reads.
			_, err = s.Write([]byte("ok"))
		}
		errc <- err
	}()
	c := tls.Client(a, cfg)
	err := c.Handshake()
	if err == nil {
		buf := make([]byte, 2)
		_, err = c.Read(buf)
	}
	// The side that refused says why; the other only hears that it did.
	if serr := <-errc; serr != nil && (err == nil || strings.HasPrefix(err.Error(), "remote error")) {
		err = serr
	}
	return err
}
