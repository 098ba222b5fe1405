package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/amber-backup/amber/plugins/api"
	"github.com/amber-backup/amber/sidecar/archive"
	"github.com/amber-backup/amber/sidecar/pluginhost"
	"github.com/amber-backup/amber/sidecar/repo"
	"github.com/spf13/cobra"
)

func (e *env) archiveCommand() *cobra.Command {
	var (
		engine, dsn, slot string
		flush             time.Duration
	)
	cmd := &cobra.Command{
		Use:   "archive",
		Short: "Archive the database's log (WAL) continuously, in the foreground",
		Long: `Stream the database's log into the repository until stopped. For PostgreSQL
this is streaming replication through a physical replication slot: the slot
advances only once WAL is durable in the repository, so the server never
recycles WAL that is not safe. Partial segments are made durable at least every
--flush-interval under load, which bounds the recovery point; completed
segments replace them. A timeline switch (a promoted standby) is followed; a
gap is reported, never skipped.

SIGTERM or SIGINT make everything received durable, then amber exits 0.`,
		Example: "  amber archive --engine postgres --dsn 'host=db user=amber_repl'",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if engine == "" || dsn == "" {
				return usagef("archive needs --engine and --dsn")
			}
			return e.runArchive(cmd.Context(), engine, dsn, slot, flush)
		},
	}
	cmd.Flags().StringVar(&engine, "engine", "", "database engine plugin: postgres")
	cmd.Flags().StringVar(&dsn, "dsn", os.Getenv("AMBER_DSN"), "connection string of a role with REPLICATION (env AMBER_DSN)")
	cmd.Flags().StringVar(&slot, "slot", "amber", "replication slot name")
	cmd.Flags().DurationVar(&flush, "flush-interval", 500*time.Millisecond, "make log durable at least this often under load (bounds the recovery point)")
	return cmd
}

func (e *env) runArchive(ctx context.Context, engine, dsn, slot string, flush time.Duration) error {
	host, eng, err := e.openEngine(ctx, engine)
	if err != nil {
		return err
	}
	defer host.Close()
	target := api.Target{DSN: api.Secret(dsn)}
	probe, err := eng.Probe(ctx, target)
	if err != nil {
		return err
	}
	if !probe.Healthy && probe.Detail != "" {
		return fmt.Errorf("%s is not ready to archive: %s", engine, probe.Detail)
	}
	r, err := e.openRepo(ctx)
	if err != nil {
		return err
	}
	defer r.Close()
	stream := streamName(engine, probe.SystemID)
	sink := archive.NewSink(r, stream, e.log)
	fmt.Fprintf(e.stderr, "archiving %s (%s) into stream %s; stop with SIGTERM\n", engine, version(probe.ServerVersion), stream)
	for attempt := 0; ; attempt++ {
		req := api.ArchiveRequest{Target: target, FlushInterval: flush, Options: map[string]string{"slot": slot}}
		if req.Start, err = archivedEnd(ctx, r, stream); err != nil {
			return err
		}
		done := make(chan error, 1)
		go func() { done <- eng.Archive(context.WithoutCancel(ctx), req, sink, sink.Durable()) }()
		select {
		case err = <-done:
		case <-ctx.Done():
			sink.CloseDurable() // the plugin flushes what it holds, then returns
			err = <-done
		}
		if err == nil || ctx.Err() != nil || !errors.Is(err, pluginhost.ErrExited) {
			break
		}
		// The plugin died (a crash, OOM kill): start it again and resume
		// where the repository ends. The slot kept the WAL meanwhile.
		delay := min(time.Duration(attempt+1)*time.Second, 30*time.Second)
		e.log.Warn("engine plugin died while archiving; restarting it", "err", err, "retry_in", delay)
		select {
		case <-ctx.Done():
			err = nil
		case <-time.After(delay):
			continue
		}
		break
	}
	sink.Stats.Lock()
	st := map[string]any{"stream": stream, "segments": sink.Stats.Segments, "bytes": sink.Stats.Bytes,
		"last_position": sink.Stats.LastEnd.String()}
	sink.Stats.Unlock()
	if err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("archive %s: %w", engine, err)
	}
	if e.jsonOut {
		return e.printJSON(st)
	}
	fmt.Fprintf(e.stderr, "archived %d segments (%s) up to %s\n", st["segments"], humanBytes(st["bytes"].(int64)), st["last_position"])
	return nil
}

// version shortens "PostgreSQL 15.20 (Debian ...) on x86_64 ..." to its first two words.
func version(v string) string {
	f := strings.Fields(v)
	return strings.Join(f[:min(2, len(f))], " ")
}

// archivedEnd is where archiving resumes: the end of the newest segment
// of the stream (zero when the stream is empty).
func archivedEnd(ctx context.Context, r *repo.Repository, stream string) (api.Position, error) {
	segs, err := r.Segments(ctx, stream)
	if err != nil {
		return api.Position{}, err
	}
	var newest *repo.Segment
	for i, s := range segs {
		if s.Start != s.End && (newest == nil || s.Epoch > newest.Epoch || (s.Epoch == newest.Epoch && s.End > newest.End)) {
			newest = &segs[i]
		}
	}
	if newest == nil {
		return api.Position{}, nil
	}
	full, _, err := r.GetSegment(ctx, newest.ObjectName())
	if err != nil {
		return api.Position{}, err
	}
	return archive.EndPosition(full)
}

// PostgreSQL WAL file names, for wal-push and wal-fetch (the archive_command
// and restore_command interface, which speaks in file names).
var (
	walNameRE     = regexp.MustCompile(`^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})(\.partial)?$`)
	backupFileRE  = regexp.MustCompile(`^[0-9A-F]{24}\.[0-9A-F]{8}\.backup$`)
	historyNameRE = regexp.MustCompile(`^([0-9A-F]{8})\.history$`)
)

// walSegment maps a WAL or history file name onto the repository segment
// it is stored as (epoch = timeline, start = LSN of its first byte).
func walSegment(stream, name string, segSize uint64) (repo.Segment, bool) {
	if m := historyNameRE.FindStringSubmatch(name); m != nil {
		tli, _ := strconv.ParseUint(m[1], 16, 32)
		return repo.Segment{Stream: stream, Epoch: uint32(tli), Name: name}, true
	}
	m := walNameRE.FindStringSubmatch(name)
	if m == nil {
		return repo.Segment{}, false
	}
	tli, _ := strconv.ParseUint(m[1], 16, 32)
	hi, _ := strconv.ParseUint(m[2], 16, 32)
	lo, _ := strconv.ParseUint(m[3], 16, 32)
	start := hi<<32 + lo*segSize
	return repo.Segment{Stream: stream, Epoch: uint32(tli), Start: start, End: start + segSize, Name: name,
		Partial: m[4] != ""}, true
}

func (e *env) walCommands() []*cobra.Command {
	var (
		stream  string
		segSize uint64
	)
	fetch := &cobra.Command{
		Use:   "wal-fetch WALFILE DEST",
		Short: "restore_command for PostgreSQL: fetch one archived WAL file",
		Long: `Copy the archived WAL file (or timeline history file) named WALFILE to DEST.
Use it as PostgreSQL's restore_command; amber restore --engine postgres sets it
up by itself. A segment archived only partially (the newest one) is served
padded with zeros to the segment size, which recovery reads as the end of WAL.
Exit status 1 with no output file means the file is not in the archive.`,
		Example: `  restore_command = 'amber wal-fetch --repo /srv/backups --password-file /etc/amber/pw --stream postgres-7301234567890123456 %f %p'`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) != 2 {
				return usagef("wal-fetch takes WALFILE and DEST (%%f %%p)")
			}
			return e.walFetch(cmd.Context(), stream, args[0], args[1], segSize)
		},
	}
	push := &cobra.Command{
		Use:   "wal-push WALPATH",
		Short: "archive_command for PostgreSQL: archive one completed WAL file",
		Long: `Store the WAL file at WALPATH in the repository and exit 0 only once it is
durable, so PostgreSQL recycles it only then. For users who prefer
archive_command over 'amber archive' (which streams, for a recovery point of
about a second instead of a segment).`,
		Example: `  archive_command = 'amber wal-push --repo /srv/backups --password-file /etc/amber/pw --stream postgres-7301234567890123456 %p'`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("wal-push takes WALPATH (%%p)")
			}
			return e.walPush(cmd.Context(), stream, args[0], segSize)
		},
	}
	for _, c := range []*cobra.Command{fetch, push} {
		c.Flags().StringVar(&stream, "stream", "", "log stream: postgres-<system identifier> (see `amber ls`)")
		c.Flags().Uint64Var(&segSize, "wal-segment-size", 16<<20, "the server's WAL segment size in bytes")
		_ = c.MarkFlagRequired("stream")
	}
	return []*cobra.Command{fetch, push}
}

func (e *env) walFetch(ctx context.Context, stream, name, dest string, segSize uint64) error {
	want, ok := walSegment(stream, name, segSize)
	if !ok {
		return fmt.Errorf("%s is not a WAL or history file name", name)
	}
	r, err := e.openRepo(ctx)
	if err != nil {
		return err
	}
	defer r.Close()
	segs, err := r.Segments(ctx, stream)
	if err != nil {
		return err
	}
	var best *repo.Segment
	for i, s := range segs { // complete before partial, longer first
		if s.Epoch == want.Epoch && s.Start == want.Start && (want.Start == want.End) == (s.Start == s.End) {
			best = &segs[i]
			break
		}
	}
	if best == nil {
		return fmt.Errorf("%s is not in the archive", name)
	}
	_, data, err := r.GetSegment(ctx, best.ObjectName())
	if err != nil {
		return err
	}
	if best.Partial && uint64(len(data)) < segSize {
		data = append(data, make([]byte, segSize-uint64(len(data)))...)
	}
	tmp := dest + ".amber-tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, dest)
}

func (e *env) walPush(ctx context.Context, stream, path string, segSize uint64) error {
	if backupFileRE.MatchString(filepath.Base(path)) {
		// A backup history file is informational only; amber's manifests
		// record where each backup starts and stops.
		return nil
	}
	seg, ok := walSegment(stream, filepath.Base(path), segSize)
	if !ok {
		return fmt.Errorf("%s is not a WAL, partial WAL or history file", path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	// The file's last write bounds the commit times inside it (the
	// streaming archiver records the server's clock the same way).
	if st, err := os.Stat(path); err == nil && seg.Start != seg.End {
		seg.LastTime = st.ModTime().UTC()
	}
	if seg.Partial {
		// The last, unfinished segment of a timeline (archived on promotion).
		seg.End = seg.Start + uint64(len(data))
	} else if seg.Start != seg.End && uint64(len(data)) != segSize {
		return fmt.Errorf("%s is %d bytes, not the WAL segment size %d (set --wal-segment-size)", path, len(data), segSize)
	}
	r, err := e.openRepo(ctx)
	if err != nil {
		return err
	}
	defer r.Close()
	// Archiving the same file twice is fine when the content is equal.
	if _, old, err := r.GetSegment(ctx, seg.ObjectName()); err == nil {
		if bytes.Equal(old, data) {
			return nil
		}
		return fmt.Errorf("%s is already archived with different content; refusing to overwrite", seg.Name)
	}
	return r.PutSegment(ctx, seg, data)
}

// checkTarget refuses a target time outside the archived window.
func checkTarget(ctx context.Context, r *repo.Repository, stream string, t time.Time) error {
	cov, err := archive.Cover(ctx, r, stream)
	if err != nil {
		return err
	}
	var latest time.Time
	for _, rg := range cov.Ranges {
		if rg.LastTime.After(latest) {
			latest = rg.LastTime
		}
	}
	if latest.IsZero() || t.After(latest) {
		return fmt.Errorf("target %s is after the recoverable window, which ends at %s; choose an earlier time or omit the target for the latest",
			t.UTC().Format(time.RFC3339), latest.UTC().Format(time.RFC3339))
	}
	return nil
}
