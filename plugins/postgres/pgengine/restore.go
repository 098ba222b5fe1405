package pgengine

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/amber-backup/amber/plugins/api"
	"github.com/amber-backup/amber/plugins/internal/durable"
)

// Source gives back the entries a Sink received.
type Source interface {
	Entries(ctx context.Context) ([]string, error)
	Open(ctx context.Context, name string) (io.ReadCloser, error)
}

// Recovery configures archive recovery after a physical restore. At most one
// target may be set; none means "replay all archived WAL".
type Recovery struct {
	// RestoreCommand fetches WAL (%f file name, %p destination path), e.g.
	// `amber restore-wal %f %p`. Required for archive recovery.
	RestoreCommand string
	TargetTime     time.Time // recovery_target_time
	TargetLSN      LSN       // recovery_target_lsn
	TargetXID      string    // recovery_target_xid
	TargetName     string    // recovery_target_name (a pg_create_restore_point name)
	Immediate      bool      // recovery_target = 'immediate': stop once consistent
	// Exclusive stops just before the target instead of just after it
	// (recovery_target_inclusive = off).
	Exclusive bool
	// TargetTimeline is recovery_target_timeline; default "latest".
	TargetTimeline string
	// Action is recovery_target_action: promote (default), pause or shutdown.
	Action string
	// Settings are further postgresql.auto.conf settings for the restored
	// server, e.g. archive_mode = off so a restored copy does not archive
	// into the original's archive.
	Settings map[string]string
}

// RestoreOptions tune PhysicalRestore.
type RestoreOptions struct {
	// BaseExtracted says ExtractBase already laid out base.tar in the data
	// directory; src then holds only the other entries.
	BaseExtracted bool
	// Recovery, when set, writes recovery.signal and the recovery settings.
	// Without it the server starts from the backup and replays only the WAL
	// inside it (the backup must include WAL).
	Recovery *Recovery
	// TablespaceMapping relocates tablespaces (OID -> new empty directory).
	// Unmapped tablespaces go back to their original location.
	TablespaceMapping map[uint32]string
	// Owner, when set, is given every restored file (chown), so the server
	// can run as that user when the restore runs as root.
	Owner *Owner
}

// Owner is a numeric file owner.
type Owner struct{ UID, GID int }

// PhysicalRestore writes a physical backup from src into dataDir, which must
// be absent or empty, and configures recovery. The data directory gets mode
// 0700, as PostgreSQL requires.
func PhysicalRestore(ctx context.Context, dataDir string, src Source, opts RestoreOptions) error {
	entries, err := src.Entries(ctx)
	if err != nil {
		return fmt.Errorf("restore: list entries: %w", err)
	}
	have := map[string]bool{}
	for _, e := range entries {
		have[e] = true
	}
	if !opts.BaseExtracted {
		if !have[BaseTar] {
			return fmt.Errorf("restore: backup has no %s", BaseTar)
		}
		r, err := src.Open(ctx, BaseTar)
		if err != nil {
			return fmt.Errorf("restore: open %s: %w", BaseTar, err)
		}
		err = ExtractBase(ctx, dataDir, r)
		r.Close()
		if err != nil {
			return err
		}
	}
	tbs, err := restoreTablespaces(ctx, src, entries, dataDir, opts)
	if err != nil {
		return err
	}
	if have[ManifestEntry] {
		if err := copyEntry(ctx, src, ManifestEntry, filepath.Join(dataDir, ManifestEntry)); err != nil {
			return err
		}
	}
	// A backup of a standby may carry standby.signal; a restore is not a standby.
	os.Remove(filepath.Join(dataDir, "standby.signal"))
	if opts.Recovery != nil {
		if err := writeRecovery(dataDir, opts.Recovery); err != nil {
			return err
		}
	}
	// Symlinks last: nothing is written after them.
	if err := linkTablespaces(dataDir, tbs); err != nil {
		return err
	}
	dirs := []string{dataDir}
	for _, t := range tbs {
		dirs = append(dirs, t.Location)
	}
	if opts.Owner != nil {
		for _, d := range dirs {
			if err := chownTree(d, *opts.Owner); err != nil {
				return fmt.Errorf("restore: %w", err)
			}
		}
	}
	// Durable before the restore says it is done (package durable).
	for _, d := range dirs {
		if err := durable.Sync(d); err != nil {
			return fmt.Errorf("restore: %w", err)
		}
	}
	return nil
}

func checkEmptyDir(dir string) error {
	f, err := os.Open(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	defer f.Close()
	names, err := f.Readdirnames(2)
	if err != nil && err != io.EOF {
		return fmt.Errorf("restore: %s: %w", dir, err)
	}
	names = slices.DeleteFunc(names, func(n string) bool { return n == api.RestoringMark })
	if len(names) > 0 {
		return fmt.Errorf("restore: %s is not empty; restore needs an empty or absent directory", dir)
	}
	return nil
}

func restoreTablespaces(ctx context.Context, src Source, entries []string, dataDir string, opts RestoreOptions) ([]Tablespace, error) {
	tbs := readTablespaceMap(dataDir)
	byOID := map[uint32]int{}
	for i, t := range tbs {
		byOID[t.OID] = i
	}
	for _, e := range entries {
		if e == BaseTar || !strings.HasSuffix(e, ".tar") {
			continue
		}
		oid64, err := strconv.ParseUint(strings.TrimSuffix(e, ".tar"), 10, 32)
		if err != nil {
			continue
		}
		oid := uint32(oid64)
		i, ok := byOID[oid]
		if !ok {
			tbs = append(tbs, Tablespace{OID: oid})
			i = len(tbs) - 1
		}
		if loc, ok := opts.TablespaceMapping[oid]; ok {
			tbs[i].Location = loc
		}
		loc := tbs[i].Location
		if loc == "" || !filepath.IsAbs(loc) {
			return nil, fmt.Errorf("restore: tablespace %d has no absolute location; map it in TablespaceMapping", oid)
		}
		if err := checkEmptyDir(loc); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(loc, 0o700); err != nil {
			return nil, fmt.Errorf("restore: %w", err)
		}
		if err := extractEntry(ctx, src, e, loc, true); err != nil {
			return nil, err
		}
	}
	for _, t := range tbs {
		if t.Location == "" || !filepath.IsAbs(t.Location) {
			return nil, fmt.Errorf("restore: tablespace %d has no absolute location; map it in TablespaceMapping", t.OID)
		}
	}
	return tbs, nil
}

// linkTablespaces links pg_tblspc/<oid> to each tablespace's location, as
// pg_basebackup's plain format does, and drops tablespace_map, which would
// otherwise redo the links. It runs after every file of the restore is
// written, so no write can pass through a link. The locations come from
// the backup's tablespace map or the restore's TablespaceMapping, never
// from a tar entry.
func linkTablespaces(dataDir string, tbs []Tablespace) error {
	t, err := openTree(dataDir)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	defer t.Close()
	if len(tbs) > 0 {
		if err := t.Mkdir("pg_tblspc", 0o700); err != nil {
			return fmt.Errorf("restore: %w", err)
		}
		dir, err := t.dir([]string{"pg_tblspc"}, false, 0)
		if err != nil {
			return fmt.Errorf("restore: %w", err)
		}
		defer unix.Close(dir)
		for _, tb := range tbs {
			if err := unix.Symlinkat(tb.Location, dir, strconv.FormatUint(uint64(tb.OID), 10)); err != nil {
				return fmt.Errorf("restore: link tablespace %d to %s: %w", tb.OID, tb.Location, err)
			}
		}
	}
	if err := unix.Unlinkat(t.fd, tablespaceMap, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("restore: remove %s: %w", tablespaceMap, err)
	}
	return nil
}

func readTablespaceMap(dataDir string) []Tablespace {
	f, err := os.Open(filepath.Join(dataDir, tablespaceMap))
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []Tablespace
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		oid, loc, ok := strings.Cut(sc.Text(), " ")
		n, err := strconv.ParseUint(oid, 10, 32)
		if !ok || err != nil {
			continue
		}
		out = append(out, Tablespace{OID: uint32(n), Location: strings.ReplaceAll(loc, `\\`, `\`)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].OID < out[j].OID })
	return out
}

func copyEntry(ctx context.Context, src Source, name, dst string) error {
	r, err := src.Open(ctx, name)
	if err != nil {
		return fmt.Errorf("restore: open %s: %w", name, err)
	}
	defer r.Close()
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return fmt.Errorf("restore: %s: %w", name, err)
	}
	return f.Close()
}

// extractEntry unpacks a tar entry into dir, refusing paths that escape it.
func extractEntry(ctx context.Context, src Source, name, dir string, tablespace bool) error {
	r, err := src.Open(ctx, name)
	if err != nil {
		return fmt.Errorf("restore: open %s: %w", name, err)
	}
	defer r.Close()
	return extractTar(ctx, r, name, dir, tablespace)
}

// ExtractBase unpacks the main data directory's tar (base.tar), read as a
// stream, into dataDir, which must be empty or absent. A PhysicalRestore
// with RestoreOptions.BaseExtracted then completes the restore, so a
// backup arriving as a stream never has to be stored whole first.
func ExtractBase(ctx context.Context, dataDir string, r io.Reader) error {
	if err := checkEmptyDir(dataDir); err != nil {
		return err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if err := os.Chmod(dataDir, 0o700); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	return extractTar(ctx, r, BaseTar, dataDir, false)
}

// extractTar unpacks a tar stream into dir. Every entry is written strictly
// beneath dir (see tree): absolute names, ".." components, hard links and
// writes through symlinks are refused. The archive's own symlinks are never
// created: a pg_tblspc/<oid> link is made later by PhysicalRestore from the
// tablespace map and the restore's TablespaceMapping, never from a target a
// tar entry names, and a symlinked pg_wal becomes a plain directory.
func extractTar(ctx context.Context, r io.Reader, name, dir string, tablespace bool) error {
	t, err := openTree(dir)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	defer t.Close()
	tr := tar.NewReader(bufio.NewReaderSize(r, 1<<20))
	// Files are written 1 MiB at a time: io.Copy into an *os.File would
	// take os.File.ReadFrom, which writes 32 KiB at a time from a tar stream.
	buf := make([]byte, 1<<20)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("restore: read %s: %w", name, err)
		}
		comps, err := splitRel(hdr.Name)
		if err != nil {
			return fmt.Errorf("restore: %s: %w; the backup is damaged or was not made by amber", name, err)
		}
		clean := strings.Join(comps, "/")
		mode := os.FileMode(hdr.Mode) & 0o777
		switch hdr.Typeflag {
		case tar.TypeDir:
			if clean == "" {
				continue
			}
			if err := t.Mkdir(clean, mode); err != nil {
				return fmt.Errorf("restore: %s: %w", name, err)
			}
		case tar.TypeReg:
			f, err := t.Create(clean, mode|0o600)
			if err != nil {
				return fmt.Errorf("restore: %s: %w", name, err)
			}
			w := durable.NewWriter(f)
			_, err = io.CopyBuffer(w, tr, buf)
			w.End()
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("restore: %s: %s: %w", name, hdr.Name, err)
			}
			_ = t.SetTimes(clean, hdr.ModTime)
		case tar.TypeSymlink:
			switch {
			case !tablespace && clean == "pg_wal":
				// WAL goes into the data directory, wherever the
				// original's pointed.
				if err := t.Mkdir(clean, 0o700); err != nil {
					return fmt.Errorf("restore: %s: %w", name, err)
				}
			case !tablespace && isTablespaceLink(clean):
				// Made from the tablespace map once everything is written.
			default:
				return fmt.Errorf("restore: %s: unexpected symlink %q", name, hdr.Name)
			}
		default:
			return fmt.Errorf("restore: %s: unsupported tar entry type %q for %q", name, hdr.Typeflag, hdr.Name)
		}
	}
}

// isTablespaceLink reports whether name is pg_tblspc/<oid>.
func isTablespaceLink(name string) bool {
	oid, ok := strings.CutPrefix(name, "pg_tblspc/")
	if !ok {
		return false
	}
	_, err := strconv.ParseUint(oid, 10, 32)
	return err == nil
}

func writeRecovery(dataDir string, rc *Recovery) error {
	targets := 0
	var lines []string
	add := func(k, v string) { lines = append(lines, k+" = "+quoteLiteral(v)) }
	if rc.RestoreCommand == "" {
		return errors.New("restore: recovery needs a restore_command")
	}
	add("restore_command", rc.RestoreCommand)
	if !rc.TargetTime.IsZero() {
		targets++
		add("recovery_target_time", rc.TargetTime.UTC().Format("2006-01-02 15:04:05.999999")+"+00")
	}
	if rc.TargetLSN != 0 {
		targets++
		add("recovery_target_lsn", rc.TargetLSN.String())
	}
	if rc.TargetXID != "" {
		targets++
		add("recovery_target_xid", rc.TargetXID)
	}
	if rc.TargetName != "" {
		targets++
		add("recovery_target_name", rc.TargetName)
	}
	if rc.Immediate {
		targets++
		add("recovery_target", "immediate")
	}
	if targets > 1 {
		return errors.New("restore: set at most one recovery target")
	}
	if rc.Exclusive {
		add("recovery_target_inclusive", "off")
	}
	tl := rc.TargetTimeline
	if tl == "" {
		tl = "latest"
	}
	add("recovery_target_timeline", tl)
	keys := make([]string, 0, len(rc.Settings))
	for k := range rc.Settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		add(k, rc.Settings[k])
	}
	action := rc.Action
	switch action {
	case "":
		action = "promote"
	case "promote", "pause", "shutdown":
	default:
		return fmt.Errorf("restore: recovery action %q is not promote, pause or shutdown", action)
	}
	if targets > 0 {
		add("recovery_target_action", action)
	}
	f, err := os.OpenFile(filepath.Join(dataDir, autoConf), os.O_CREATE|os.O_APPEND|os.O_WRONLY|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	_, err = fmt.Fprintf(f, "\n# recovery settings written by amber restore\n%s\n", strings.Join(lines, "\n"))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	sig, err := os.OpenFile(filepath.Join(dataDir, recoverySignal), os.O_CREATE|os.O_TRUNC|os.O_WRONLY|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	return sig.Close()
}

func chownTree(root string, o Owner) error {
	return filepath.Walk(root, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, o.UID, o.GID)
	})
}

// DirSink stores each entry as a file in a directory (for tests, the CLI
// and local use).
type DirSink string

// Entry writes r to <dir>/<name>.
func (d DirSink) Entry(ctx context.Context, name string, r io.Reader) error {
	if name != filepath.Base(name) {
		return fmt.Errorf("entry name %q is not a plain file name", name)
	}
	f, err := os.Create(filepath.Join(string(d), name))
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Create starts <dir>/<name> (DirSink is also an EntrySink).
func (d DirSink) Create(ctx context.Context, name string) (io.WriteCloser, error) {
	if name != filepath.Base(name) {
		return nil, fmt.Errorf("entry name %q is not a plain file name", name)
	}
	return os.Create(filepath.Join(string(d), name))
}

// Entries lists the files of the directory.
func (d DirSink) Entries(ctx context.Context) ([]string, error) {
	des, err := os.ReadDir(string(d))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, de := range des {
		if de.Type().IsRegular() {
			out = append(out, de.Name())
		}
	}
	return out, nil
}

// Open opens <dir>/<name>.
func (d DirSink) Open(ctx context.Context, name string) (io.ReadCloser, error) {
	return os.Open(filepath.Join(string(d), name))
}

var (
	_ Sink   = DirSink("")
	_ Source = DirSink("")
)
