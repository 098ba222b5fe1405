package agent

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amber-backup/amber/conformance/testbed"
	"github.com/amber-backup/amber/plugins/api"
	"github.com/amber-backup/amber/sidecar/agent/agentpb"
	"github.com/amber-backup/amber/sidecar/job"
	"github.com/amber-backup/amber/sidecar/pluginhost"
	"github.com/amber-backup/amber/sidecar/repo"
	"github.com/amber-backup/amber/sidecar/repo/repotest"
	"github.com/amber-backup/amber/sidecar/storage/file"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// buildPlugin builds amber-plugin-postgres into a fresh directory.
func buildPlugin(t *testing.T) string {
	t.Helper()
	testbed.PostgresBin(t, "")
	root, err := testbed.Root()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "amber-plugin-postgres"), "./plugins/postgres/cmd/amber-plugin-postgres")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build plugin: %v\n%s", err, out)
	}
	return dir
}

const testPassword = "agent-test-password"

// newRepo makes a file repository with the real key derivation (what a
// real repository costs to open).
func newRepo(t *testing.T, ctx context.Context, dir string) *repo.Repository {
	t.Helper()
	be, err := file.Open(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Init(ctx, be, []byte(testPassword), repo.Options{CacheDir: "-"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// countingEngine is the real plugin, counting the calls that reach it; the
// first physical backup waits for gate, so a test can call while it runs.
type countingEngine struct {
	*pluginhost.Plugin
	probes, freezes atomic.Int64
	gate            chan struct{}
	began           chan struct{}
	once            sync.Once
}

func (c *countingEngine) Probe(ctx context.Context, t api.Target) (api.Probe, error) {
	c.probes.Add(1)
	return c.Plugin.Probe(ctx, t)
}

func (c *countingEngine) Freeze(ctx context.Context, req api.FreezeRequest) (api.Frozen, error) {
	c.freezes.Add(1)
	return c.Plugin.Freeze(ctx, req)
}

func (c *countingEngine) PhysicalBackup(ctx context.Context, req api.BackupRequest, sink api.EntrySink) (api.BackupResult, error) {
	c.once.Do(func() { close(c.began) })
	select {
	case <-c.gate:
	case <-ctx.Done():
		return api.BackupResult{}, ctx.Err()
	}
	return c.Plugin.PhysicalBackup(ctx, req, sink)
}

// scrape reads /metrics into "name{labels}" -> value.
func scrape(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	code, body := getQuiet(url)
	if code == 0 {
		t.Fatalf("GET %s: %s", url, body)
	}
	return code, body
}

// getQuiet returns 0 and the error when the request fails.
func getQuiet(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func waitFor(t *testing.T, what string, timeout time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// otherSessions counts SQL sessions other than the one asking: while
// frozen, the plugin holds one (in pg_backup_start); nothing else does.
const otherSessions = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"

// lsnOf parses PostgreSQL's "X/Y" LSN, the offset of its positions.
func lsnOf(t *testing.T, s string) uint64 {
	t.Helper()
	hi, lo, ok := strings.Cut(s, "/")
	h, err1 := strconv.ParseUint(hi, 16, 32)
	l, err2 := strconv.ParseUint(lo, 16, 32)
	if !ok || err1 != nil || err2 != nil {
		t.Fatalf("LSN %q", s)
	}
	return h<<32 | l
}

func code(err error) codes.Code { return status.Code(err) }

// TestAgentWithPostgres runs the agent in-process against a real
// PostgreSQL 15, the real plugin and a file repository, and calls it as the
// controller would.
func TestAgentWithPostgres(t *testing.T) {
	pluginDir := buildPlugin(t)
	pg := testbed.StartPostgres(t, testbed.PostgresOptions{})
	ctx, cancelAll := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancelAll()
	r := repotest.New(t)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	host := pluginhost.New(pluginhost.Options{Dirs: []string{pluginDir}, Logger: log})
	t.Cleanup(func() { host.Close() })
	p, err := host.Engine(ctx, "postgres")
	if err != nil {
		t.Fatal(err)
	}
	eng := &countingEngine{Plugin: p, gate: make(chan struct{}), began: make(chan struct{})}
	pk := newPKI(t)
	tlsCfg, err := ServerTLS(pk.files, nil, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{EngineName: "postgres", Engine: eng, Repo: r, Target: api.Target{DSN: api.Secret(pg.DSN())},
		Tags: map[string]string{"pod": "db-0"}, TLS: tlsCfg, Listen: "127.0.0.1:0", MetricsListen: "127.0.0.1:0",
		Slot: "amber_agent_test", FlushInterval: 500 * time.Millisecond, WindowInterval: time.Hour, Logger: log, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stopAgent := context.WithCancel(ctx)
	var runErr error
	stopped := make(chan struct{})
	go func() { runErr = a.Run(runCtx); close(stopped) }()
	t.Cleanup(func() {
		stopAgent()
		select {
		case <-stopped:
		case <-time.After(time.Minute):
		}
	})
	addr, maddr := a.Addr().String(), a.MetricsAddr().String()
	pg.Psql(t, "postgres", "CREATE TABLE before_backup AS SELECT g FROM generate_series(1, 1000) g")

	t.Run("refused at the handshake", func(t *testing.T) {
		tls12 := pk.client(pk.good)
		tls12.MinVersion, tls12.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
		for _, tc := range []struct {
			name string
			cfg  *tls.Config
			want string // the TLS alert the agent sends
		}{
			{"no client certificate", pk.client(), "certificate required"},
			{"certificate from another CA", pk.client(pk.other), "unknown certificate authority"},
			{"expired certificate", pk.client(pk.expired), "expired certificate"},
			{"TLS 1.2", tls12, "protocol version"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				// The bare handshake: the agent answers with an alert.
				conn, err := tls.Dial("tcp", addr, tc.cfg)
				if err == nil {
					conn.SetReadDeadline(time.Now().Add(10 * time.Second))
					_, err = conn.Read(make([]byte, 1))
					conn.Close()
				}
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("TLS connection: err = %v, want an alert %q", err, tc.want)
				}
				if tc.cfg.MaxVersion == tls.VersionTLS12 {
					return
				}
				// A gRPC call never reaches a handler.
				c, err := agentpb.Dial(addr, tc.cfg)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				_, err = c.Probe(cctx, &agentpb.ProbeRequest{})
				if code(err) != codes.Unavailable {
					t.Fatalf("Probe: err = %v, want UNAVAILABLE (refused handshake)", err)
				}
				t.Logf("refused: %v", err)
			})
		}
		if n := a.calls.Load(); n != 0 {
			t.Fatalf("refused callers reached %d handlers; want none", n)
		}
	})

	c, err := agentpb.Dial(addr, pk.client(pk.good))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	var systemID string
	t.Run("probe", func(t *testing.T) {
		probes := eng.probes.Load()
		pr, err := c.Probe(ctx, &agentpb.ProbeRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if pr.Engine != "postgres" || pr.Role != agentpb.Role_ROLE_PRIMARY || !pr.Healthy || pr.SystemId == "" ||
			!strings.HasPrefix(pr.ServerVersion, "PostgreSQL 15") || pr.PluginVersion == "" || pr.Position == nil || pr.Position.Epoch != 1 {
			t.Fatalf("probe = %v", pr)
		}
		if a.calls.Load() != 1 || eng.probes.Load() <= probes {
			t.Fatalf("calls = %d, plugin probes %d -> %d; want one call that probes", a.calls.Load(), probes, eng.probes.Load())
		}
		systemID = pr.SystemId
	})
	stream := "postgres-" + systemID

	t.Run("start archiving", func(t *testing.T) {
		res, err := c.StartArchiving(ctx, &agentpb.StartArchivingRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if res.AlreadyRunning || !res.Archive.Running || res.Archive.Stream != stream {
			t.Fatalf("start = %v, want a new run into %s", res, stream)
		}
		again, err := c.StartArchiving(ctx, &agentpb.StartArchivingRequest{})
		if err != nil || !again.AlreadyRunning || again.Archive.Stream != stream {
			t.Fatalf("second start = %v, %v; want already running", again, err)
		}
	})

	var backup *agentpb.BackupResult
	t.Run("backup", func(t *testing.T) {
		var progress []*agentpb.Progress
		done := make(chan error, 1)
		go func() {
			var err error
			backup, err = c.RunBackup(ctx, &agentpb.BackupRequest{Name: "orders", Tags: map[string]string{"policy": "nightly"},
				ProgressInterval: durationpb.New(100 * time.Millisecond)}, func(p *agentpb.Progress) { progress = append(progress, p) })
			done <- err
		}()
		<-eng.began
		// A second backup while the first runs is refused.
		s2, err := c.Backup(ctx, &agentpb.BackupRequest{})
		if err == nil {
			_, err = s2.Recv()
		}
		if code(err) != codes.FailedPrecondition {
			t.Fatalf("second backup: err = %v, want FAILED_PRECONDITION", err)
		}
		st, err := c.Status(ctx, &agentpb.StatusRequest{})
		if err != nil || st.BackupRunning == nil || st.BackupRunning.Name != "orders" || st.BackupRunning.Mode != "physical" {
			t.Fatalf("status while backing up = %v, %v", st, err)
		}
		time.Sleep(400 * time.Millisecond)
		close(eng.gate)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if len(progress) < 2 || progress[len(progress)-1].Elapsed.AsDuration() <= 0 || progress[len(progress)-1].BytesIn > backup.BytesIn {
			t.Fatalf("progress = %v", progress)
		}
		if len(backup.Id) != 64 || !strings.HasPrefix(backup.Id, backup.ShortId) || backup.Name != "orders" || backup.Mode != "physical" ||
			backup.BytesIn < 1<<20 || backup.BytesAdded <= 0 || backup.Duration.AsDuration() < 400*time.Millisecond ||
			backup.Consistent == nil || backup.ConsistentTime == nil || !backup.FinishedAt.AsTime().After(backup.StartedAt.AsTime()) {
			t.Fatalf("backup result = %v", backup)
		}
		t.Logf("backup %s: %d bytes in, %d added, %s, %d progress messages", backup.ShortId, backup.BytesIn, backup.BytesAdded,
			backup.Duration.AsDuration(), len(progress))
		// It lists in the repository, with the agent's and the caller's tags.
		all, err := r.Backups(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var m *repo.Manifest
		for _, x := range all {
			if x.ID.String() == backup.Id {
				m = x
			}
		}
		if m == nil || m.Engine != "postgres" || m.Mode != job.ModePhysical || m.Name != "orders" || m.Tags["pod"] != "db-0" ||
			m.Tags["policy"] != "nightly" || m.Record == nil || m.Record.SystemID != systemID {
			t.Fatalf("backup %s in the repository: %+v", backup.Id, m)
		}
	})
	if backup == nil {
		t.Fatal("no backup")
	}

	pg.Psql(t, "postgres", "CREATE TABLE after_backup (id int, at timestamptz)")
	markerTime := time.Now()
	pg.Psql(t, "postgres", "INSERT INTO after_backup SELECT g, now() FROM generate_series(1, 100) g")
	markerLSN := lsnOf(t, pg.Psql(t, "postgres", "SELECT pg_current_wal_lsn()"))

	t.Run("freeze and thaw", func(t *testing.T) {
		fr, err := c.Freeze(ctx, &agentpb.FreezeRequest{Lease: durationpb.New(30 * time.Second), Label: "snapshot"})
		if err != nil {
			t.Fatal(err)
		}
		if fr.LeaseId == "" || !fr.ExpiresAt.AsTime().After(time.Now().Add(20*time.Second)) || fr.Position == nil {
			t.Fatalf("freeze = %v", fr)
		}
		st, _ := c.Status(ctx, &agentpb.StatusRequest{})
		if len(st.Leases) != 1 || st.Leases[0].LeaseId != fr.LeaseId || st.Leases[0].Label != "snapshot" {
			t.Fatalf("status leases = %v", st.Leases)
		}
		if n := pg.Psql(t, "postgres", otherSessions); n == "0" {
			t.Fatal("no session holds the freeze")
		}
		if v := scrape(t, maddr)["amber_freeze_leases"]; v != 1 {
			t.Fatalf("amber_freeze_leases = %v while frozen", v)
		}
		rn, err := c.RenewLease(ctx, &agentpb.RenewLeaseRequest{LeaseId: fr.LeaseId, Lease: durationpb.New(time.Minute)})
		if err != nil || !rn.ExpiresAt.AsTime().After(fr.ExpiresAt.AsTime()) {
			t.Fatalf("renew = %v, %v", rn, err)
		}
		th, err := c.Thaw(ctx, &agentpb.ThawRequest{LeaseId: fr.LeaseId})
		if err != nil {
			t.Fatal(err)
		}
		if len(th.Files) == 0 || th.Files[0].Name != "backup_label" || !strings.Contains(string(th.Files[0].Content), "LABEL: snapshot") ||
			th.Consistent == nil || th.Consistent.Offset < fr.Position.Offset {
			t.Fatalf("thaw = %v", th)
		}
		st, _ = c.Status(ctx, &agentpb.StatusRequest{})
		if len(st.Leases) != 0 {
			t.Fatalf("leases after thaw = %v", st.Leases)
		}
		// Too long a lease, or none, is refused before the plugin is asked.
		before := eng.freezes.Load()
		if _, err := c.Freeze(ctx, &agentpb.FreezeRequest{Lease: durationpb.New(2 * time.Hour)}); code(err) != codes.InvalidArgument {
			t.Fatalf("freeze for 2h: %v, want INVALID_ARGUMENT", err)
		}
		if _, err := c.Freeze(ctx, &agentpb.FreezeRequest{}); code(err) != codes.InvalidArgument {
			t.Fatalf("freeze without a lease: %v, want INVALID_ARGUMENT", err)
		}
		if eng.freezes.Load() != before {
			t.Fatal("a refused freeze reached the plugin")
		}
	})

	t.Run("a lease nobody renews expires by itself", func(t *testing.T) {
		fr, err := c.Freeze(ctx, &agentpb.FreezeRequest{Lease: durationpb.New(time.Second), Label: "abandoned"})
		if err != nil {
			t.Fatal(err)
		}
		// The caller disappears: nothing renews or thaws.
		time.Sleep(2500 * time.Millisecond)
		if _, err := c.RenewLease(ctx, &agentpb.RenewLeaseRequest{LeaseId: fr.LeaseId, Lease: durationpb.New(time.Minute)}); code(err) != codes.FailedPrecondition {
			t.Fatalf("renew after expiry: %v, want FAILED_PRECONDITION", err)
		}
		// The database left backup mode: the session that held it is gone.
		waitFor(t, "the freeze's session to end", 10*time.Second, func() bool { return pg.Psql(t, "postgres", otherSessions) == "0" })
		st, _ := c.Status(ctx, &agentpb.StatusRequest{})
		if len(st.Leases) != 0 || st.LastError == nil || st.LastError.Kind != "freeze" {
			t.Fatalf("status after expiry: leases %v, last error %v", st.Leases, st.LastError)
		}
	})

	t.Run("metrics while archiving", func(t *testing.T) {
		waitFor(t, "archive lag", time.Minute, func() bool { _, ok := scrape(t, maddr)["amber_archive_lag_seconds"]; return ok })
		m := scrape(t, maddr)
		now := float64(time.Now().UnixNano()) / 1e9
		if v := m["amber_last_backup_success_timestamp_seconds"]; v < float64(backup.FinishedAt.AsTime().Unix()) || v > now {
			t.Errorf("amber_last_backup_success_timestamp_seconds = %v, want the backup's end %v", v, backup.FinishedAt.AsTime())
		}
		if v := m["amber_backup_duration_seconds"]; v != backup.Duration.AsDuration().Seconds() {
			t.Errorf("amber_backup_duration_seconds = %v, want %v", v, backup.Duration.AsDuration().Seconds())
		}
		if m[`amber_backup_bytes{kind="in"}`] != float64(backup.BytesIn) || m[`amber_backup_bytes{kind="added"}`] != float64(backup.BytesAdded) {
			t.Errorf("amber_backup_bytes = %v / %v, want %d / %d", m[`amber_backup_bytes{kind="in"}`], m[`amber_backup_bytes{kind="added"}`], backup.BytesIn, backup.BytesAdded)
		}
		if v := m["amber_archive_lag_seconds"]; v < 0 || v > 30 {
			t.Errorf("amber_archive_lag_seconds = %v", v)
		}
		if v, ok := m["amber_archive_pending_seconds"]; !ok || v < 0 || v > 30 {
			t.Errorf("amber_archive_pending_seconds = %v (present %v)", v, ok)
		}
		if m["amber_archive_running"] != 1 || m["amber_archive_segments_total"] < 1 || m["amber_archive_bytes_total"] < 1 || m["amber_backup_running"] != 0 {
			t.Errorf("archive metrics: running %v, segments %v, bytes %v", m["amber_archive_running"], m["amber_archive_segments_total"], m["amber_archive_bytes_total"])
		}
		if m[`amber_errors_total{kind="backup"}`] != 0 || m[`amber_errors_total{kind="archive"}`] != 0 || m[`amber_errors_total{kind="freeze"}`] < 1 {
			t.Errorf("errors: backup %v, archive %v, freeze %v", m[`amber_errors_total{kind="backup"}`], m[`amber_errors_total{kind="archive"}`], m[`amber_errors_total{kind="freeze"}`])
		}
		if m[`amber_backups_total{result="success"}`] != 1 || m["process_resident_memory_bytes"] <= 0 {
			t.Errorf("backups %v, rss %v", m[`amber_backups_total{result="success"}`], m["process_resident_memory_bytes"])
		}
		if code, body := get(t, "http://"+maddr+"/healthz"); code != 200 {
			t.Errorf("/healthz = %d %s", code, body)
		}
		if code, body := get(t, "http://"+maddr+"/readyz"); code != 200 || !strings.Contains(body, "primary") {
			t.Errorf("/readyz = %d %s", code, body)
		}
	})

	t.Run("stop archiving", func(t *testing.T) {
		var last *agentpb.StatusResponse
		deadline := time.Now().Add(2 * time.Minute)
		for last.GetArchive().GetLastPosition().GetOffset() < markerLSN {
			if time.Now().After(deadline) {
				t.Fatalf("the archiver did not make the marker rows (%x) durable within 2 minutes: %v; replication: %s", markerLSN, last.GetArchive(),
					pg.Psql(t, "postgres", "SELECT state, sent_lsn, write_lsn, flush_lsn FROM pg_stat_replication"))
			}
			time.Sleep(500 * time.Millisecond)
			last, _ = c.Status(ctx, &agentpb.StatusRequest{})
		}
		res, err := c.StopArchiving(ctx, &agentpb.StopArchivingRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if !res.WasRunning || res.Archive.Running || res.Archive.Segments < 1 || res.Archive.LastPosition == nil || res.Archive.Error != "" {
			t.Fatalf("stop = %v", res)
		}
		again, err := c.StopArchiving(ctx, &agentpb.StopArchivingRequest{})
		if err != nil || again.WasRunning {
			t.Fatalf("second stop = %v, %v; want was_running=false", again, err)
		}
		segs, err := r.Segments(ctx, stream)
		if err != nil || len(segs) == 0 {
			t.Fatalf("segments of %s in the repository: %d, %v", stream, len(segs), err)
		}
		if err := a.win.refresh(ctx); err != nil {
			t.Fatal(err)
		}
		st, err := c.Status(ctx, &agentpb.StatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		w := st.Window
		if w == nil || w.Stream != stream || len(w.Gaps) != 0 || w.Note != "" || !w.Start.AsTime().Equal(backup.ConsistentTime.AsTime()) ||
			w.End.AsTime().Before(markerTime) {
			t.Fatalf("window = %v; want from the backup (%v) past the marker rows (%v) without gaps", w, backup.ConsistentTime.AsTime(), markerTime)
		}
		if st.Archive.Running || st.LastBackup.GetId() != backup.Id || st.Version != "test" || st.Engine != "postgres" || st.BackupRunning != nil {
			t.Fatalf("status = %v", st)
		}
		m := scrape(t, maddr)
		if m["amber_recoverable_window_start_timestamp_seconds"] != float64(w.Start.AsTime().UnixNano())/1e9 ||
			m["amber_recoverable_window_end_timestamp_seconds"] != float64(w.End.AsTime().UnixNano())/1e9 || m["amber_recoverable_window_gaps"] != 0 {
			t.Fatalf("window metrics %v..%v (gaps %v), want %v..%v", m["amber_recoverable_window_start_timestamp_seconds"],
				m["amber_recoverable_window_end_timestamp_seconds"], m["amber_recoverable_window_gaps"], w.Start.AsTime(), w.End.AsTime())
		}
		if _, ok := m["amber_archive_lag_seconds"]; ok || m["amber_archive_running"] != 0 {
			t.Fatal("archive lag is still reported after the archiver role ended")
		}
		t.Logf("window %s .. %s, %d segments", w.Start.AsTime().Format(time.RFC3339Nano), w.End.AsTime().Format(time.RFC3339Nano), len(segs))
	})

	t.Run("shutdown makes archived log durable", func(t *testing.T) {
		// Archive with a flush interval far longer than the test: only the
		// stop path can make the newest log durable.
		if _, err := c.StartArchiving(ctx, &agentpb.StartArchivingRequest{FlushInterval: durationpb.New(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		lastTime := time.Now()
		pg.Psql(t, "postgres", "INSERT INTO after_backup SELECT g, now() FROM generate_series(101, 200) g")
		lsn := pg.Psql(t, "postgres", "SELECT pg_current_wal_lsn()")
		waitFor(t, "the archiver to receive the last insert", 2*time.Minute, func() bool {
			time.Sleep(400 * time.Millisecond)
			return pg.Psql(t, "postgres", fmt.Sprintf("SELECT coalesce(bool_or(sent_lsn >= '%s'), false) FROM pg_stat_replication", lsn)) == "t"
		})
		if err := a.win.refresh(ctx); err != nil {
			t.Fatal(err)
		}
		if w := a.win.current(); w == nil || !w.LatestTime.Before(lastTime) {
			t.Fatalf("window %+v already reaches the last insert before shutdown; the test proves nothing", w)
		}
		stopAgent() // what SIGTERM does in `amber sidecar`
		select {
		case <-stopped:
			if runErr != nil {
				t.Fatalf("Run after shutdown: %v", runErr)
			}
		case <-time.After(time.Minute):
			t.Fatal("agent did not stop within a minute")
		}
		all, err := r.Backups(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ws, err := job.Windows(ctx, r, all)
		if err != nil || len(ws) != 1 {
			t.Fatalf("windows %v, %v", ws, err)
		}
		if ws[0].LatestTime.Before(lastTime) || len(ws[0].Gaps) != 0 {
			t.Fatalf("after shutdown the window ends at %v (gaps %v), before the last insert at %v: log was lost", ws[0].LatestTime, ws[0].Gaps, lastTime)
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if _, err := c.Status(cctx, &agentpb.StatusRequest{}); code(err) != codes.Unavailable {
			t.Fatalf("call after shutdown: %v, want UNAVAILABLE", err)
		}
	})

	t.Run("the backup restores", func(t *testing.T) {
		dataDir := filepath.Join(testbed.PostgresDir(t), "data")
		if _, err := job.RestoreEngine(ctx, r, p, job.EngineRestore{Engine: "postgres", DataDir: dataDir,
			Choice: job.Choice{Ref: backup.Id}}, nil); err != nil {
			t.Fatal(err)
		}
		srv := testbed.StartPostgresDataDir(t, dataDir, testbed.PostgresOptions{})
		waitFor(t, "the restored server to finish recovery", time.Minute, func() bool {
			out, err := srv.PsqlErr("postgres", "SELECT pg_is_in_recovery()")
			return err == nil && out == "f"
		})
		if n := srv.Psql(t, "postgres", "SELECT count(*) FROM before_backup"); n != "1000" {
			t.Fatalf("restored before_backup has %s rows, want 1000", n)
		}
		if _, err := srv.PsqlErr("postgres", "SELECT 1 FROM after_backup"); err == nil {
			t.Fatal("the restored copy holds a table created after the backup")
		}
	})
}
