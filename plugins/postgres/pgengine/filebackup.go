package pgengine

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// FileBackupOptions tune FileBackup.
type FileBackupOptions struct {
	Label            string // backup label; default "amber"
	SpreadCheckpoint bool   // wait for a spread checkpoint instead of requesting a fast one
	// Workers is how many files are read at once; 0: the number of CPUs,
	// at least 2 and at most 8.
	Workers int
	// Records marks every file of the data directory and its tablespaces
	// as a file record (the sink's writers must implement FileMarker), so
	// a later backup can reuse it.
	Records bool
	// Previous, with Records, is an earlier file-level backup of this
	// server: a file it recorded that has not changed since is not read
	// again, but reused.
	Previous *PreviousFiles
}

// PreviousFiles is what FileBackup needs of an earlier file-level backup.
type PreviousFiles struct {
	SystemID string
	// Ref is the earlier backup's FileRef.
	Ref time.Time
	// Records by entry name and key (the file's name in the tar).
	Records map[string]map[string]PreviousRecord
}

// PreviousRecord is one file of an earlier backup.
type PreviousRecord struct {
	Stamp  string
	Length int64
}

// ClockMargin is how long before the previous backup's FileRef a file must
// have last changed to be reused: it covers the coarse clock the kernel
// stamps files with and file systems whose times have a granularity of a
// second or two.
const ClockMargin = 2 * time.Second

// FileMarker is implemented by the entry writers of a sink that takes file
// records: MarkFile ends the current record and starts one named key at
// the current offset (key "": no record); with reuse, the record is the
// earlier backup's record of the same key and length, and nothing is
// written for it.
type FileMarker interface {
	MarkFile(key, stamp string, length int64, reuse bool) error
}

// FileSender is implemented by the entry writers of a sink that reads
// files itself: SendFile stands for length bytes of f from off (zeros past
// its end), which the sink reads from f instead of having them written; f
// may be closed once it returns.
type FileSender interface {
	io.Writer
	SendFile(f *os.File, off, length int64) error
}

// EntrySink receives the entries of a file-level backup: Create starts one
// and returns a writer for its bytes, Close ends it; one entry at a time.
type EntrySink interface {
	Create(ctx context.Context, name string) (io.WriteCloser, error)
}

// FileBackup takes a physical backup by reading the data directory dataDir
// of the server at dsn itself, which must be this server's (the system
// identifier in global/pg_control is checked): pg_backup_start on a
// session held open, the files read by several workers at once and written
// in order as base.tar (and one <oid>.tar per user tablespace, before it),
// then pg_backup_stop, whose backup_label and tablespace_map close
// base.tar together with the WAL from start to stop read from pg_wal. A
// temporary physical replication slot, made on the same session before the
// backup starts, keeps the server from removing that WAL meanwhile; it
// goes with the session. The result restores exactly like PhysicalBackup's.
//
// With opts.Records, every file of the data directory and its tablespaces
// is a file record of its tar, stamped with its size, modification and
// change times, inode and mode. With opts.Previous as well, a file is not
// read when the earlier backup recorded the same stamp and the file last
// changed more than ClockMargin before the earlier backup's FileRef: its
// bytes then are those the earlier backup stored. global/pg_control and
// the WAL are always read. This is safe for every file the server writes
// in place: a change after FileRef moves the file's times past FileRef, and
// what the server changes after this backup's start is replayed from the
// WAL anyway, as for any file copied while the server runs.
//
// The files are excluded as pg_basebackup excludes them: the contents of
// pg_wal, pg_replslot, pg_dynshmem, pg_notify, pg_serial, pg_snapshots,
// pg_stat_tmp and pg_subtrans, postmaster.pid and .opts, pg_internal.init,
// temporary files and relations, and all but the init fork of unlogged
// relations.
func FileBackup(ctx context.Context, dsn DSN, dataDir string, sink EntrySink, opts FileBackupOptions) (*BackupResult, error) {
	info, err := Probe(ctx, dsn)
	if info == nil {
		return nil, err
	}
	if info.WALLevel == "minimal" {
		return nil, fmt.Errorf("%w; set wal_level=replica and restart", ErrWALLevelMinimal)
	}
	if err := checkDataDir(dataDir, info.SystemID); err != nil {
		return nil, err
	}
	segSize := info.WALSegmentSize
	if segSize == 0 {
		segSize = DefaultWALSegmentSize
	}
	conn, err := connectSQL(ctx, dsn)
	if err != nil {
		return nil, err
	}
	// Closing the session aborts a backup still running and drops the slot.
	defer conn.Close(context.Background())

	if info.Major >= 14 {
		// The session idles while the files are read; a server-wide
		// idle_session_timeout must not end it (and the backup with it).
		if _, err := conn.Exec(ctx, "SET idle_session_timeout = 0"); err != nil {
			return nil, fmt.Errorf("file backup: %w", err)
		}
	}
	slot := fmt.Sprintf("amber_backup_%d", conn.PgConn().PID())
	if _, err := conn.Exec(ctx, "SELECT pg_create_physical_replication_slot($1, true, true)", slot); err != nil {
		return nil, fmt.Errorf("file backup: temporary replication slot to hold the backup's WAL: %w"+
			" (raise max_replication_slots if all are in use)", err)
	}
	label := opts.Label
	if label == "" {
		label = "amber"
	}
	res := &BackupResult{ServerVersion: info.ServerVersion, Major: info.Major, FromStandby: info.Standby,
		SystemID: info.SystemID, WALIncluded: true}
	q := "SELECT pg_backup_start($1, $2)::text"
	if info.Major < 15 {
		q = "SELECT pg_start_backup($1, $2, false)::text"
	}
	if err := conn.QueryRow(ctx, q, label, !opts.SpreadCheckpoint).Scan(&res.StartLSN); err != nil {
		return nil, fmt.Errorf("file backup: start: %w", err)
	}
	var held LSN
	if err := conn.QueryRow(ctx, "SELECT timeline_id, clock_timestamp(), (SELECT restart_lsn::text FROM pg_replication_slots WHERE slot_name = $1)"+
		" FROM pg_control_checkpoint()", slot).Scan(&res.StartTimeline, &res.StartTime, &held); err != nil {
		return nil, fmt.Errorf("file backup: read timeline: %w", err)
	}
	if held == 0 || held > res.StartLSN {
		return nil, fmt.Errorf("file backup: the replication slot holds WAL from %s, after the backup's start %s", held, res.StartLSN)
	}
	// FileRef: a time no later than now by the clock the file system
	// stamps files with. pg_control's time is by that clock and in the
	// past (the start's checkpoint just wrote it, on a primary); the
	// server's and this machine's clocks only make it earlier.
	res.FileRef = res.StartTime
	if now := time.Now(); now.Before(res.FileRef) {
		res.FileRef = now
	}
	if fi, err := os.Stat(filepath.Join(dataDir, "global", "pg_control")); err == nil && fi.ModTime().Before(res.FileRef) {
		res.FileRef = fi.ModTime()
	}
	var marks *recordPlan
	if opts.Records {
		marks = &recordPlan{res: res}
		if p := opts.Previous; p != nil && p.SystemID == info.SystemID && !p.Ref.IsZero() {
			marks.prev = p
		}
	}

	tbs, err := dataTablespaces(dataDir, info.Major)
	if err != nil {
		return nil, err
	}
	workers := opts.Workers
	if workers <= 0 {
		workers = min(max(runtime.GOMAXPROCS(0), 2), 8)
	}
	for _, t := range tbs {
		res.Tablespaces = append(res.Tablespaces, Tablespace{OID: t.oid, Location: t.location})
		name := TablespaceTar(t.oid)
		if err := writeTar(ctx, sink, name, func(tw *tar.Writer, w io.Writer) error {
			return copyTree(ctx, tw, t.root, marks.plan(name, w, t.items), workers)
		}); err != nil {
			return nil, err
		}
		res.Entries = append(res.Entries, name)
	}

	items, err := listDataDir(dataDir, false)
	if err != nil {
		return nil, err
	}
	err = writeTar(ctx, sink, BaseTar, func(tw *tar.Writer, w io.Writer) error {
		if err := copyTree(ctx, tw, dataDir, marks.plan(BaseTar, w, items), workers); err != nil {
			return err
		}
		var labelFile, spcMap string
		q := "SELECT lsn::text, labelfile, coalesce(spcmapfile, ''), clock_timestamp() FROM pg_backup_stop(false)"
		if info.Major < 15 {
			q = "SELECT lsn::text, labelfile, coalesce(spcmapfile, ''), clock_timestamp() FROM pg_stop_backup(false, false)"
		}
		if err := conn.QueryRow(ctx, q).Scan(&res.StopLSN, &labelFile, &spcMap, &res.ConsistentTime); err != nil {
			return fmt.Errorf("file backup: stop: %w", err)
		}
		res.StopTimeline = res.StartTimeline // pg_backup_stop fails if the timeline changed
		now := time.Now()
		if err := addFile(tw, backupLabel, []byte(labelFile), now); err != nil {
			return err
		}
		if spcMap != "" {
			if err := addFile(tw, tablespaceMap, []byte(spcMap), now); err != nil {
				return err
			}
		}
		wal, err := backupWAL(dataDir, uint32(res.StartTimeline), res.StartLSN, res.StopLSN, segSize)
		if err != nil {
			return err
		}
		return copyTree(ctx, tw, dataDir, plainCopy(w, wal), workers)
	})
	if err != nil {
		return nil, err
	}
	res.Entries = append(res.Entries, BaseTar)
	res.Timeline = res.StopTimeline
	return res, nil
}

// checkDataDir makes sure dataDir is the data directory of the server with
// system identifier systemID.
func checkDataDir(dataDir, systemID string) error {
	f, err := os.Open(filepath.Join(dataDir, "global", "pg_control"))
	if err != nil {
		return fmt.Errorf("file backup: %w; give the data directory of the server the connection string names", err)
	}
	defer f.Close()
	var b [8]byte
	if _, err := io.ReadFull(f, b[:]); err != nil {
		return fmt.Errorf("file backup: read pg_control: %w", err)
	}
	if id := strconv.FormatUint(binary.NativeEndian.Uint64(b[:]), 10); id != systemID {
		return fmt.Errorf("file backup: %s belongs to database system %s, but the server is %s; give that server's data directory",
			dataDir, id, systemID)
	}
	return nil
}

// item is a directory or file to copy into a tar, relative to its root.
type item struct {
	rel  string // slash-separated
	info fs.FileInfo
}

// The parts of the data directory pg_basebackup leaves out.
var (
	// Directories kept empty.
	skipDirContents = map[string]bool{"pg_wal": true, "pg_xlog": true, "pg_replslot": true, "pg_dynshmem": true,
		"pg_notify": true, "pg_serial": true, "pg_snapshots": true, "pg_stat_tmp": true, "pg_subtrans": true}
	skipFiles = map[string]bool{"postmaster.pid": true, "postmaster.opts": true, "pg_internal.init": true,
		"postgresql.auto.conf.tmp": true, "current_logfiles.tmp": true, backupLabel: true, tablespaceMap: true,
		ManifestEntry: true, "backup_label.old": true}
	tempRelation = regexp.MustCompile(`^t[0-9]+_[0-9]+`)
	relFile      = regexp.MustCompile(`^([0-9]+)(_[a-z]+)?(\.[0-9]+)?$`)
)

// listDataDir lists what a base backup holds of dataDir (or, with
// tablespace, of a tablespace's version directory), parents before
// children, global/pg_control last as pg_basebackup sends it. pg_tblspc's
// links are left out: tablespace_map records them.
func listDataDir(dataDir string, tablespace bool) ([]item, error) {
	var items []item
	var walk func(rel string, top bool) error
	walk = func(rel string, top bool) error {
		ents, err := os.ReadDir(filepath.Join(dataDir, filepath.FromSlash(rel)))
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && !top {
				return nil // a directory dropped meanwhile
			}
			return fmt.Errorf("file backup: %w", err)
		}
		unlogged := unloggedRelations(ents)
		for _, e := range ents {
			name := e.Name()
			child := name
			if rel != "" {
				child = rel + "/" + name
			}
			if skipFiles[name] || strings.HasPrefix(name, "pgsql_tmp") {
				continue
			}
			if isDatabaseDir(rel, tablespace) && skipRelation(name, unlogged) {
				continue
			}
			fi, err := e.Info()
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return fmt.Errorf("file backup: %w", err)
			}
			switch {
			case fi.Mode()&fs.ModeSymlink != 0:
				if child == "pg_wal" || child == "pg_xlog" {
					// A pg_wal elsewhere is restored as a plain directory.
					items = append(items, item{rel: child, info: dirInfo{fi}}, item{rel: child + "/archive_status", info: dirInfo{fi}})
				}
				// Tablespace links (pg_tblspc/<oid>) are in tablespace_map.
			case fi.IsDir():
				items = append(items, item{rel: child, info: fi})
				if top && skipDirContents[name] {
					if name == "pg_wal" || name == "pg_xlog" {
						items = append(items, item{rel: child + "/archive_status", info: fi})
					}
					continue
				}
				if err := walk(child, false); err != nil {
					return err
				}
			case fi.Mode().IsRegular():
				items = append(items, item{rel: child, info: fi})
			}
		}
		return nil
	}
	if err := walk("", true); err != nil {
		return nil, err
	}
	if i := slices.IndexFunc(items, func(it item) bool { return it.rel == "global/pg_control" }); i >= 0 {
		ctl := items[i]
		items = append(slices.Delete(items, i, i+1), ctl)
	}
	return items, nil
}

// dirInfo presents a symlink to a directory as a directory.
type dirInfo struct{ fs.FileInfo }

func (d dirInfo) Mode() fs.FileMode { return fs.ModeDir | 0o700 }
func (d dirInfo) IsDir() bool       { return true }

// isDatabaseDir reports whether rel (relative to the data directory or,
// with tablespace, to a tablespace's version directory) holds relation
// files.
func isDatabaseDir(rel string, tablespace bool) bool {
	if tablespace {
		return rel != "" && !strings.Contains(rel, "/")
	}
	dir, db, ok := strings.Cut(rel, "/")
	return rel == "global" || (ok && dir == "base" && !strings.Contains(db, "/"))
}

// unloggedRelations returns the relations of a database directory that
// have an init fork.
func unloggedRelations(ents []os.DirEntry) map[string]bool {
	var m map[string]bool
	for _, e := range ents {
		if base, ok := strings.CutSuffix(e.Name(), "_init"); ok {
			if m == nil {
				m = map[string]bool{}
			}
			m[base] = true
		}
	}
	return m
}

// skipRelation reports whether a database directory's file is left out: a
// temporary relation, or a fork other than init of an unlogged one.
func skipRelation(name string, unlogged map[string]bool) bool {
	if tempRelation.MatchString(name) {
		return true
	}
	m := relFile.FindStringSubmatch(name)
	return m != nil && unlogged[m[1]] && m[2] != "_init"
}

// tablespace is a user tablespace as read from pg_tblspc.
type tablespace struct {
	oid      uint32
	location string
	root     string // the location
	items    []item // its version directory
}

func dataTablespaces(dataDir string, major int) ([]tablespace, error) {
	ents, err := os.ReadDir(filepath.Join(dataDir, "pg_tblspc"))
	if err != nil {
		return nil, fmt.Errorf("file backup: %w", err)
	}
	var out []tablespace
	prefix := "PG_" + strconv.Itoa(major) + "_"
	if major < 10 {
		prefix = "PG_9." // not supported further, but named right
	}
	for _, e := range ents {
		oid, err := strconv.ParseUint(e.Name(), 10, 32)
		if err != nil {
			continue
		}
		p := filepath.Join(dataDir, "pg_tblspc", e.Name())
		loc, err := os.Readlink(p)
		if err != nil {
			loc = p // an in-place tablespace (allow_in_place_tablespaces)
		}
		if !filepath.IsAbs(loc) {
			loc = filepath.Join(dataDir, "pg_tblspc", loc)
		}
		vers, err := os.ReadDir(loc)
		if err != nil {
			return nil, fmt.Errorf("file backup: tablespace %d: %w", oid, err)
		}
		t := tablespace{oid: uint32(oid), location: loc, root: loc}
		for _, v := range vers {
			if !v.IsDir() || !strings.HasPrefix(v.Name(), prefix) {
				continue
			}
			sub, err := listDataDir(filepath.Join(loc, v.Name()), true)
			if err != nil {
				return nil, err
			}
			fi, err := v.Info()
			if err != nil {
				return nil, fmt.Errorf("file backup: tablespace %d: %w", oid, err)
			}
			t.items = append(t.items, item{rel: v.Name(), info: fi})
			for _, s := range sub {
				s.rel = v.Name() + "/" + s.rel
				t.items = append(t.items, s)
			}
		}
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b tablespace) int { return int(a.oid) - int(b.oid) })
	return out, nil
}

// backupWAL lists the WAL segments from start's to the one ending at stop,
// and the timeline history files, in dataDir's pg_wal.
func backupWAL(dataDir string, tli uint32, start, stop LSN, segSize int64) ([]item, error) {
	dir := filepath.Join(dataDir, "pg_wal")
	var items []item
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("file backup: %w", err)
	}
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".history") {
			fi, err := os.Stat(filepath.Join(dir, e.Name()))
			if err != nil {
				return nil, fmt.Errorf("file backup: %w", err)
			}
			items = append(items, item{rel: "pg_wal/" + e.Name(), info: fi})
		}
	}
	last := SegmentStart(stop-1, segSize)
	for seg := SegmentStart(start, segSize); seg <= last; seg += LSN(segSize) {
		name := WALFileName(tli, seg, segSize)
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("file backup: WAL of the backup: %w", err)
		}
		if fi.Size() != segSize {
			return nil, fmt.Errorf("file backup: WAL segment %s has %d bytes, want %d", name, fi.Size(), segSize)
		}
		items = append(items, item{rel: "pg_wal/" + name, info: fi})
	}
	return items, nil
}

// recordPlan decides, file by file, what FileBackup records and reuses.
type recordPlan struct {
	res  *BackupResult
	prev *PreviousFiles
}

// copySet is what copyTree copies: items, and, with marker set, each
// regular file marked as a file record, those with reuse set reused. With
// sender set, the files' bytes are not read but passed to the sink.
type copySet struct {
	items  []item
	sender FileSender
	marker FileMarker
	stamps []string // per item
	reuse  []int64  // per item: the record's length when reused, else 0
	res    *BackupResult
}

// plainCopy copies items, the entry's writer w, without file records.
func plainCopy(w io.Writer, items []item) copySet {
	t := copySet{items: items}
	t.sender, _ = w.(FileSender)
	return t
}

// plan stamps the files of one tar entry and picks those to reuse; w is
// the entry's writer. A nil plan marks nothing.
func (p *recordPlan) plan(entry string, w io.Writer, items []item) copySet {
	t := plainCopy(w, items)
	if p == nil {
		return t
	}
	t.marker, _ = w.(FileMarker)
	t.res = p.res
	t.stamps = make([]string, len(items))
	t.reuse = make([]int64, len(items))
	var prev map[string]PreviousRecord
	if p.prev != nil {
		prev = p.prev.Records[entry]
	}
	for i := range items {
		it := &items[i]
		if !it.info.Mode().IsRegular() {
			continue
		}
		stamp, changed := fileStamp(it.info)
		t.stamps[i] = stamp
		if stamp == "" || it.rel == "global/pg_control" {
			continue
		}
		rec, ok := prev[it.rel]
		if !ok || rec.Stamp != stamp || !changed.Before(p.prev.Ref.Add(-ClockMargin)) {
			continue
		}
		if n := tarLength(header(it)); n == rec.Length {
			t.reuse[i] = n
		}
	}
	return t
}

// tarLength is the number of bytes a tar member with header h takes.
func tarLength(h *tar.Header) int64 {
	var c countWriter
	tw := tar.NewWriter(&c)
	if err := tw.WriteHeader(h); err != nil {
		return -1
	}
	return int64(c) + (h.Size+511)/512*512
}

type countWriter int64

func (c *countWriter) Write(p []byte) (int, error) { *c += countWriter(len(p)); return len(p), nil }

// writeTar writes the tar entry name, filled by fill, to sink.
func writeTar(ctx context.Context, sink EntrySink, name string, fill func(*tar.Writer, io.Writer) error) error {
	w, err := sink.Create(ctx, name)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	err = fill(tw, w)
	if err == nil {
		err = tw.Close()
	}
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("file backup: %s: %w", name, err)
	}
	return nil
}

func addFile(tw *tar.Writer, name string, content []byte, mtime time.Time) error {
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: int64(len(content)),
		Mode: 0o600, ModTime: mtime.Truncate(time.Second)}); err != nil {
		return err
	}
	_, err := tw.Write(content)
	return err
}

// pieceSize is how much of a file one worker reads at a time.
const pieceSize = 1 << 20

// piece is one part of a file, read by a worker and written in order.
type piece struct {
	it    *item
	i     int // it's index
	first bool
	off   int64
	n     int64
	buf   []byte
	gone  bool // the file vanished before its first piece was read
	// pass: the whole file goes to the sink's FileSender; a worker only
	// opens it, as file, which the writer passes and closes.
	pass bool
	file *os.File
	err  error
	done chan struct{}
}

// copyTree writes items (directories and files under root) into tw in
// order, while workers read the files ahead, a piece each. A file is stored
// with the size it had when listed: one that shrank meanwhile is padded
// with zeros, one that grew is cut (WAL replay from the backup's start
// rewrites both), one that vanished is left out (replay drops it too).
func copyTree(ctx context.Context, tw *tar.Writer, root string, t copySet, workers int) error {
	items := t.items
	if t.stamps != nil && t.marker == nil {
		return errors.New("the sink takes no file records")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pool := sync.Pool{New: func() any { b := make([]byte, pieceSize); return &b }}
	jobs := make(chan *piece, workers)
	order := make(chan *piece, 4*workers)

	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var (
				f    *os.File
				open *item
			)
			defer func() {
				if f != nil {
					f.Close()
				}
			}()
			for p := range jobs {
				if p.pass {
					f, err := os.Open(filepath.Join(root, filepath.FromSlash(p.it.rel)))
					switch {
					case err == nil:
						p.file = f
					case errors.Is(err, fs.ErrNotExist):
						p.gone = true
					default:
						p.err = fmt.Errorf("read %s: %w", p.it.rel, err)
					}
					close(p.done)
					continue
				}
				if open != p.it {
					if f != nil {
						f.Close()
						f = nil
					}
					var err error
					f, err = os.Open(filepath.Join(root, filepath.FromSlash(p.it.rel)))
					open = p.it
					if err != nil && !errors.Is(err, fs.ErrNotExist) {
						p.err = fmt.Errorf("read %s: %w", p.it.rel, err)
					}
				}
				if p.err == nil {
					p.gone = f == nil && p.first
					bp := pool.Get().(*[]byte)
					p.buf = (*bp)[:p.n]
					k := 0
					if f != nil {
						var err error
						k, err = f.ReadAt(p.buf, p.off)
						if err != nil && err != io.EOF {
							p.err = fmt.Errorf("read %s: %w", p.it.rel, err)
						}
					}
					clear(p.buf[k:]) // shrank or vanished meanwhile
				}
				close(p.done)
			}
		}()
	}

	// queue hands p to the writer, in order, and to a worker when it has
	// work (bytes to read, or a file to open); false once cancelled.
	queue := func(p *piece) bool {
		select {
		case order <- p:
		case <-ctx.Done():
			return false
		}
		if p.n == 0 && !p.pass {
			close(p.done)
			return true
		}
		select {
		case jobs <- p:
			return true
		case <-ctx.Done():
			close(p.done)
			return false
		}
	}
	go func() {
		defer close(order)
		defer close(jobs)
		for i := range items {
			it := &items[i]
			size := int64(0)
			if it.info.Mode().IsRegular() && (t.reuse == nil || t.reuse[i] == 0) {
				size = it.info.Size()
			}
			if t.sender != nil && size > 0 {
				if !queue(&piece{it: it, i: i, first: true, pass: true, done: make(chan struct{})}) {
					return
				}
				continue
			}
			for off := int64(0); off == 0 || off < size; off += pieceSize {
				if !queue(&piece{it: it, i: i, first: off == 0, off: off, n: min(pieceSize, size-off), done: make(chan struct{})}) {
					return
				}
			}
		}
	}()

	err := func() error {
		skip := false
		inRecord := false
		mark := func(key, stamp string, length int64, reuse bool) error {
			if err := tw.Flush(); err != nil { // the previous member's padding
				return err
			}
			inRecord = key != ""
			return t.marker.MarkFile(key, stamp, length, reuse)
		}
		for p := range order {
			<-p.done
			if p.err != nil {
				return p.err
			}
			if p.first {
				skip = p.gone
				i := p.i
				switch {
				case t.marker == nil:
				case t.reuse[i] > 0:
					if err := mark(p.it.rel, t.stamps[i], t.reuse[i], true); err != nil {
						return err
					}
					t.res.FilesReused++
					t.res.BytesReused += t.reuse[i]
					skip = true
				case skip:
				case p.it.info.Mode().IsRegular():
					if err := mark(p.it.rel, t.stamps[i], 0, false); err != nil {
						return err
					}
					t.res.FilesRead++
				case inRecord:
					if err := mark("", "", 0, false); err != nil {
						return err
					}
				}
				switch {
				case skip:
				case p.file != nil:
					err := sendMember(tw, t.sender, header(p.it), p.file)
					p.file.Close()
					p.file = nil
					if err != nil {
						return err
					}
				default:
					if err := tw.WriteHeader(header(p.it)); err != nil {
						return err
					}
				}
			}
			if p.buf != nil {
				var werr error
				if !skip {
					_, werr = tw.Write(p.buf)
				}
				b := p.buf[:cap(p.buf)]
				pool.Put(&b)
				if werr != nil {
					return werr
				}
			}
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if inRecord { // what follows belongs to no record
			return mark("", "", 0, false)
		}
		return nil
	}()
	cancel()
	for p := range order { // let the producer and workers finish
		<-p.done
		if p.file != nil {
			p.file.Close()
		}
	}
	wg.Wait()
	return err
}

// sendMember writes the tar member of a regular file whose bytes the sink
// reads itself: its header, the file passed to s, then the padding to the
// next block. It bypasses tw, whose previous member it pads first; tw then
// goes on with the next member.
func sendMember(tw *tar.Writer, s FileSender, h *tar.Header, f *os.File) error {
	if err := tw.Flush(); err != nil {
		return err
	}
	var hdr bytes.Buffer
	if err := tar.NewWriter(&hdr).WriteHeader(h); err != nil {
		return err
	}
	if _, err := s.Write(hdr.Bytes()); err != nil {
		return err
	}
	if err := s.SendFile(f, 0, h.Size); err != nil {
		return err
	}
	_, err := s.Write(make([]byte, (512-h.Size%512)%512)) // tar blocks are 512 bytes
	return err
}

func header(it *item) *tar.Header {
	// Whole seconds keep the headers plain ustar (no PAX records).
	h := &tar.Header{Name: it.rel, ModTime: it.info.ModTime().Truncate(time.Second), Mode: int64(it.info.Mode().Perm())}
	if it.info.IsDir() {
		h.Typeflag, h.Name = tar.TypeDir, it.rel+"/"
	} else {
		h.Typeflag, h.Size = tar.TypeReg, it.info.Size()
	}
	return h
}
