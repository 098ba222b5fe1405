package agent

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/amber-backup/amber/conformance/testbed"
	"github.com/amber-backup/amber/plugins/api"
	"github.com/amber-backup/amber/sidecar/agent/agentpb"
	"github.com/amber-backup/amber/sidecar/job"
	"github.com/amber-backup/amber/sidecar/pluginhost"
	"github.com/amber-backup/amber/sidecar/repo/repotest"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
)

// TestAgentFileBackups runs an agent with the data directory of a real
// PostgreSQL 15 (as `amber sidecar --data-dir` does in a pod that mounts the
// database's volume): its physical backups read the files, the second
// reuses the files unchanged since the first and reports so (in its result,
// Status and metrics), and it restores to a server holding the change.
func TestAgentFileBackups(t *testing.T) {
	pluginDir := buildPlugin(t)
	pg := testbed.StartPostgres(t, testbed.PostgresOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	r := repotest.New(t)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	host := pluginhost.New(pluginhost.Options{Dirs: []string{pluginDir}, Logger: log})
	t.Cleanup(func() { host.Close() })
	p, err := host.Engine(ctx, "postgres")
	if err != nil {
		t.Fatal(err)
	}
	pk := newPKI(t)
	tlsCfg, err := ServerTLS(pk.files, nil, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{EngineName: "postgres", Engine: p, Repo: r, Target: api.Target{DSN: api.Secret(pg.DSN())},
		DataDir: pg.DataDir, TLS: tlsCfg, Listen: "127.0.0.1:0", MetricsListen: "127.0.0.1:0", WindowInterval: time.Hour,
		Logger: log, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stopAgent := context.WithCancel(ctx)
	stopped := make(chan struct{})
	go func() { a.Run(runCtx); close(stopped) }()
	t.Cleanup(func() {
		stopAgent()
		select {
		case <-stopped:
		case <-time.After(time.Minute):
		}
	})
	c, err := agentpb.Dial(a.Addr().String(), pk.client(pk.good))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	pg.Psql(t, "postgres", "CREATE TABLE kept AS SELECT g, repeat('k', 200) AS pad FROM generate_series(1, 20000) g")
	pg.Psql(t, "postgres", "CREATE TABLE changed AS SELECT g FROM generate_series(1, 1000) g")
	// Files written within 2 s of a backup's start are read again by the
	// next one; let the set-up's writes age past that margin.
	time.Sleep(3 * time.Second)

	first, err := c.RunBackup(ctx, &agentpb.BackupRequest{Name: "pg-files"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if first.Mode != job.ModePhysical || first.FilesRead < 100 || first.FilesReused != 0 || first.PreviousId != "" {
		t.Fatalf("first backup = %v; want every file read (a file-level backup), nothing reused", first)
	}

	pg.Psql(t, "postgres", "UPDATE changed SET g = -g WHERE g <= 10")
	pg.Psql(t, "postgres", "CREATE TABLE added AS SELECT g FROM generate_series(1, 500) g")
	second, err := c.RunBackup(ctx, &agentpb.BackupRequest{Name: "pg-files"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("first backup: %d files read; second: %d read, %d reused (%d bytes not read again)",
		first.FilesRead, second.FilesRead, second.FilesReused, second.BytesReused)
	if second.PreviousId != first.Id || second.FilesReused < first.FilesRead/2 || second.FilesRead == 0 ||
		second.FilesRead >= first.FilesRead/2 || second.BytesReused <= 0 {
		t.Fatalf("second backup = %v; want most files reused from %s", second, first.Id)
	}
	st, err := c.Status(ctx, &agentpb.StatusRequest{})
	if err != nil || st.LastBackup.GetId() != second.Id || st.LastBackup.GetFilesReused() != second.FilesReused {
		t.Fatalf("status = %v, %v; want the second backup with its counters", st, err)
	}
	m := scrape(t, a.MetricsAddr().String())
	if m[`amber_backup_files{kind="read"}`] != float64(second.FilesRead) || m[`amber_backup_files{kind="reused"}`] != float64(second.FilesReused) {
		t.Fatalf("amber_backup_files = %v read, %v reused; want %d, %d", m[`amber_backup_files{kind="read"}`],
			m[`amber_backup_files{kind="reused"}`], second.FilesRead, second.FilesReused)
	}

	// A logical backup ignores the data directory.
	logical, err := c.RunBackup(ctx, &agentpb.BackupRequest{Name: "pg-logical", Mode: agentpb.BackupMode_BACKUP_MODE_LOGICAL}, nil)
	if err != nil || logical.FilesRead != 0 || logical.FilesReused != 0 {
		t.Fatalf("logical backup = %v, %v; want no file counters", logical, err)
	}

	t.Run("an unreadable data directory fails the backup before the plugin", func(t *testing.T) {
		missing := filepath.Join(t.TempDir(), "not-mounted")
		b, err := New(Config{EngineName: "postgres", Engine: p, Repo: r, Target: api.Target{DSN: api.Secret(pg.DSN())},
			DataDir: missing, TLS: tlsCfg, Listen: "127.0.0.1:0", WindowInterval: time.Hour, Logger: log, Version: "test"})
		if err != nil {
			t.Fatal(err)
		}
		bctx, stopB := context.WithCancel(ctx)
		bdone := make(chan struct{})
		go func() { b.Run(bctx); close(bdone) }()
		defer func() { stopB(); <-bdone }()
		bc, err := agentpb.Dial(b.Addr().String(), pk.client(pk.good))
		if err != nil {
			t.Fatal(err)
		}
		defer bc.Close()
		before, _ := r.Backups(ctx)
		_, err = bc.RunBackup(ctx, &agentpb.BackupRequest{Name: "pg-files"}, nil)
		if code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), missing) || !strings.Contains(err.Error(), "amber.dev/data-dir") {
			t.Fatalf("backup with a missing data directory: %v; want FAILED_PRECONDITION naming it and the annotation", err)
		}
		st, _ := bc.Status(ctx, &agentpb.StatusRequest{})
		if st.GetLastBackupError().GetKind() != "backup" {
			t.Fatalf("status last backup error = %v", st.GetLastBackupError())
		}
		if after, _ := r.Backups(ctx); len(after) != len(before) {
			t.Fatalf("a refused backup changed the repository: %d backups, then %d", len(before), len(after))
		}
	})

	dataDir := filepath.Join(testbed.PostgresDir(t), "data")
	if _, err := job.RestoreEngine(ctx, r, p, job.EngineRestore{Engine: "postgres", DataDir: dataDir,
		Choice: job.Choice{Ref: second.Id}}, nil); err != nil {
		t.Fatal(err)
	}
	srv := testbed.StartPostgresDataDir(t, dataDir, testbed.PostgresOptions{})
	waitFor(t, "the restored server to finish recovery", time.Minute, func() bool {
		out, err := srv.PsqlErr("postgres", "SELECT pg_is_in_recovery()")
		return err == nil && out == "f"
	})
	for q, want := range map[string]string{
		"SELECT count(*), sum(length(pad)) FROM kept":       "20000|4000000",
		"SELECT count(*) FILTER (WHERE g < 0) FROM changed": "10",
		"SELECT count(*) FROM added":                        "500",
	} {
		if got := srv.Psql(t, "postgres", q); got != want {
			t.Errorf("restored %s = %s, want %s", q, got, want)
		}
	}
}

// TestReadableDirNamesTheFix: an agent that cannot read the data directory
// (another user than the database's) says how to fix it, and a backup
// fails before the plugin is asked.
func TestReadableDirNamesTheFix(t *testing.T) {
	root, err := os.MkdirTemp("", "amber-datadir-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "pgdata")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "PG_VERSION"), []byte("15\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := readableDir(dir); err != nil {
		t.Fatalf("the owner cannot read its directory: %v", err)
	}
	if err := readableDir(filepath.Join(root, "missing")); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("missing directory: %v", err)
	}

	// As another user: root reads everything, so drop the file system
	// uid of this thread alone (the test process stays root).
	var got error
	if os.Getuid() == 0 {
		done := make(chan struct{})
		go func() {
			defer close(done)
			runtime.LockOSThread() // the thread ends with the goroutine, its fsuid with it
			unix.Setfsgid(65534)
			unix.Setfsuid(65534)
			got = readableDir(dir)
		}()
		<-done
	} else {
		if err := os.Chmod(dir, 0); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod(dir, 0o700) })
		got = readableDir(dir)
	}
	if got == nil {
		t.Fatal("another user read a 0700 directory")
	}
	for _, want := range []string{dir, "runAsUser", "amber.dev/data-dir", "replication protocol", fmt.Sprintf("owned by uid %d", os.Getuid())} {
		if !strings.Contains(got.Error(), want) {
			t.Errorf("error %q does not say %q", got, want)
		}
	}
	t.Logf("error: %v", got)
}
