package certs

import (
	"crypto/tls"
	"io"
	"testing"
	"time"
)

// TestMutualTLS: a sidecar certificate and the controller's client
// certificate complete an mTLS handshake under the CA, with the pod's
// identity as server name; a certificate from another CA is refused.
func TestMutualTLS(t *testing.T) {
	now := time.Now()
	ca, err := NewAuthority(now)
	if err != nil {
		t.Fatal(err)
	}
	id := SidecarIdentity("db", "pg-0")
	certPEM, keyPEM, err := ca.Issue(Leaf{CommonName: id, DNSNames: []string{id}, Server: true, Client: true}, now)
	if err != nil {
		t.Fatal(err)
	}
	serverPair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	server := &tls.Config{Certificates: []tls.Certificate{serverPair}, ClientCAs: ca.Pool(), ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13}
	l, err := tls.Listen("tcp", "127.0.0.1:0", server)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.WriteString(c, "ok"); c.Close() }()
		}
	}()
	dial := func(cfg *tls.Config) error {
		c, err := tls.Dial("tcp", l.Addr().String(), cfg)
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = io.ReadAll(c)
		return err
	}
	client, err := ca.ClientTLS(now)
	if err != nil {
		t.Fatal(err)
	}
	client.ServerName = id
	if err := dial(client); err != nil {
		t.Fatalf("mTLS with the controller's certificate: %v", err)
	}
	other, _ := NewAuthority(now)
	stranger, _ := other.ClientTLS(now)
	stranger.RootCAs = ca.Pool()
	stranger.ServerName = id
	if err := dial(stranger); err == nil {
		t.Fatal("a client certificate from another CA was accepted")
	}
	wrongName := client.Clone()
	wrongName.ServerName = SidecarIdentity("db", "pg-1")
	if err := dial(wrongName); err == nil {
		t.Fatal("pg-0's certificate was accepted for pg-1")
	}
}

func TestParseAuthorityRoundTrip(t *testing.T) {
	now := time.Now()
	ca, _ := NewAuthority(now)
	keyPEM, err := ca.keyPEM()
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseAuthority(ca.CertPEM(), keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, _, err := back.Issue(Leaf{CommonName: "x", DNSNames: []string{"x"}, Server: true}, now)
	if err != nil {
		t.Fatal(err)
	}
	if !ca.valid(certPEM, "x", now) {
		t.Fatal("a certificate issued by the reloaded CA does not verify under the original")
	}
	if ca.valid(certPEM, "x", now.Add(leafValidity)) {
		t.Fatal("a certificate within RenewBefore of expiry counts as valid")
	}
}
