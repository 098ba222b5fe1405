package agent

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/amber-backup/amber/conformance/testbed"
	"github.com/amber-backup/amber/sidecar/agent/agentpb"
)

// idleRSSBudget is what `amber sidecar` may hold resident while idle with
// its plugin loaded (the plugin process is measured and reported apart).
const idleRSSBudget = 40 << 20

// procStatus reads a "Name: value kB" field of /proc/<pid>/status in bytes.
func procStatus(t *testing.T, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("%s %q: %v", field, line, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// childOf finds the one process whose parent is pid.
func childOf(t *testing.T, pid int) int {
	t.Helper()
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		if err == nil && strings.Contains(string(b), fmt.Sprintf("\nPPid:\t%d\n", pid)) {
			return child
		}
	}
	t.Fatalf("process %d has no child (the plugin)", pid)
	return 0
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// TestSidecarProcess runs `amber sidecar` as the pod would, configured
// through the environment and mounted files, measures its idle memory,
// and stops it with SIGTERM.
func TestSidecarProcess(t *testing.T) {
	testbed.PostgresBin(t, "")
	root, err := testbed.Root()
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	for pkg, out := range map[string]string{"./sidecar/cmd/amber": "amber", "./plugins/postgres/cmd/amber-plugin-postgres": "amber-plugin-postgres"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(bin, out), pkg) // the shipped build: real key derivation
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", pkg, err, b)
		}
	}
	pg := testbed.StartPostgres(t, testbed.PostgresOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	repoDir := filepath.Join(t.TempDir(), "repo")
	newRepo(t, ctx, repoDir)

	pk := newPKI(t)
	files := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(files, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	dsn := pg.DSN()
	u, _ := url.Parse(dsn)
	dbPassword, _ := u.User.Password()
	api, metrics := fmt.Sprintf("127.0.0.1:%d", testbed.FreePort(t)), fmt.Sprintf("127.0.0.1:%d", testbed.FreePort(t))
	cmd := exec.Command(filepath.Join(bin, "amber"), "sidecar")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(),
		"AMBER_ENGINE=postgres", "AMBER_DSN_FILE=" + write("dsn", dsn+"\n"),
		"AMBER_REPO=" + repoDir, "AMBER_PASSWORD_FILE=" + write("password", testPassword+"\n"), "AMBER_CACHE_DIR=" + t.TempDir(),
		"AMBER_TLS_CERT=" + pk.files.Cert, "AMBER_TLS_KEY=" + pk.files.Key, "AMBER_TLS_CA=" + pk.files.CA,
		"AMBER_LISTEN=" + api, "AMBER_METRICS_LISTEN=" + metrics, "AMBER_POD_NAME=db-0", "AMBER_POD_NAMESPACE=shop"}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var exitErr error
	exited := make(chan struct{})
	go func() { exitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	waitFor(t, "/readyz", time.Minute, func() bool {
		select {
		case <-exited:
			t.Fatalf("amber sidecar exited: %v\n%s", exitErr, stderr.String())
		default:
		}
		code, _ := getQuiet("http://" + metrics + "/readyz")
		return code == 200
	})
	c, err := agentpb.Dial(api, pk.client(pk.good))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pr, err := c.Probe(ctx, &agentpb.ProbeRequest{})
	if err != nil || !pr.Healthy {
		t.Fatalf("probe = %v, %v", pr, err)
	}
	if _, err := c.Status(ctx, &agentpb.StatusRequest{}); err != nil {
		t.Fatal(err)
	}

	// Idle: the plugin is loaded, nothing runs. Let the memory settle.
	pid, plugin := cmd.Process.Pid, childOf(t, cmd.Process.Pid)
	time.Sleep(10 * time.Second)
	rss, hwm := procStatus(t, pid, "VmRSS"), procStatus(t, pid, "VmHWM")
	prss := procStatus(t, plugin, "VmRSS")
	t.Logf("idle RSS of amber sidecar: %s (peak %s, budget %s); plugin process: %s", mib(rss), mib(hwm), mib(idleRSSBudget), mib(prss))
	if rss > idleRSSBudget {
		t.Errorf("amber sidecar holds %s resident while idle; the budget is %s", mib(rss), mib(idleRSSBudget))
	}

	// The connection string reaches neither the plugin's environment nor the logs.
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", plugin))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(env, []byte(dbPassword)) || bytes.Contains(env, []byte("AMBER_DSN")) {
		t.Fatal("the plugin's environment holds the connection string")
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		if exitErr != nil {
			t.Fatalf("amber sidecar after SIGTERM: %v (want exit 0)\n%s", exitErr, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("amber sidecar did not exit within 30 s of SIGTERM\n%s", stderr.String())
	}
	logs := stderr.String()
	if !strings.Contains(logs, `"msg":"agent stopped"`) || !strings.Contains(logs, `"pod":"db-0"`) || !strings.Contains(logs, `"namespace":"shop"`) {
		t.Fatalf("logs lack the shutdown or the pod:\n%s", logs)
	}
	if strings.Contains(logs, dbPassword) || strings.Contains(logs, testPassword) {
		t.Fatal("a password reached the logs")
	}
}
