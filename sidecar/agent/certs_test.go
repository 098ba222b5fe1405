package agent

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// testCA is a throwaway certificate authority.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

var serial int64 = 1

func newCA(t testing.TB, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial++
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue signs a certificate for name, valid from notBefore to notAfter,
// for a server (with 127.0.0.1 and localhost) or a client.
func (ca *testCA) issue(t testing.TB, name string, server bool, notBefore, notAfter time.Time) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial++
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
		NotBefore: notBefore, NotAfter: notAfter, KeyUsage: x509.KeyUsageDigitalSignature}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.DNSNames = []string{"localhost"}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
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
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

func (ca *testCA) valid(t testing.TB, name string, server bool) (certPEM, keyPEM []byte) {
	return ca.issue(t, name, server, time.Now().Add(-time.Hour), time.Now().Add(12*time.Hour))
}

// pki is what one agent test needs: the agent's files, and client
// configurations of every kind.
type pki struct {
	files                   TLSFiles
	roots                   *x509.CertPool // verifies the agent's certificate
	good, other, expired    tls.Certificate
	goodPEM, goodKey, caPEM []byte
}

func newPKI(t testing.TB) *pki {
	t.Helper()
	ca, other := newCA(t, "amber test CA"), newCA(t, "some other CA")
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	sc, sk := ca.valid(t, "agent", true)
	p := &pki{files: TLSFiles{Cert: write("tls.crt", sc), Key: write("tls.key", sk), CA: write("ca.crt", ca.pem)},
		roots: x509.NewCertPool(), caPEM: ca.pem}
	p.roots.AddCert(ca.cert)
	pair := func(c, k []byte) tls.Certificate {
		kp, err := tls.X509KeyPair(c, k)
		if err != nil {
			t.Fatal(err)
		}
		return kp
	}
	p.goodPEM, p.goodKey = ca.valid(t, "amber-controller", false)
	p.good = pair(p.goodPEM, p.goodKey)
	p.other = pair(other.valid(t, "amber-controller", false))
	p.expired = pair(ca.issue(t, "amber-controller", false, time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour)))
	return p
}

// client is a TLS configuration presenting cert (none when nil), whether
// or not it chains to a CA the agent names in its certificate request (a
// Go client would otherwise keep a foreign certificate to itself).
func (p *pki) client(cert ...tls.Certificate) *tls.Config {
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: p.roots, ServerName: "127.0.0.1"}
	if len(cert) > 0 {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert[0], nil }
	}
	return cfg
}
