package agent

import (
	"crypto/tls"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/amber-backup/amber/conformance/testbed"
	"github.com/amber-backup/amber/plugins/api/clock"
)

// handshake connects with cfg to a TLS listener serving srv and reports
// the error the client sees, alert included.
func handshake(t *testing.T, srv, cfg *tls.Config) error {
	t.Helper()
	l, err := tls.Listen("tcp", "127.0.0.1:0", srv)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		if c.(*tls.Conn).Handshake() == nil {
			c.Write([]byte("x"))
		}
	}()
	c, err := tls.Dial("tcp", l.Addr().String(), cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = c.Read(make([]byte, 1))
	return err
}

// TestServerTLSReloadsRotatedFiles: a new CA written over the old one
// applies to the next connection, without a restart.
func TestServerTLSReloadsRotatedFiles(t *testing.T) {
	pk := newPKI(t)
	srv, err := ServerTLS(pk.files, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := handshake(t, srv, pk.client(pk.good)); err != nil {
		t.Fatalf("valid client: %v", err)
	}
	// Rotate the client CA: the controller's old certificate is refused now.
	next := newCA(t, "next CA")
	if err := os.WriteFile(pk.files.CA, next.pem, 0o600); err != nil {
		t.Fatal(err)
	}
	future := time.Now().Add(time.Second) // a new modification time even on coarse clocks
	os.Chtimes(pk.files.CA, future, future)
	if err := handshake(t, srv, pk.client(pk.good)); err == nil || !strings.Contains(err.Error(), "unknown certificate authority") {
		t.Fatalf("old client after CA rotation: %v, want refused", err)
	}
	if err := handshake(t, srv, pk.client(func() tls.Certificate {
		c, k := next.valid(t, "amber-controller", false)
		kp, _ := tls.X509KeyPair(c, k)
		return kp
	}())); err != nil {
		t.Fatalf("client of the new CA: %v", err)
	}
}

// TestServerTLSAllowedClients: with allowed names, a certificate the CA
// signed for another name is refused at the handshake.
func TestServerTLSAllowedClients(t *testing.T) {
	pk := newPKI(t)
	srv, err := ServerTLS(pk.files, nil, []string{"amber-controller"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := handshake(t, srv, pk.client(pk.good)); err != nil {
		t.Fatalf("allowed client: %v", err)
	}
	srv, _ = ServerTLS(pk.files, nil, []string{"someone-else"}, nil)
	if err := handshake(t, srv, pk.client(pk.good)); err == nil {
		t.Fatal("a client with a name not allowed was accepted")
	}
	if _, err := ServerTLS(TLSFiles{Cert: pk.files.Cert, Key: pk.files.Key}, nil, nil, nil); err == nil {
		t.Fatal("ServerTLS without a CA file: want an error, the API never serves without mutual TLS")
	}
}

// TestAgentpbIsALeaf: the controller imports agentpb alone, so it must
// import nothing of Amber's.
func TestAgentpbIsALeaf(t *testing.T) {
	root, err := testbed.Root()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "list", "-deps", "./sidecar/agent/agentpb")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "github.com/amber-backup/amber/") && pkg != "github.com/amber-backup/amber/sidecar/agent/agentpb" {
			t.Errorf("agentpb imports %s", pkg)
		}
	}
}

// TestServerTLSJudgesValidityByTheClock: certificate expiry is read on the
// agent's clock, so tests (and a clock-skew drill) move it by hand.
func TestServerTLSJudgesValidityByTheClock(t *testing.T) {
	pk := newPKI(t)
	clk := clock.NewFake(time.Now())
	srv, err := ServerTLS(pk.files, clk, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := handshake(t, srv, pk.client(pk.good)); err != nil {
		t.Fatalf("valid client: %v", err)
	}
	clk.Advance(48 * time.Hour) // past the client certificate's NotAfter
	if err := handshake(t, srv, pk.client(pk.good)); err == nil || !strings.Contains(err.Error(), "expired certificate") {
		t.Fatalf("client two days later: %v, want refused as expired", err)
	}
}
