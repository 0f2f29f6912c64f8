package keyservice

// This file owns this host's swarm identity: the node certificate, key
// and root CA that swarm keeps under the engine's data root
// (swarm/certificates/), read again whenever swarm rewrites them (node
// certificate renewal, root CA rotation, leaving and joining), and the
// check of a peer's certificate chain against them.

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The files swarm keeps in <data-root>/swarm/certificates.
const (
	certsSubdir = "certificates"
	nodeCert    = "swarm-node.crt"
	nodeKey     = "swarm-node.key"
	rootCert    = "swarm-root-ca.crt"
)

// The roles swarm writes in a node certificate's OU.
const (
	RoleManager = "swarm-manager"
	RoleWorker  = "swarm-worker"
)

// Identity is this node's swarm identity, from its certificate.
type Identity struct {
	Cluster string // the swarm's ID: the certificate's O
	Node    string // the node's ID: its CN
	Role    string // RoleManager or RoleWorker: its OU

	cert     tls.Certificate
	roots    *x509.CertPool
	notAfter time.Time
}

// Peer is a verified peer: the identity its certificate proves.
type Peer struct {
	Node string
	Role string
}

// errNoSwarm says the certificates are not there: the engine is not in a
// swarm (yet), or the swarm directory is not mounted.
var errNoSwarm = errors.New("no swarm certificates")

// loadIdentity reads the identity in dir (the swarm directory).
func loadIdentity(dir string) (*Identity, error) {
	cd := filepath.Join(dir, certsSubdir)
	certPEM, err := os.ReadFile(filepath.Join(cd, nodeCert))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w in %s", errNoSwarm, cd)
	}
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(filepath.Join(cd, nodeKey))
	if err != nil {
		return nil, err
	}
	rootPEM, err := os.ReadFile(filepath.Join(cd, rootCert))
	if err != nil {
		return nil, err
	}
	return parseIdentity(certPEM, keyPEM, rootPEM)
}

// parseIdentity builds an identity from swarm's three files.
func parseIdentity(certPEM, keyPEM, rootPEM []byte) (*Identity, error) {
	if b, _ := pem.Decode(keyPEM); b != nil && (strings.Contains(b.Type, "ENCRYPTED") || b.Headers["Proc-Type"] != "") {
		return nil, errors.New("the swarm node key is encrypted (swarm autolock): weft cannot prove this node's membership with it")
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("swarm node certificate and key: %w", err)
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("swarm node certificate: %w", err)
		}
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(rootPEM) {
		return nil, errors.New("swarm root CA: no certificate in " + rootCert)
	}
	id := &Identity{cert: cert, roots: roots, notAfter: leaf.NotAfter}
	if len(leaf.Subject.Organization) != 1 || len(leaf.Subject.OrganizationalUnit) != 1 || leaf.Subject.CommonName == "" {
		return nil, fmt.Errorf("swarm node certificate: subject %q is not a swarm node's (O=cluster, OU=role, CN=node)", leaf.Subject)
	}
	id.Cluster, id.Role, id.Node = leaf.Subject.Organization[0], leaf.Subject.OrganizationalUnit[0], leaf.Subject.CommonName
	if id.Role != RoleManager && id.Role != RoleWorker {
		return nil, fmt.Errorf("swarm node certificate: role %q is neither %s nor %s", id.Role, RoleManager, RoleWorker)
	}
	// Our own certificate must pass the check we apply to peers, or no
	// peer will accept it either.
	if _, err := id.verify(append([]*x509.Certificate{leaf}, chainOf(cert)[1:]...), "", x509.ExtKeyUsageClientAuth); err != nil {
		return nil, fmt.Errorf("this node's own swarm certificate: %w", err)
	}
	return id, nil
}

func chainOf(c tls.Certificate) []*x509.Certificate {
	var out []*x509.Certificate
	for _, der := range c.Certificate {
		if x, err := x509.ParseCertificate(der); err == nil {
			out = append(out, x)
		}
	}
	return out
}

// verify checks a peer's chain (leaf first): signed by the swarm's root CA
// (through the intermediates it sent), valid now, for usage, in this
// cluster, with a swarm role (role, if not empty), naming a node.
func (id *Identity) verify(chain []*x509.Certificate, role string, usage x509.ExtKeyUsage) (Peer, error) {
	if len(chain) == 0 {
		return Peer{}, errors.New("no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	leaf := chain[0]
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: id.roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		return Peer{}, fmt.Errorf("certificate of %q does not verify against this swarm's CA: %w", leaf.Subject.CommonName, err)
	}
	s := leaf.Subject
	switch {
	case len(s.Organization) != 1 || s.Organization[0] != id.Cluster:
		return Peer{}, fmt.Errorf("certificate of %q is for cluster %q, not %q", s.CommonName, s.Organization, id.Cluster)
	case len(s.OrganizationalUnit) != 1 || (s.OrganizationalUnit[0] != RoleManager && s.OrganizationalUnit[0] != RoleWorker):
		return Peer{}, fmt.Errorf("certificate of %q has no swarm role (OU %q)", s.CommonName, s.OrganizationalUnit)
	case role != "" && s.OrganizationalUnit[0] != role:
		return Peer{}, fmt.Errorf("certificate of %q is a %s's, not a %s's", s.CommonName, s.OrganizationalUnit[0], role)
	case s.CommonName == "":
		return Peer{}, errors.New("certificate names no node")
	}
	return Peer{Node: s.CommonName, Role: s.OrganizationalUnit[0]}, nil
}

// peerOf names the peer of a chain the handshake verified.
func peerOf(chain []*x509.Certificate) Peer {
	s := chain[0].Subject
	return Peer{Node: s.CommonName, Role: s.OrganizationalUnit[0]}
}

// serverConfig is the TLS configuration the key service listens with:
// TLS 1.3, and a client certificate of this swarm required.
func (id *Identity) serverConfig() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{id.cert},
		ClientAuth:   tls.RequireAnyClientCert,
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := id.verify(cs.PeerCertificates, "", x509.ExtKeyUsageClientAuth)
			return err
		},
	}
}

// clientConfig is the TLS configuration a client dials a manager with:
// TLS 1.3, this node's certificate, and the server's checked to be a
// manager's of this swarm (swarm's certificates name nodes, not hosts, so
// there is no host name to check: the chain, cluster and role are).
func (id *Identity) clientConfig() *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{id.cert},
		ServerName:         RoleManager,
		InsecureSkipVerify: true, // replaced by VerifyConnection
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := id.verify(cs.PeerCertificates, RoleManager, x509.ExtKeyUsageServerAuth)
			return err
		},
	}
}

// identities follows the identity in a swarm directory: Current reads the
// files again when any of them changed (swarm replaces them by rename when
// it renews the node certificate or rotates the root CA, and removes and
// writes them when the node leaves or joins a swarm).
type identities struct {
	dir string

	// mu guards the fields below.
	mu    sync.Mutex
	stamp string
	cur   *Identity
	err   error
}

// Current returns the identity as the files hold it now.
func (c *identities) Current() (*Identity, error) {
	stamp := c.stampNow()
	c.mu.Lock()
	defer c.mu.Unlock()
	if stamp == c.stamp && (c.cur != nil || c.err != nil) {
		return c.cur, c.err
	}
	c.stamp = stamp
	c.cur, c.err = loadIdentity(c.dir)
	return c.cur, c.err
}

// stampNow sums up the files' sizes, times and inodes.
func (c *identities) stampNow() string {
	var b strings.Builder
	for _, f := range []string{nodeCert, nodeKey, rootCert} {
		st, err := os.Stat(filepath.Join(c.dir, certsSubdir, f))
		if err != nil {
			b.WriteString("-;")
			continue
		}
		fmt.Fprintf(&b, "%d.%d.%v;", st.Size(), st.ModTime().UnixNano(), inode(st))
	}
	return b.String()
}

func inode(st fs.FileInfo) uint64 {
	if s, ok := st.Sys().(*syscall.Stat_t); ok {
		return s.Ino
	}
	return 0
}
