package job

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/amber-backup/amber/plugins/api"
	"github.com/amber-backup/amber/plugins/api/clock"
	"github.com/amber-backup/amber/sidecar/repo"
)

// Modes of a backup, as recorded in its manifest.
const (
	ModeStream   = "stream"
	ModeLogical  = "logical"
	ModePhysical = "physical"
)

// ErrUsage marks an error in what the caller asked for (a flag, a request
// field), as opposed to a failure while doing it.
var ErrUsage = errors.New("bad request")

// usageError is a complaint about the request; errors.Is(err, ErrUsage)
// holds, and its message is the complaint alone.
type usageError struct{ msg string }

func (e *usageError) Error() string        { return e.msg }
func (e *usageError) Is(target error) bool { return target == ErrUsage }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// BackupReport says what a backup stored.
type BackupReport struct {
	ID         repo.ID
	Name       string
	BytesIn    int64
	BytesAdded int64
	Duration   time.Duration
	ChunksNew  int64
	ChunksSeen int64 // deduplicated
	// File-level physical backups (file records): files the plugin sent,
	// and files (with their bytes) reused from Previous without reading.
	FilesRead   int64
	FilesReused int64
	BytesReused int64 // of reused records and of a patched record's untouched chunks
	// Records patched from the previous backup's (an incremental
	// BASE_BACKUP's changed blocks applied to the earlier file).
	FilesPatched int64
	Previous     repo.ID // the backup whose file records could be reused; zero: none
}

// Progress, when set, is called once a backup or restore has started with a
// function that reads the bytes done so far; the caller shows them.
type Progress func(done func() int64)

func report(w *repo.Writer, name string, d time.Duration) *BackupReport {
	return &BackupReport{ID: w.Committed(), Name: name, BytesIn: w.BytesIn.Load(), BytesAdded: w.BytesAdded.Load(),
		Duration: d, ChunksNew: w.BlobsNew.Load(), ChunksSeen: w.BlobsDedup.Load(),
		FilesRead: w.FilesWritten.Load(), FilesReused: w.FilesReused.Load(), BytesReused: w.BytesReused.Load(),
		FilesPatched: w.FilesPatched.Load()}
}

// StreamBackup stores everything read from in as one backup named name.
func StreamBackup(ctx context.Context, r *repo.Repository, name string, tags map[string]string, in io.Reader,
	clk clock.Clock, progress Progress) (*BackupReport, error) {
	if name == "" {
		return nil, usagef("a backup needs a name: it groups backups for listing and retention")
	}
	clk = clock.Or(clk)
	start := clk.Now()
	w, err := r.NewWriter(ctx)
	if err != nil {
		return nil, err
	}
	defer w.Close() // ends the writer's marker, committed or not
	if progress != nil {
		progress(w.BytesIn.Load)
	}
	entry, err := w.WriteStream(ctx, "stdin", in)
	if err == nil {
		m := &repo.Manifest{Name: name, Tags: tags, Mode: ModeStream, Start: start.UTC(), Entries: []repo.Entry{entry}}
		_, err = w.Commit(ctx, m)
	}
	if err != nil {
		return nil, fmt.Errorf("backup %s: %w", name, err)
	}
	return report(w, name, clk.Now().Sub(start)), nil
}

// EngineBackup asks for a backup through an engine plugin.
type EngineBackup struct {
	Engine  string // plugin name, recorded in the manifest
	Mode    string // ModePhysical or ModeLogical
	Name    string // default: the engine
	Tags    map[string]string
	Target  api.Target
	Options map[string]string
	// Full reads every file of a physical backup with file records,
	// reusing or patching nothing of the previous backup.
	Full bool
}

// BackupEngine runs a logical or physical backup through eng and commits
// it with the engine's record of where and when it is consistent.
func BackupEngine(ctx context.Context, r *repo.Repository, eng api.Engine, b EngineBackup, clk clock.Clock,
	progress Progress) (*BackupReport, error) {
	if b.Mode != ModePhysical && b.Mode != ModeLogical {
		return nil, usagef("the mode must be physical or logical, not %q", b.Mode)
	}
	if b.Name == "" {
		b.Name = b.Engine
	}
	ctx = with(ctx, "engine", b.Engine, "mode", b.Mode, "name", b.Name)
	clk = clock.Or(clk)
	start := clk.Now()
	// The writer starts with the first entry: a backup the plugin refuses
	// (a wrong DSN, missing privileges) leaves the repository untouched.
	sink := &entrySink{open: func() (*repo.Writer, error) { return r.NewWriter(ctx) }}
	defer sink.close() // ends the writer's marker, committed or not
	if progress != nil {
		progress(sink.bytesIn)
	}
	req := api.BackupRequest{Target: b.Target, Label: "amber " + b.Name, Options: b.Options}
	var prev *repo.Manifest
	if b.Mode == ModePhysical {
		info, err := eng.Info(ctx)
		if err != nil {
			return nil, fmt.Errorf("%s backup: %w", b.Mode, err)
		}
		if info.Has(api.FileRecords) {
			req.FileRecords = true
			if !b.Full {
				prev, req.Previous, sink.prev = previousFiles(ctx, r, b, info.PreviousEntries)
			}
		}
	}
	var (
		res api.BackupResult
		err error
	)
	if req.Archived, err = ArchivedEndOf(ctx, r, eng, b.Engine, b.Target); err != nil {
		return nil, fmt.Errorf("%s backup: %w", b.Mode, err)
	}
	if b.Mode == ModePhysical {
		res, err = eng.PhysicalBackup(ctx, req, sink)
	} else {
		res, err = eng.LogicalDump(ctx, req, sink)
	}
	var w *repo.Writer
	if err == nil {
		w, err = sink.writer()
	}
	if err == nil {
		m := &repo.Manifest{Name: b.Name, Tags: b.Tags, Engine: b.Engine, Mode: b.Mode, Start: start.UTC(),
			Entries: sink.entries, Position: res.Consistent.String(), ConsistentTime: res.ConsistentTime.UTC(),
			Record: recordOf(res)}
		_, err = w.Commit(ctx, m)
	}
	if err != nil {
		return nil, fmt.Errorf("%s backup: %w", b.Mode, err)
	}
	rep := report(w, b.Name, clk.Now().Sub(start))
	if prev != nil {
		rep.Previous = prev.ID
	}
	if req.FileRecords {
		Logger(ctx).Info("backup committed", "backup", rep.ID.Short(), "bytes_in", rep.BytesIn, "files_read", rep.FilesRead,
			"files_reused", rep.FilesReused, "files_patched", rep.FilesPatched, "bytes_reused", rep.BytesReused)
	} else {
		Logger(ctx).Info("backup committed", "backup", rep.ID.Short(), "bytes_in", rep.BytesIn)
	}
	return rep, nil
}

// StreamName is the repository log stream of one database lineage.
func StreamName(engine, systemID string) string { return repo.StreamName(engine, systemID) }

func posRecord(p api.Position) repo.LogPosition {
	return repo.LogPosition{Epoch: p.Epoch, Offset: p.Offset, Token: p.Token, Text: p.Text}
}

func posFromRecord(p repo.LogPosition) api.Position {
	return api.Position{Epoch: p.Epoch, Offset: p.Offset, Token: p.Token, Text: p.Text}
}

func recordOf(res api.BackupResult) *repo.EngineRecord {
	rec := &repo.EngineRecord{SystemID: res.SystemID, ServerVersion: res.ServerVersion,
		Start: posRecord(res.Start), Consistent: posRecord(res.Consistent),
		StartTime: res.StartTime.UTC(), ConsistentTime: res.ConsistentTime.UTC(), Metadata: maps.Clone(res.Metadata)}
	for _, f := range res.Files {
		rec.Files = append(rec.Files, repo.EngineFile{Name: f.Name, Content: f.Content, Mode: f.Mode})
	}
	return rec
}

// engineResult gives back what the plugin reported at backup time.
func engineResult(m *repo.Manifest) (api.BackupResult, error) {
	rec := m.Record
	if rec == nil {
		return api.BackupResult{}, fmt.Errorf("backup %s lacks its engine record; it cannot be restored through a plugin", m.ID.Short())
	}
	res := api.BackupResult{SystemID: rec.SystemID, ServerVersion: rec.ServerVersion,
		Start: posFromRecord(rec.Start), Consistent: posFromRecord(rec.Consistent),
		StartTime: rec.StartTime, ConsistentTime: rec.ConsistentTime, Metadata: maps.Clone(rec.Metadata)}
	for _, f := range rec.Files {
		res.Files = append(res.Files, api.File{Name: f.Name, Content: f.Content, Mode: f.Mode})
	}
	return res, nil
}

// previousFiles finds the newest backup of b's name, engine and mode with
// file records and loads them, with its entries named in entries (those
// that fit in the request); nothing (a full read) when there is none or it
// cannot be read, which is logged.
func previousFiles(ctx context.Context, r *repo.Repository, b EngineBackup, entries []string) (*repo.Manifest, *api.PreviousFiles, map[string]map[string]*repo.PrevFile) {
	log := Logger(ctx)
	all, err := r.Backups(ctx)
	if err != nil {
		log.Warn("reading every file: cannot list earlier backups", "error", err)
		return nil, nil, nil
	}
	var m *repo.Manifest
	for i := len(all) - 1; i >= 0; i-- {
		c := all[i]
		if c.Name == b.Name && c.Engine == b.Engine && c.Mode == b.Mode && c.Record != nil && slices.ContainsFunc(c.Entries, func(e repo.Entry) bool { return e.Files != nil }) {
			m = c
			break
		}
	}
	if m == nil {
		return nil, nil, nil
	}
	recs, err := r.FileRecords(ctx, m)
	if err != nil {
		log.Warn("reading every file: the previous backup's file records are unusable", "previous", m.ID.Short(), "error", err)
		return nil, nil, nil
	}
	res, err := engineResult(m)
	if err != nil {
		return nil, nil, nil
	}
	p := &api.PreviousFiles{Backup: m.ID.String(), Result: res}
	byEntry := make(map[string]map[string]*repo.PrevFile, len(recs))
	size := 0
	for entry, files := range recs {
		keys := make(map[string]*repo.PrevFile, len(files))
		for i := range files {
			f := &files[i]
			keys[f.Key] = f
			p.Files = append(p.Files, api.PreviousFile{Entry: entry, Key: f.Key, Stamp: f.Stamp, Length: f.Length})
			size += len(entry) + len(f.Key) + len(f.Stamp) + 32
		}
		byEntry[entry] = keys
	}
	if size > api.MaxRequestSize-(1<<20) {
		log.Warn("reading every file: the previous backup has too many file records to send", "previous", m.ID.Short(), "records", len(p.Files))
		return nil, nil, nil
	}
	for _, name := range entries {
		i := slices.IndexFunc(m.Entries, func(e repo.Entry) bool { return e.Name == name })
		if i < 0 {
			continue
		}
		e := m.Entries[i]
		if e.Size > int64(api.MaxRequestSize-(1<<20)-size) {
			log.Warn("the previous backup's entry is too large to send to the plugin", "previous", m.ID.Short(), "entry", name, "size", e.Size)
			continue
		}
		var buf bytes.Buffer
		if err := r.WriteEntry(ctx, e, &buf); err != nil {
			log.Warn("cannot read the previous backup's entry for the plugin", "previous", m.ID.Short(), "entry", name, "error", err)
			continue
		}
		if p.Entries == nil {
			p.Entries = map[string][]byte{}
		}
		p.Entries[name] = buf.Bytes()
		size += buf.Len()
	}
	return m, p, byEntry
}

// entrySink stores the entries a plugin streams as backup entries, in a
// writer it opens with the first entry.
type entrySink struct {
	open    func() (*repo.Writer, error)
	prev    map[string]map[string]*repo.PrevFile // file records the plugin may reuse, by entry and key
	mu      sync.Mutex
	w       *repo.Writer
	entries []repo.Entry
}

var _ api.FileSink = (*entrySink)(nil)

// FileEntry stores an entry made of file records.
func (s *entrySink) FileEntry(ctx context.Context, e api.Entry, src api.PartSource) error {
	w, err := s.writer()
	if err != nil {
		return err
	}
	prev := s.prev[e.Name]
	ent, err := w.WriteParts(ctx, e.Name, func() (repo.Part, error) {
		m, rd, err := src.Next(ctx)
		if err != nil {
			return repo.Part{}, err
		}
		p := repo.Part{Key: m.Key, Stamp: m.Stamp, Reader: rd}
		if m.Reuse {
			f := prev[m.Key]
			if f == nil {
				return repo.Part{}, fmt.Errorf("entry %s: the plugin reuses file record %q, which the previous backup lacks", e.Name, m.Key)
			}
			if f.Length != m.Length {
				return repo.Part{}, fmt.Errorf("entry %s: the plugin reuses file record %q as %d bytes, the previous backup has %d", e.Name, m.Key, m.Length, f.Length)
			}
			p.Reuse, p.Reader = f, nil
		}
		if m.Base != "" {
			f := prev[m.Base]
			if f == nil {
				return repo.Part{}, fmt.Errorf("entry %s: the plugin patches file record %q, which the previous backup lacks", e.Name, m.Base)
			}
			p.Patch = &repo.Patch{Base: f, Keep: m.Keep, Length: m.Length}
			for _, r := range m.Ranges {
				p.Patch.Ranges = append(p.Patch.Ranges, repo.Range{Off: r.Offset, Len: r.Length})
			}
		}
		return p, nil
	})
	if err != nil {
		return err
	}
	ent.Meta = entryMeta(e)
	s.mu.Lock()
	s.entries = append(s.entries, ent)
	s.mu.Unlock()
	return nil
}

// writer returns the backup's writer, opening it on first use.
func (s *entrySink) writer() (*repo.Writer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.w == nil {
		w, err := s.open()
		if err != nil {
			return nil, err
		}
		s.w = w
	}
	return s.w, nil
}

func (s *entrySink) bytesIn() int64 {
	s.mu.Lock()
	w := s.w
	s.mu.Unlock()
	if w == nil {
		return 0
	}
	return w.BytesIn.Load()
}

func (s *entrySink) close() {
	s.mu.Lock()
	w := s.w
	s.mu.Unlock()
	if w != nil {
		w.Close()
	}
}

func entryMeta(e api.Entry) map[string]string {
	m := maps.Clone(e.Metadata)
	if m == nil {
		m = map[string]string{}
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
	w, err := s.writer()
	if err != nil {
		return err
	}
	ent, err := w.WriteStream(ctx, e.Name, r)
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
