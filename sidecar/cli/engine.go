package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/amber-backup/amber/plugins/api"
	"github.com/amber-backup/amber/sidecar/pluginhost"
	"github.com/amber-backup/amber/sidecar/repo"
)

// Manifest meta keys written for engine backups.
const (
	metaResult   = "backup_result" // JSON of api.BackupResult, for restore
	metaSystemID = "system_id"
	metaVersion  = "server_version"
)

// openEngine launches the plugin for engine.
func (e *env) openEngine(ctx context.Context, engine string) (*pluginhost.Host, *pluginhost.Plugin, error) {
	host := pluginhost.New(pluginhost.Options{Logger: e.log})
	p, err := host.Engine(ctx, engine)
	if err != nil {
		host.Close()
		return nil, nil, err
	}
	return host, p, nil
}

// entrySink stores the entries a plugin streams as backup entries.
type entrySink struct {
	w       *repo.Writer
	mu      sync.Mutex
	entries []repo.Entry
}

func entryMeta(e api.Entry) map[string]string {
	m := map[string]string{}
	for k, v := range e.Metadata {
		m[k] = v
	}
	if e.Kind != "" {
		m["kind"] = e.Kind
	}
	if e.Mode != 0 {
		m["mode"] = fmt.Sprintf("%#o", e.Mode)
	}
	return m
}

func (s *entrySink) Entry(ctx context.Context, e api.Entry, r io.Reader) error {
	ent, err := s.w.WriteStream(ctx, e.Name, r)
	if err != nil {
		return err
	}
	ent.Meta = entryMeta(e)
	s.mu.Lock()
	s.entries = append(s.entries, ent)
	s.mu.Unlock()
	return nil
}

func (s *entrySink) Create(ctx context.Context, e api.Entry) (io.WriteCloser, error) {
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := s.Entry(ctx, e, pr)
		pr.CloseWithError(err)
		done <- err
	}()
	return &pipeEntry{pw: pw, done: done}, nil
}

type pipeEntry struct {
	pw   *io.PipeWriter
	done chan error
}

func (p *pipeEntry) Write(b []byte) (int, error) { return p.pw.Write(b) }
func (p *pipeEntry) Close() error {
	p.pw.Close()
	return <-p.done
}

// entrySource replays a backup's entries to a plugin, in order, streaming.
type entrySource struct {
	r       *repo.Repository
	m       *repo.Manifest
	next    int
	cur     *io.PipeReader
	stopCur context.CancelFunc
}

func (s *entrySource) Next(ctx context.Context) (api.Entry, io.Reader, error) {
	s.close()
	if s.next >= len(s.m.Entries) {
		return api.Entry{}, nil, io.EOF
	}
	ent := s.m.Entries[s.next]
	s.next++
	pr, pw := io.Pipe()
	cctx, cancel := context.WithCancel(ctx)
	go func() { pw.CloseWithError(s.r.WriteEntry(cctx, ent, pw)) }()
	s.cur, s.stopCur = pr, cancel
	ae := api.Entry{Name: ent.Name, Size: ent.Size, Kind: ent.Meta["kind"], Metadata: ent.Meta}
	if m := ent.Meta["mode"]; m != "" {
		var mode uint32
		fmt.Sscanf(m, "%o", &mode)
		ae.Mode = mode
	}
	return ae, pr, nil
}

// close stops streaming the current entry, if any.
func (s *entrySource) close() {
	if s.cur != nil {
		s.stopCur()
		s.cur.Close()
		s.cur = nil
	}
}

// engineBackup runs a logical or physical backup through the plugin.
func (e *env) engineBackup(ctx context.Context, engine, dsn, mode, name string, tags map[string]string) error {
	if dsn == "" {
		return usagef("--engine needs --dsn, the database's connection string")
	}
	if mode != "physical" && mode != "logical" {
		return usagef("--mode must be physical or logical, not %q", mode)
	}
	if name == "" {
		name = engine
	}
	host, eng, err := e.openEngine(ctx, engine)
	if err != nil {
		return err
	}
	defer host.Close()
	r, err := e.openRepo(ctx)
	if err != nil {
		return err
	}
	defer r.Close()
	start := time.Now()
	w, err := r.NewWriter(ctx)
	if err != nil {
		return err
	}
	sink := &entrySink{w: w}
	req := api.BackupRequest{Target: api.Target{DSN: api.Secret(dsn)}, Label: "amber " + name}
	p := e.startProgress("backup", 0, w.BytesIn.Load)
	var res api.BackupResult
	if mode == "physical" {
		res, err = eng.PhysicalBackup(ctx, req, sink)
	} else {
		res, err = eng.LogicalDump(ctx, req, sink)
	}
	if err == nil {
		resJSON, _ := json.Marshal(res)
		m := &repo.Manifest{Name: name, Tags: tags, Engine: engine, Mode: mode, Start: start.UTC(), Entries: sink.entries,
			Position: res.Consistent.String(), ConsistentTime: res.ConsistentTime.UTC(),
			Meta: map[string]string{metaResult: string(resJSON), metaSystemID: res.SystemID, metaVersion: res.ServerVersion}}
		_, err = w.Commit(ctx, m)
	}
	p.Stop()
	if err != nil {
		return fmt.Errorf("%s backup: %w", mode, err)
	}
	return e.reportBackup(w, name, start)
}

// streamName is the repository log stream of one database lineage.
func streamName(engine, systemID string) string {
	s := strings.ToLower(engine + "-" + systemID)
	return regexp.MustCompile(`[^a-z0-9._-]`).ReplaceAllString(s, "_")
}

func engineRecord(m *repo.Manifest) (api.BackupResult, error) {
	var res api.BackupResult
	if err := json.Unmarshal([]byte(m.Meta[metaResult]), &res); err != nil {
		return res, fmt.Errorf("backup %s lacks its engine record: %w", m.ID.Short(), err)
	}
	return res, nil
}

// pickBackup chooses the backup to restore: the one named, or the newest
// engine backup of the right mode consistent at or before the target time.
func pickBackup(ctx context.Context, r *repo.Repository, ref, name, engine, mode string, target time.Time) (*repo.Manifest, error) {
	if ref != "" && ref != "latest" {
		m, err := r.FindBackup(ctx, ref, "")
		if err != nil {
			return nil, err
		}
		if m.Engine != engine {
			return nil, fmt.Errorf("backup %s is a %q backup, not %s", m.ID.Short(), m.Engine, engine)
		}
		return m, nil
	}
	all, err := r.Backups(ctx)
	if err != nil {
		return nil, err
	}
	var best *repo.Manifest
	for _, m := range all {
		if m.Engine != engine || (mode != "" && m.Mode != mode) || (name != "" && m.Name != name) {
			continue
		}
		if !target.IsZero() && m.ConsistentTime.After(target) {
			continue
		}
		if best == nil || m.ConsistentTime.After(best.ConsistentTime) {
			best = m
		}
	}
	if best == nil {
		if !target.IsZero() {
			return nil, fmt.Errorf("no %s %s backup is consistent at or before %s: the target is before the recoverable window (see `amber ls`)", engine, mode, target.Format(time.RFC3339))
		}
		return nil, fmt.Errorf("no %s %s backup in the repository: %w", engine, mode, repo.ErrBackupNotFound)
	}
	return best, nil
}
