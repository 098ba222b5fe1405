package sidecarclient_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/amber-backup/amber/conformance/testbed"
	"github.com/amber-backup/amber/controller/certs"
	"github.com/amber-backup/amber/controller/inject"
	"github.com/amber-backup/amber/controller/sidecarapi"
	"github.com/amber-backup/amber/controller/sidecarclient"
	"github.com/amber-backup/amber/plugins/api"
	"github.com/amber-backup/amber/sidecar/agent"
	"github.com/amber-backup/amber/sidecar/agent/agentpb"
	"github.com/amber-backup/amber/sidecar/pluginhost"
	"github.com/amber-backup/amber/sidecar/repo/repotest"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestControllerTalksToAgent: the controller's client, with certificates
// from the controller's own CA, drives a real agent (in-process, on a real
// PostgreSQL 15 with the real plugin): probe, backup, archiving on and off,
// status. A caller with another certificate of the same CA is refused: the
// sidecar accepts only the controller.
func TestControllerTalksToAgent(t *testing.T) {
	testbed.PostgresBin(t, "")
	root, err := testbed.Root()
	if err != nil {
		t.Fatal(err)
	}
	pluginDir := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(pluginDir, "amber-plugin-postgres"), "./plugins/postgres/cmd/amber-plugin-postgres")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build plugin: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	pg := testbed.StartPostgres(t, testbed.PostgresOptions{})
	r := repotest.New(t)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	host := pluginhost.New(pluginhost.Options{Dirs: []string{pluginDir}, Logger: log})
	defer host.Close()
	eng, err := host.Engine(ctx, "postgres")
	if err != nil {
		t.Fatal(err)
	}

	// The sidecar's certificate, as the controller issues it for pod db-0.
	now := time.Now()
	ca, err := certs.NewAuthority(now)
	if err != nil {
		t.Fatal(err)
	}
	identity := certs.SidecarIdentity("shop", "db-0")
	certPEM, keyPEM, err := ca.Issue(certs.Leaf{CommonName: identity, DNSNames: []string{identity}, Server: true, Client: true}, now)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files := agent.TLSFiles{Cert: filepath.Join(dir, "tls.crt"), Key: filepath.Join(dir, "tls.key"), CA: filepath.Join(dir, "ca.crt")}
	for p, b := range map[string][]byte{files.Cert: certPEM, files.Key: keyPEM, files.CA: ca.CertPEM()} {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	serverTLS, err := agent.ServerTLS(files, nil, []string{certs.ControllerClientName}, log)
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(agent.Config{EngineName: "postgres", Engine: eng, Repo: r, Target: api.Target{DSN: api.Secret(pg.DSN())},
		TLS: serverTLS, Listen: "127.0.0.1:0", Slot: "amber_ctl_test", FlushInterval: 500 * time.Millisecond,
		WindowInterval: time.Hour, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx) }()
	defer func() { stop(); <-done }()
	_, portStr, _ := net.SplitHostPort(a.Addr().String())
	port, _ := strconv.Atoi(portStr)

	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "db-0", Namespace: "shop",
		Annotations: map[string]string{inject.AnnotationIdentity: identity}}, Status: corev1.PodStatus{PodIP: "127.0.0.1"}}
	d := &sidecarclient.Dialer{TLS: sidecarclient.FromAuthority(ca, time.Now), Port: int32(port)}
	sc, err := d.Dial(ctx, pod)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()

	p, err := sc.Probe(ctx)
	if err != nil || !p.Healthy || p.Role != sidecarapi.RolePrimary || p.SystemID == "" || p.Archiving {
		t.Fatalf("probe = %+v, %v", p, err)
	}
	res, err := sc.Backup(ctx, sidecarapi.BackupRequest{Name: "shop/nightly-1", Mode: "physical", Tags: map[string]string{"policy": "nightly"}})
	if err != nil || res.ID == "" || res.Bytes == 0 {
		t.Fatalf("backup = %+v, %v", res, err)
	}
	m, err := r.FindBackup(ctx, res.ID, "")
	if err != nil || m.Mode != "physical" || m.Tags["policy"] != "nightly" {
		t.Fatalf("the backup the sidecar reported is not in the repository as asked: %+v, %v", m, err)
	}
	if err := sc.StartArchiving(ctx, sidecarapi.ArchiveRequest{}); err != nil {
		t.Fatal(err)
	}
	if st, err := sc.Status(ctx); err != nil || !st.Archiving {
		t.Fatalf("status after StartArchiving = %+v, %v", st, err)
	}
	if p, err := sc.Probe(ctx); err != nil || !p.Archiving {
		t.Fatalf("probe while archiving = %+v, %v", p, err)
	}
	if err := sc.StopArchiving(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err := sc.Status(ctx); err != nil || st.Archiving {
		t.Fatalf("status after StopArchiving = %+v, %v", st, err)
	}
	if p.ServerVersion == "" {
		t.Errorf("probe has no server version: %+v", p)
	}

	// Freeze, renew, thaw (snapshot mode): the thaw returns the backup
	// label and a consistent position at or after the freeze's.
	fr, err := sc.Freeze(ctx, sidecarapi.FreezeRequest{Lease: 30 * time.Second, Label: "amber shop/snap1"})
	if err != nil || fr.LeaseID == "" || fr.Position.Text == "" || fr.ExpiresAt.IsZero() {
		t.Fatalf("freeze = %+v, %v", fr, err)
	}
	if exp, err := sc.RenewLease(ctx, fr.LeaseID, time.Minute); err != nil || !exp.After(fr.ExpiresAt) {
		t.Fatalf("renew = %s, %v (was %s)", exp, err, fr.ExpiresAt)
	}
	th, err := sc.Thaw(ctx, fr.LeaseID)
	if err != nil || th.Consistent.Offset < fr.Position.Offset || th.Consistent.Text == "" || th.ConsistentTime.IsZero() {
		t.Fatalf("thaw = %+v, %v (frozen at %+v)", th, err, fr.Position)
	}
	if len(th.Files) == 0 || th.Files[0].Name != "backup_label" || !strings.Contains(string(th.Files[0].Content), "LABEL: amber shop/snap1") {
		t.Fatalf("thaw files %+v", th.Files)
	}
	// A lease nobody renews runs out: the thaw says so, as ErrLeaseExpired.
	fr, err = sc.Freeze(ctx, sidecarapi.FreezeRequest{Lease: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(2500 * time.Millisecond)
	if _, err := sc.Thaw(ctx, fr.LeaseID); !errors.Is(err, sidecarapi.ErrLeaseExpired) {
		t.Fatalf("thaw after the lease ran out: %v, want ErrLeaseExpired", err)
	}

	// Another holder of a certificate from the same CA (another pod's
	// sidecar) is not the controller: refused.
	otherPEM, otherKey, err := ca.Issue(certs.Leaf{CommonName: certs.SidecarIdentity("shop", "db-1"), Client: true}, now)
	if err != nil {
		t.Fatal(err)
	}
	op, ok := filepath.Join(dir, "o.crt"), filepath.Join(dir, "o.key")
	os.WriteFile(op, otherPEM, 0o600)
	os.WriteFile(ok, otherKey, 0o600)
	cfg, err := agentpb.ClientTLS(op, ok, files.CA, identity)
	if err != nil {
		t.Fatal(err)
	}
	c, err := agentpb.Dial(a.Addr().String(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Probe(ctx, &agentpb.ProbeRequest{}); err == nil {
		t.Fatal("a sidecar's certificate was accepted as a caller; only the controller may call")
	}

	// A pod whose identity does not match the certificate is refused by the
	// controller's side of the handshake.
	wrong := pod.DeepCopy()
	wrong.Annotations[inject.AnnotationIdentity] = certs.SidecarIdentity("shop", "db-9")
	if sc2, err := d.Dial(ctx, wrong); err == nil {
		if _, err := sc2.Probe(ctx); err == nil {
			t.Fatal("the controller accepted a sidecar certificate for another pod")
		}
		sc2.Close()
	}
}
