package pluginhost

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/amber-backup/amber/plugins/api"
	"github.com/amber-backup/amber/plugins/api/apitest"
)

// pluginDir holds the test plugin, built once: amber-plugin-fake speaks
// protocol 1, amber-plugin-future (the same binary) only protocol 99.
var pluginDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "pluginhost-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fake := filepath.Join(dir, "amber-plugin-fake")
	cmd := exec.Command("go", "build", "-o", fake, "github.com/amber-backup/amber/plugins/api/internal/testplugin")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build test plugin:", err)
		os.Exit(1)
	}
	if err := os.Link(fake, filepath.Join(dir, "amber-plugin-future")); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pluginDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// logRecorder is a slog.Handler keeping records for assertions.
type logRecorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records = append(r.records, rec.Clone())
	return nil
}
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *logRecorder) WithGroup(string) slog.Handler      { return r }

// find returns the attributes of the first record with message msg.
func (r *logRecorder) find(msg string) (map[string]string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rec := range r.records {
		if rec.Message == msg {
			attrs := map[string]string{"@level": rec.Level.String()}
			rec.Attrs(func(a slog.Attr) bool {
				attrs[a.Key] = a.Value.String()
				return true
			})
			return attrs, true
		}
	}
	return nil, false
}

func newHost(t *testing.T) (*Host, *logRecorder) {
	t.Helper()
	rec := &logRecorder{}
	h := New(Options{Dirs: []string{pluginDir}, Logger: slog.New(rec)})
	t.Cleanup(func() { h.Close() })
	return h, rec
}

// hashSink hashes every entry it receives.
type hashSink struct {
	sums  map[string]string
	sizes map[string]int64
}

func (s *hashSink) Entry(_ context.Context, e api.Entry, r io.Reader) error {
	h := sha256.New()
	n, err := io.Copy(h, r)
	if err != nil {
		return err
	}
	s.sums[e.Name], s.sizes[e.Name] = hex.EncodeToString(h.Sum(nil)), n
	return nil
}

func (s *hashSink) Create(context.Context, api.Entry) (io.WriteCloser, error) {
	return nil, errors.New("not used")
}

func TestInfoAndLogRelay(t *testing.T) {
	h, rec := newHost(t)
	ctx := context.Background()
	p, err := h.Engine(ctx, "fake")
	if err != nil {
		t.Fatal(err)
	}
	info, err := p.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Engine != "fake" || !info.Has(api.Archive) {
		t.Fatalf("info = %+v", info)
	}
	// The plugin process got the host's pipe socket: entries travel
	// through pipes both ways (api.Pipes).
	if !info.ReadsPipes {
		t.Fatal("the plugin did not get the host's pipe socket")
	}
	if _, err := p.Probe(ctx, api.Target{DataDir: "/srv/fake"}); err != nil {
		t.Fatal(err)
	}
	// The plugin logged "probing" as JSON on its stderr; it must arrive as
	// an slog record naming the plugin, with its fields.
	var attrs map[string]string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		var ok bool
		if attrs, ok = rec.find("probing"); ok {
			break
		}
	}
	if attrs == nil {
		t.Fatal(`plugin log "probing" not relayed`)
	}
	if attrs["plugin"] != "amber-plugin-fake" || attrs["data_dir"] != "/srv/fake" || attrs["@level"] != "INFO" {
		t.Fatalf("relayed record attrs = %v", attrs)
	}
}

// TestLargeDumpBoundedMemory streams 512 MiB from the plugin process and
// checks the bytes and that the host's heap stays bounded.
func TestLargeDumpBoundedMemory(t *testing.T) {
	size := int64(512 << 20)
	if testing.Short() {
		size = 64 << 20
	}
	h, _ := newHost(t)
	ctx := context.Background()
	p, err := h.Engine(ctx, "fake")
	if err != nil {
		t.Fatal(err)
	}
	want := apitest.PatternSum(11, size)

	runtime.GC()
	var peak uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	sink := &hashSink{sums: map[string]string{}, sizes: map[string]int64{}}
	start := time.Now()
	res, err := p.LogicalDump(ctx, api.BackupRequest{Options: map[string]string{"size": fmt.Sprint(size), "seed": "11"}}, sink)
	close(stop)
	<-sampled
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d MiB in %v, host heap in use peaked at %.1f MiB", size>>20, time.Since(start).Round(time.Millisecond), float64(peak)/(1<<20))
	if sink.sizes["entry-0"] != size || sink.sums["entry-0"] != want {
		t.Fatalf("received %d bytes with sum %s, want %d bytes with sum %s", sink.sizes["entry-0"], sink.sums["entry-0"], size, want)
	}
	if res.ConsistentTime.IsZero() || res.Consistent.IsZero() {
		t.Fatalf("result lacks the consistent position or time: %+v", res)
	}
	if peak > 64<<20 {
		t.Fatalf("host heap in use peaked at %d MiB streaming %d MiB; want < 64 MiB", peak>>20, size>>20)
	}
}

func TestPanicInPluginIsReported(t *testing.T) {
	h, _ := newHost(t)
	ctx := context.Background()
	p, err := h.Engine(ctx, "fake")
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Probe(ctx, api.Target{Settings: map[string]string{"panic": "the disk is made of cheese"}})
	if err == nil || !strings.Contains(err.Error(), "the disk is made of cheese") || !strings.Contains(err.Error(), "panicked") {
		t.Fatalf("err = %v", err)
	}
	_, err = p.LogicalDump(ctx, api.BackupRequest{Options: map[string]string{"size": "5000000", "panic": "mid-stream cheese"}},
		&hashSink{sums: map[string]string{}, sizes: map[string]int64{}})
	if err == nil || !strings.Contains(err.Error(), "mid-stream cheese") {
		t.Fatalf("err = %v", err)
	}
	// The same process still answers.
	pid := h.pid("fake")
	if _, err := p.Probe(ctx, api.Target{}); err != nil {
		t.Fatal(err)
	}
	if h.pid("fake") != pid {
		t.Fatal("a recovered panic restarted the plugin")
	}
}

func TestKilledPluginIsRestarted(t *testing.T) {
	h, _ := newHost(t)
	ctx := context.Background()
	p, err := h.Engine(ctx, "fake")
	if err != nil {
		t.Fatal(err)
	}
	pid := h.pid("fake")
	if pid == 0 {
		t.Fatal("no plugin pid")
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Wait until go-plugin has seen the process exit.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		h.mu.Lock()
		exited := h.running["fake"].client.Exited()
		h.mu.Unlock()
		if exited {
			break
		}
	}
	pr, err := p.Probe(ctx, api.Target{})
	if err != nil {
		t.Fatalf("call after SIGKILL: %v", err)
	}
	if pr.ServerVersion != "fake 1.0" {
		t.Fatalf("probe = %+v", pr)
	}
	if np := h.pid("fake"); np == 0 || np == pid {
		t.Fatalf("plugin not relaunched: pid %d, was %d", np, pid)
	}
}

func TestKilledDuringStreamReportsExit(t *testing.T) {
	h, _ := newHost(t)
	ctx := context.Background()
	p, err := h.Engine(ctx, "fake")
	if err != nil {
		t.Fatal(err)
	}
	pid := h.pid("fake")
	sink := &killingSink{pid: pid}
	_, err = p.LogicalDump(ctx, api.BackupRequest{Options: map[string]string{"size": fmt.Sprint(256 << 20)}}, sink)
	if err == nil || !strings.Contains(err.Error(), "amber-plugin-fake exited during logical dump") {
		t.Fatalf("err = %v", err)
	}
	if _, err := p.Info(ctx); err != nil {
		t.Fatalf("call after crash: %v", err)
	}
}

// killingSink kills the plugin once the first MiBs have arrived.
type killingSink struct{ pid int }

func (s *killingSink) Entry(_ context.Context, _ api.Entry, r io.Reader) error {
	if _, err := io.CopyN(io.Discard, r, 8<<20); err != nil {
		return err
	}
	_ = syscall.Kill(s.pid, syscall.SIGKILL)
	_, err := io.Copy(io.Discard, r)
	return err
}

func (s *killingSink) Create(context.Context, api.Entry) (io.WriteCloser, error) {
	return nil, errors.New("not used")
}

func TestUnknownProtocolVersion(t *testing.T) {
	h, _ := newHost(t)
	_, err := h.Engine(context.Background(), "future")
	if err == nil {
		t.Fatal("plugin speaking only protocol 99 accepted")
	}
	for _, want := range []string{"amber-plugin-future", "no protocol version this amber knows", "99"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

func TestUnknownEngine(t *testing.T) {
	h, _ := newHost(t)
	_, err := h.Engine(context.Background(), "oracle")
	if err == nil {
		t.Fatal("unknown engine accepted")
	}
	for _, want := range []string{`unknown engine "oracle"`, pluginDir, "engines found: fake, future", EnvPluginDir} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if _, err := h.Engine(context.Background(), "../fake"); err == nil || !strings.Contains(err.Error(), "unknown engine") {
		t.Errorf("path in engine name: err = %v", err)
	}
}

func TestDefaultDirsUseEnv(t *testing.T) {
	t.Setenv(EnvPluginDir, pluginDir)
	h := New(Options{})
	defer h.Close()
	if p, err := h.Find("fake"); err != nil || p != filepath.Join(pluginDir, "amber-plugin-fake") {
		t.Fatalf("Find = %q, %v", p, err)
	}
	exe, _ := os.Executable()
	if !slicesContains(h.dirs, filepath.Dir(exe)) && !slicesContainsEval(h.dirs, exe) {
		t.Fatalf("dirs %v lack the executable's directory", h.dirs)
	}
}

func slicesContains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func slicesContainsEval(s []string, exe string) bool {
	real, err := filepath.EvalSymlinks(exe)
	return err == nil && slicesContains(s, filepath.Dir(real))
}

func TestUnsupportedCapabilityNamesEngine(t *testing.T) {
	h, _ := newHost(t)
	p, err := h.Engine(context.Background(), "fake")
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.PhysicalRestore(context.Background(), api.RestoreRequest{}, emptySource{})
	if !errors.Is(err, api.ErrUnsupported) || !strings.Contains(err.Error(), "engine fake does not support physical_restore") {
		t.Fatalf("err = %v", err)
	}
}

type emptySource struct{}

func (emptySource) Next(context.Context) (api.Entry, io.Reader, error) {
	return api.Entry{Name: "x"}, bytes.NewReader(nil), nil
}

func TestCloseKillsPlugins(t *testing.T) {
	h, _ := newHost(t)
	if _, err := h.Engine(context.Background(), "fake"); err != nil {
		t.Fatal(err)
	}
	pid := h.pid("fake")
	h.Close()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if syscall.Kill(pid, 0) != nil {
			return
		}
	}
	t.Fatalf("plugin %d still running after Close", pid)
}
