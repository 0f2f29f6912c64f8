package keyservice

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// testCA is a swarm-like CA for tests: a self-signed root "swarm-ca" that
// issues node certificates as swarm does (O = cluster, OU = role, CN =
// node; DNS names role and node; server and client usages).
type testCA struct {
	key  *ecdsa.PrivateKey
	cert *x509.Certificate
	pem  []byte
}

var serial int64

func newCA(t testing.TB) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial++
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial),
		Subject:               pkix.Name{CommonName: "swarm-ca"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{key: key, cert: cert, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// certOpts change a node certificate from what swarm issues.
type certOpts struct {
	notAfter time.Time
	usages   []x509.ExtKeyUsage
	noOU     bool
}

// issue returns a node certificate and its key, PEM, as swarm writes them
// (the key in PKCS#8 with swarm's headers).
func (ca *testCA) issue(t testing.TB, cluster, role, node string, o certOpts) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial++
	subj := pkix.Name{Organization: []string{cluster}, OrganizationalUnit: []string{role}, CommonName: node}
	if o.noOU {
		subj.OrganizationalUnit = nil
	}
	if o.notAfter.IsZero() {
		o.notAfter = time.Now().Add(12 * time.Hour)
	}
	if o.usages == nil {
		o.usages = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      subj,
		DNSNames:     []string{role, node},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     o.notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  o.usages,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Headers: map[string]string{"kek-version": "0"}, Bytes: kder})
}

// node writes a swarm directory for one node and returns it.
func (ca *testCA) node(t testing.TB, cluster, role, node string, o certOpts) string {
	t.Helper()
	dir := t.TempDir()
	ca.write(t, dir, cluster, role, node, o)
	return dir
}

// write (re)writes the node's files in the swarm directory dir, by
// rename as swarm does.
func (ca *testCA) write(t testing.TB, dir, cluster, role, node string, o certOpts) {
	t.Helper()
	certPEM, keyPEM := ca.issue(t, cluster, role, node, o)
	cd := filepath.Join(dir, certsSubdir)
	if err := os.MkdirAll(cd, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{nodeCert: certPEM, nodeKey: keyPEM, rootCert: ca.pem} {
		tmp := filepath.Join(cd, "."+name)
		if err := os.WriteFile(tmp, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(cd, name)); err != nil {
			t.Fatal(err)
		}
	}
}
