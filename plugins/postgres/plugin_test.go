package postgres_test

// This test runs the real plugin binary through the host, as amber does.
// Only the test imports sidecar/pluginhost; the plugin itself never does.

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/amber-backup/amber/conformance/testbed"
	"github.com/amber-backup/amber/plugins/api"
	"github.com/amber-backup/amber/plugins/postgres"
	"github.com/amber-backup/amber/sidecar/pluginhost"
)

func buildPlugin(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "amber-plugin-postgres"), "./cmd/amber-plugin-postgres")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build plugin: %v\n%s", err, out)
	}
	return dir
}

type bufSink struct {
	entries map[string]*bytes.Buffer
	order   []api.Entry
}

func (s *bufSink) Entry(_ context.Context, e api.Entry, r io.Reader) error {
	b := &bytes.Buffer{}
	if _, err := io.Copy(b, r); err != nil {
		return err
	}
	s.entries[e.Name] = b
	s.order = append(s.order, e)
	return nil
}

func (s *bufSink) Create(context.Context, api.Entry) (io.WriteCloser, error) {
	return nil, errors.New("not used")
}

// bufSource replays what sink received, in order.
type bufSource struct {
	sink *bufSink
	i    int
}

func (s *bufSource) Next(context.Context) (api.Entry, io.Reader, error) {
	if s.i == len(s.sink.order) {
		return api.Entry{}, nil, io.EOF
	}
	e := s.sink.order[s.i]
	s.i++
	return e, bytes.NewReader(s.sink.entries[e.Name].Bytes()), nil
}

func TestPluginThroughHost(t *testing.T) {
	dir := buildPlugin(t)
	pg := testbed.StartPostgres(t, testbed.PostgresOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	h := pluginhost.New(pluginhost.Options{Dirs: []string{dir}})
	defer h.Close()
	p, err := h.Engine(ctx, "postgres")
	if err != nil {
		t.Fatal(err)
	}
	info, err := p.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Engine != "postgres" || !info.Has(api.LogicalDump) || !info.Has(api.Archive) {
		t.Fatalf("info = %+v", info)
	}

	probe, err := p.Probe(ctx, api.Target{DSN: api.Secret(pg.DSN())})
	if err != nil {
		t.Fatal(err)
	}
	if !probe.Healthy || probe.Role != api.RolePrimary || probe.SystemID == "" || !strings.HasPrefix(probe.ServerVersion, "PostgreSQL") ||
		!strings.HasPrefix(probe.Position.Text, "1/") {
		t.Fatalf("probe = %+v", probe)
	}

	pg.Psql(t, "postgres", "CREATE DATABASE app")
	pg.Psql(t, "postgres", "CREATE DATABASE copy")
	pg.Psql(t, "app", `CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL);
		INSERT INTO items (name) SELECT 'item ' || g FROM generate_series(1, 5000) g;`)
	const q = "SELECT count(*), md5(string_agg(id || name, ';' ORDER BY id)) FROM items"
	want := pg.Psql(t, "app", q)

	// workers=2: pre-data, data and post-data entries, with their
	// sections in the metadata, restored through the host.
	sink := &bufSink{entries: map[string]*bytes.Buffer{}}
	res, err := p.LogicalDump(ctx, api.BackupRequest{Target: api.Target{DSN: api.Secret(pg.DSNDB("app"))},
		Options: map[string]string{"workers": "2"}}, sink)
	if err != nil {
		t.Fatal(err)
	}
	var layout []string
	for _, e := range sink.order {
		layout = append(layout, e.Name+"="+e.Metadata["section"])
	}
	if got := strings.Join(layout, " "); got != "app/pre-data.dump=pre-data app/data-0001.dump=data app/post-data.dump=post-data" {
		t.Fatalf("entries %s", got)
	}
	if res.ConsistentTime.IsZero() || res.Consistent.IsZero() || res.SystemID != probe.SystemID || res.Metadata["format"] != "pg_dump-sections" {
		t.Fatalf("result = %+v", res)
	}
	rr, err := p.LogicalRestore(ctx, api.RestoreRequest{Target: api.Target{DSN: api.Secret(pg.DSNDB("copy"))}, Backup: res},
		&bufSource{sink: sink})
	if err != nil {
		t.Fatal(err)
	}
	if got := pg.Psql(t, "copy", q); got != want || rr.Metadata["data_entries"] != "1" {
		t.Fatalf("restored %q (%v), want %q", got, rr.Metadata, want)
	}

	// The default, workers=1: one custom-format entry, as earlier backups
	// have.
	pg.Psql(t, "postgres", "CREATE DATABASE copy1")
	sink = &bufSink{entries: map[string]*bytes.Buffer{}}
	res, err = p.LogicalDump(ctx, api.BackupRequest{Target: api.Target{DSN: api.Secret(pg.DSNDB("app"))}}, sink)
	if err != nil {
		t.Fatal(err)
	}
	dump := sink.entries["app.dump"]
	if len(sink.order) != 1 || dump == nil || !bytes.HasPrefix(dump.Bytes(), []byte("PGDMP")) {
		t.Fatalf("entries %v: no custom-format app.dump", keys(sink.entries))
	}
	if _, err := p.LogicalRestore(ctx, api.RestoreRequest{Target: api.Target{DSN: api.Secret(pg.DSNDB("copy1"))}, Backup: res},
		&bufSource{sink: sink}); err != nil {
		t.Fatal(err)
	}
	if got := pg.Psql(t, "copy1", q); got != want {
		t.Fatalf("restored %q, want %q", got, want)
	}

	// Errors come back readable, without the password.
	_, err = p.Probe(ctx, api.Target{DSN: api.Secret(pg.DSNFor(testbed.PostgresSuperuser, "not-the-password", "postgres"))})
	if err == nil || strings.Contains(err.Error(), "not-the-password") {
		t.Fatalf("probe with a wrong password: err = %v", err)
	}
	t.Logf("wrong password reported as: %v", err)
}

func TestPositionRoundTrip(t *testing.T) {
	p := postgres.Position(2, 0x3000028)
	tl, lsn, err := postgres.ParsePosition(p)
	if err != nil || tl != 2 || lsn != 0x3000028 || p.Text != "2/0/3000028" {
		t.Fatalf("position %+v -> %d %v %v", p, tl, lsn, err)
	}
	if postgres.Position(1, 0xFFFFFFFF).Compare(postgres.Position(2, 1)) >= 0 {
		t.Fatal("a later timeline must order after an earlier one")
	}
}

func keys(m map[string]*bytes.Buffer) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestFileBackupOptions: the options of the two physical backup methods
// are refused where they do not apply, before any connection is made.
func TestFileBackupOptions(t *testing.T) {
	e := postgres.New()
	for _, c := range []struct {
		dataDir string
		opts    map[string]string
		want    string
	}{
		{"", map[string]string{"workers": "2"}, "option workers"},
		{"/nonexistent", map[string]string{"exclude_wal": "true"}, "option exclude_wal"},
		{"/nonexistent", map[string]string{"max_rate_kbps": "100"}, "option max_rate_kbps"},
		{"/nonexistent", map[string]string{"workers": "0"}, `workers "0"`},
		{"", map[string]string{"incremental": "blocks"}, `incremental="blocks": want summaries`},
		{"/nonexistent", map[string]string{"incremental": "summaries"}, "option incremental=summaries is for BASE_BACKUP"},
	} {
		req := api.BackupRequest{Target: api.Target{DSN: "host=/nonexistent", DataDir: c.dataDir}, Options: c.opts}
		_, err := e.PhysicalBackup(context.Background(), req, nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q %v: %v, want an error naming %s", c.dataDir, c.opts, err, c.want)
		}
	}
}

// TestUnknownOptionsRefused: a misspelt or foreign option fails the call
// before the server is asked anything, naming what the call takes.
func TestUnknownOptionsRefused(t *testing.T) {
	e, ctx := postgres.New(), context.Background()
	_, err := e.PhysicalBackup(ctx, api.BackupRequest{Options: map[string]string{"wokers": "2"}}, nil)
	if err == nil || !strings.Contains(err.Error(), "unknown option wokers for a physical backup: it takes only exclude_wal, incremental, max_rate_kbps, spread_checkpoint, workers") {
		t.Errorf("PhysicalBackup: %v", err)
	}
	_, err = e.LogicalDump(ctx, api.BackupRequest{Options: map[string]string{"wokers": "2"}}, nil)
	if err == nil || !strings.Contains(err.Error(), "unknown option wokers for a logical backup: it takes only databases, globals, spool_dir, workers") {
		t.Errorf("LogicalDump: %v", err)
	}
	err = e.Archive(ctx, api.ArchiveRequest{Options: map[string]string{"server_id": "7"}}, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "it takes only slot, synchronous") {
		t.Errorf("Archive: %v", err)
	}
}
