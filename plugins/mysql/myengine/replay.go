package myengine

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ErrNoMoreLog is returned by a ReplayFetch when no archived segment holds
// log after the position asked for.
var ErrNoMoreLog = errors.New("no more archived binlog")

// ReplayFetch returns the archived segment holding log just after after:
// its start and end positions and its bytes.
type ReplayFetch func(ctx context.Context, after Pos) (start, end Pos, data io.ReadCloser, err error)

// ReplayOptions configure Replay.
type ReplayOptions struct {
	From Pos // where the restored copy stands (the dump's consistent position)
	// At most one of StopTime, StopPos and StopGTID; none: all archived
	// log.
	StopTime time.Time
	StopPos  Pos
	// StopGTID is a MariaDB GTID position ("0-1-42", one per domain,
	// comma-separated): replay ends with the transaction that brings the
	// copy's GTID position there in every domain it names (gtidTarget).
	StopGTID  string
	Inclusive bool   // apply the transaction at StopTime or StopGTID
	Database  string // the database the dump was taken of; the target must have the same name
	// AllDatabases applies the binlog of every database (a physical
	// copy holds them all); Database is then ignored.
	AllDatabases bool
	BinDir       string // mariadb-binlog/mysqlbinlog and the client; empty: PATH
	// CheckOnly walks the archived log to the stop point and reports it,
	// applying nothing: Replay and ReplayDataDir then touch no server and
	// no directory. It fails as a replay would (a target the log does not
	// reach, or one the start already passed).
	CheckOnly bool
}

// Replayed is where replay stopped.
type Replayed struct {
	Pos      Pos
	Time     time.Time // last commit applied (binlog timestamps have whole seconds)
	Segments int
}

// Replay applies archived binlog to d's database from o.From up to the
// stop point: segments are fetched one after another, their events before
// o.From (and after o.StopPos) dropped, and the rest piped through
// mariadb-binlog (mysqlbinlog) --database=<dumped database>
// [--stop-datetime] into the client. The binlog names databases, so the
// target database must have the dumped database's name.
func Replay(ctx context.Context, d DSN, o ReplayOptions, fetch ReplayFetch) (*Replayed, error) {
	cfg, err := d.Config()
	if err != nil {
		return nil, err
	}
	if o.AllDatabases {
		o.Database = ""
	} else if o.Database != "" && cfg.DBName != o.Database {
		return nil, fmt.Errorf("replaying binlog into database %q: the binlog names database %q; restore into a database of that name (on another server) for a point-in-time restore", cfg.DBName, o.Database)
	}
	sp, err := spoolLog(ctx, o, fetch)
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(sp.dir)
	if len(sp.files) == 0 || o.CheckOnly {
		return sp.res, nil
	}
	if err := sp.apply(ctx, d, o); err != nil {
		return nil, err
	}
	return sp.res, nil
}

// ReplayDataDir applies archived binlog, as Replay does, to the physical
// copy in dataDir, every database of it: when there is log to apply, it
// starts a private server on the copy (StartLocalServer), applies the log
// through it, sets the copy's gtid_slave_pos to the MariaDB GTID position
// reached (the backup's, advanced by every replayed transaction), so that
// the copy can be made a replica with MASTER_USE_GTID=slave_pos, and shuts
// it down cleanly.
func ReplayDataDir(ctx context.Context, dataDir string, o ReplayOptions, fetch ReplayFetch) (*Replayed, error) {
	o.AllDatabases, o.Database = true, ""
	sp, err := spoolLog(ctx, o, fetch)
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(sp.dir)
	if len(sp.files) == 0 || o.CheckOnly {
		return sp.res, nil
	}
	// A volume snapshot's prepared transactions are resolved from its
	// binlog first; the replay's server runs without one.
	if base, ok := SourceBinlog(dataDir, o.From.File); ok {
		if err := RecoverFromBinlog(ctx, dataDir, base, o.BinDir); err != nil {
			return nil, err
		}
	}
	srv, err := StartLocalServer(ctx, dataDir, LocalServerOptions{BinDir: o.BinDir})
	if err != nil {
		return nil, err
	}
	err = sp.apply(ctx, srv.DSN(), o)
	if err == nil && sp.res.Pos.GTID != "" {
		err = setSlavePos(ctx, srv.DSN(), sp.res.Pos.GTID)
	}
	if serr := srv.Stop(context.WithoutCancel(ctx)); err == nil {
		err = serr
	}
	if err != nil {
		return nil, err
	}
	return sp.res, nil
}

// spooled is archived log fetched and cut to the replay's range, in
// temporary binlog files.
type spooled struct {
	dir   string
	files []string
	res   *Replayed
}

// spoolLog fetches segments one after another from o.From, keeps the
// events after it (and up to o.StopPos) and writes them to binlog files in
// a private directory; the caller removes sp.dir.
func spoolLog(ctx context.Context, o ReplayOptions, fetch ReplayFetch) (sp *spooled, err error) {
	dir, err := os.MkdirTemp("", "amber-mysql-replay-")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	res := &Replayed{Pos: o.From}
	// The GTID position reached: the start's (MariaDB's form only),
	// advanced by every transaction kept.
	gtids := parseMariaDBGTIDs(o.From.GTID)
	if len(gtids) == 0 {
		gtids = nil
	}
	defer func() {
		if err == nil {
			res.Pos.GTID = formatMariaDBGTIDs(gtids)
		}
	}()
	var target *gtidTarget
	if o.StopGTID != "" {
		if target, err = newGTIDTarget(o.StopGTID, o.Inclusive, o.From.GTID); err != nil {
			return nil, err
		}
	}
	var files []string
	cur := o.From
	for !target.done() {
		start, end, r, err := fetch(ctx, cur)
		if errors.Is(err, ErrNoMoreLog) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("fetch archived binlog after %s: %w", cur.Text(), err)
		}
		data, err := io.ReadAll(r)
		r.Close()
		if err != nil {
			return nil, fmt.Errorf("read archived binlog %s: %w", start.Text(), err)
		}
		var stopAt time.Time
		if !o.StopTime.IsZero() {
			stopAt = stopSecond(o)
		}
		kept, last, lastTime, stop, err := filterEvents(data, start, o.From, o.StopPos, stopAt, gtids, target)
		if err != nil {
			return nil, fmt.Errorf("archived binlog %s: %w", start.Text(), err)
		}
		if last.File != "" { // a segment left without a transaction has nothing to apply
			f := filepath.Join(dir, fmt.Sprintf("%06d.bin", len(files)))
			if err := os.WriteFile(f, kept, 0o600); err != nil {
				return nil, err
			}
			files = append(files, f)
		}
		res.Segments++
		if !lastTime.IsZero() {
			if !o.StopTime.IsZero() && !lastTime.Before(stopSecond(o)) {
				stop = true
			} else {
				res.Time = lastTime
				res.Pos = last
			}
		}
		if stop {
			break
		}
		cur = end
		res.Pos = end
	}
	if target != nil && !target.done() {
		reached := res.Pos
		reached.GTID = formatMariaDBGTIDs(gtids)
		return nil, fmt.Errorf("the archived binlog ends at %s before the target GTID position %s: the target is past the recoverable window (see `amber ls`), or it names a transaction the archive does not hold",
			reached.Text(), o.StopGTID)
	}
	return &spooled{dir: dir, files: files, res: res}, nil
}

// apply pipes the spooled binlog through mariadb-binlog (mysqlbinlog) into
// a client session on d.
func (sp *spooled) apply(ctx context.Context, d DSN, o ReplayOptions) error {
	files := sp.files
	tool, err := binlogTool(o.BinDir)
	if err != nil {
		return err
	}
	args := []string{"--no-defaults"}
	if filepath.Base(tool) == "mariadb-binlog" {
		// The segments start where the dump stands, not at the GTID
		// state's origin.
		args = append(args, "--skip-gtid-strict-mode")
	}
	if o.Database != "" {
		args = append(args, "--database="+o.Database)
	}
	if !o.StopTime.IsZero() {
		args = append(args, "--stop-datetime="+stopSecond(o).Format("2006-01-02 15:04:05"))
	}
	bl := exec.CommandContext(ctx, tool, append(args, files...)...)
	bl.Env = []string{"TZ=UTC", "PATH=" + os.Getenv("PATH")}
	var blErr limitedBuffer
	bl.Stderr = &blErr
	out, err := bl.StdoutPipe()
	if err != nil {
		return err
	}
	l, err := NewLoader(ctx, d, RestoreOptions{BinDir: o.BinDir, AllDatabases: o.AllDatabases})
	if err != nil {
		return err
	}
	if err := bl.Start(); err != nil {
		l.Close()
		return fmt.Errorf("start %s: %w", tool, err)
	}
	loadErr := l.Load("archived binlog", bufio.NewReaderSize(out, 1<<20))
	blWait := bl.Wait()
	if err := errors.Join(loadErr, l.Close()); err != nil {
		return fmt.Errorf("apply archived binlog: %w", err)
	}
	if blWait != nil {
		return fmt.Errorf("%s: %w: %s", filepath.Base(tool), blWait, blErr.String())
	}
	return nil
}

// stopSecond is the first second not to apply: binlog timestamps have
// whole seconds, so an inclusive target applies its whole second.
func stopSecond(o ReplayOptions) time.Time {
	t := o.StopTime.UTC()
	s := t.Truncate(time.Second)
	if o.Inclusive || !s.Equal(t) {
		s = s.Add(time.Second)
	}
	return s
}

func binlogTool(binDir string) (string, error) {
	for _, name := range []string{"mariadb-binlog", "mysqlbinlog"} {
		p := name
		if binDir != "" {
			p = filepath.Join(binDir, name)
		}
		if p, err := exec.LookPath(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("no mariadb-binlog or mysqlbinlog found: install mariadb-client (or set the bin_dir setting)")
}

type limitedBuffer struct{ b []byte }

func (w *limitedBuffer) Write(p []byte) (int, error) {
	if len(w.b) < 64<<10 {
		w.b = append(w.b, p[:min(len(p), 64<<10-len(w.b))]...)
	}
	return len(p), nil
}

func (w *limitedBuffer) String() string { return string(w.b) }

// Binlog event header fields.
const (
	evHeader   = 19
	evFDE      = 15
	evQuery    = 2
	evXID      = 16
	evRotate   = 4
	evGTID     = 162 // MariaDB's GTID event: a transaction's first
	evStartV3  = 1
	evMaxBytes = 1 << 30
)

// filterEvents keeps a segment's Format_description event and the events
// that end after from and, when stopAt is set, at or before it; when
// stopTime is set, it stops at the first transaction (MariaDB GTID event)
// whose time is not before it, as mariadb-binlog --stop-datetime does;
// when target is set, at the transaction it says (gtidTarget.next). It
// returns the kept bytes (a binlog file), the position after the last kept
// commit and its time, and whether the stop was passed; gtids (domain ->
// "domain-server-seq") is updated with every kept MariaDB GTID event.
func filterEvents(data []byte, seg, from, stopAt Pos, stopTime time.Time, gtids map[uint32]string, target *gtidTarget) (kept []byte, last Pos, lastTime time.Time, stop bool, err error) {
	if len(data) < 4 || string(data[:4]) != string(binlogMagic) {
		return nil, Pos{}, time.Time{}, false, errors.New("not a binlog file (no magic)")
	}
	fileNo, _ := FileNumber(seg.File)
	kept = append(kept, data[:4]...)
	// Offsets compare only within an epoch: a segment of a later epoch
	// than from's is all after it; one of a later epoch than stopAt's is
	// all past it, one of an earlier epoch all before it.
	if from.Epoch != 0 && seg.Epoch != 0 && seg.Epoch > from.Epoch {
		from = Pos{}
	}
	if stopAt.File != "" && stopAt.Epoch != 0 && seg.Epoch != 0 {
		if seg.Epoch > stopAt.Epoch {
			return kept, Pos{}, time.Time{}, true, nil
		}
		if seg.Epoch < stopAt.Epoch {
			stopAt = Pos{}
		}
	}
	for off := 4; off < len(data); {
		if len(data)-off < evHeader {
			return nil, Pos{}, time.Time{}, false, fmt.Errorf("truncated event header at byte %d", off)
		}
		h := data[off:]
		size := int(binary.LittleEndian.Uint32(h[9:13]))
		if size < evHeader || size > evMaxBytes || off+size > len(data) {
			return nil, Pos{}, time.Time{}, false, fmt.Errorf("bad event size %d at byte %d", size, off)
		}
		ev := h[:size]
		typ := ev[4]
		endPos := binary.LittleEndian.Uint32(ev[13:17])
		off += size
		if typ == evFDE || typ == evStartV3 {
			kept = append(kept, ev...)
			continue
		}
		at := uint64(fileNo)<<32 | uint64(endPos)
		if from.File != "" && at <= from.Offset() && typ != evRotate {
			continue
		}
		if stopAt.File != "" && at > stopAt.Offset() {
			stop = true
			break
		}
		if typ == evGTID && len(ev) >= evHeader+12 {
			if !stopTime.IsZero() && !time.Unix(int64(binary.LittleEndian.Uint32(ev[0:4])), 0).Before(stopTime) {
				stop = true
				break
			}
			body := ev[evHeader:]
			seq := binary.LittleEndian.Uint64(body[0:8])
			domain := binary.LittleEndian.Uint32(body[8:12])
			server := binary.LittleEndian.Uint32(ev[5:9])
			if target != nil {
				keep, err := target.next(domain, server, seq)
				if err != nil {
					return nil, Pos{}, time.Time{}, false, err
				}
				if !keep {
					stop = true
					break
				}
			}
			if gtids != nil {
				gtids[domain] = fmt.Sprintf("%d-%d-%d", domain, server, seq)
			}
		}
		kept = append(kept, ev...)
		if typ == evXID || typ == evQuery {
			last = Pos{Epoch: seg.Epoch, File: seg.File, Pos: endPos}
			lastTime = time.Unix(int64(binary.LittleEndian.Uint32(ev[0:4])), 0).UTC()
		}
	}
	return kept, last, lastTime, stop, nil
}

// parseMariaDBGTIDs reads a MariaDB GTID position ("0-1-42,1-2-7") into
// domain -> GTID; anything else (a MySQL GTID set, empty) gives an empty map.
func parseMariaDBGTIDs(s string) map[uint32]string {
	m := map[uint32]string{}
	for _, g := range strings.Split(s, ",") {
		g = strings.TrimSpace(g)
		parts := strings.Split(g, "-")
		if len(parts) != 3 {
			return map[uint32]string{}
		}
		d, err := strconv.ParseUint(parts[0], 10, 32)
		if err != nil {
			return map[uint32]string{}
		}
		m[uint32(d)] = g
	}
	return m
}

// formatMariaDBGTIDs writes domain -> GTID as a position, domains in order.
func formatMariaDBGTIDs(m map[uint32]string) string {
	domains := make([]uint32, 0, len(m))
	for d := range m {
		domains = append(domains, d)
	}
	slices.Sort(domains)
	out := make([]string, len(domains))
	for i, d := range domains {
		out[i] = m[d]
	}
	return strings.Join(out, ",")
}

// setSlavePos sets gtid_slave_pos (stored in mysql.gtid_slave_pos, so it
// outlives the server) on d.
func setSlavePos(ctx context.Context, d DSN, gtid string) error {
	db, _, err := Open(ctx, d)
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, "SET GLOBAL gtid_slave_pos = ?", gtid); err != nil {
		return fmt.Errorf("set the copy's gtid_slave_pos to %s: %w", gtid, err)
	}
	return nil
}

// gtidTarget is a recovery target given as a MariaDB GTID position: one
// GTID per replication domain. Walking the binlog from the backup's GTID
// position, replay reaches it with the transaction that brings every
// domain it names to (or past) its sequence number: with Inclusive that
// transaction is applied, else replay stops just before it. The target
// must be a point of the binlog: a transaction that passes a named
// domain's sequence number before the others are reached is an error, as
// is a start that already passed one.
type gtidTarget struct {
	text    string
	want    map[uint32]uint64 // domain -> sequence number
	reached map[uint32]bool
	// known: the domain's position before the target is known (the
	// start names it, or a transaction of it before the target was
	// seen), so a first transaction past the target reaches it rather
	// than hiding a start already past it.
	known     map[uint32]bool
	inclusive bool
	final     bool // the target is reached: replay ends before the next transaction
}

// parseGTIDSeqs reads a MariaDB GTID position ("0-1-42", or "0-1-42,1-2-7"
// with one GTID per domain) as domain -> sequence number.
func parseGTIDSeqs(s string) (map[uint32]uint64, error) {
	seqs := map[uint32]uint64{}
	for _, g := range strings.Split(s, ",") {
		parts := strings.Split(strings.TrimSpace(g), "-")
		if len(parts) != 3 {
			return nil, errors.New("give a MariaDB GTID position, domain-server-sequence (such as 0-1-42; one per domain, comma-separated); MySQL GTID sets are not supported as targets: give --to-time or --to-position")
		}
		d, err1 := strconv.ParseUint(parts[0], 10, 32)
		_, err2 := strconv.ParseUint(parts[1], 10, 32)
		n, err3 := strconv.ParseUint(parts[2], 10, 64)
		if err := errors.Join(err1, err2, err3); err != nil {
			return nil, fmt.Errorf("%q is not domain-server-sequence", g)
		}
		if _, dup := seqs[uint32(d)]; dup {
			return nil, fmt.Errorf("names domain %d twice", d)
		}
		seqs[uint32(d)] = n
	}
	return seqs, nil
}

// newGTIDTarget starts walking toward target s from the GTID position
// from (the backup's; domains it does not name, or all when it is not a
// MariaDB GTID position, start unknown).
func newGTIDTarget(s string, inclusive bool, from string) (*gtidTarget, error) {
	want, err := parseGTIDSeqs(s)
	if err != nil {
		return nil, fmt.Errorf("GTID target %q: %w", s, err)
	}
	t := &gtidTarget{text: s, want: want, reached: map[uint32]bool{}, known: map[uint32]bool{}, inclusive: inclusive}
	start, _ := parseGTIDSeqs(from)
	for d, n := range want {
		at, ok := start[d]
		if !ok {
			continue
		}
		t.known[d] = true
		if at > n || at == n && !inclusive {
			return nil, fmt.Errorf("%w: the backup's GTID position %s already holds the target %s's transaction in domain %d: restore an older backup (--backup; `amber ls` lists them)",
				ErrTargetBeforeStart, from, s, d)
		}
		if at == n {
			t.reached[d] = true
		}
	}
	t.final = len(t.reached) == len(t.want)
	return t, nil
}

// ErrTargetBeforeStart is wrapped by the error for a recovery target that
// the restored backup is already past.
var ErrTargetBeforeStart = errors.New("the recovery target is before the backup")

// done reports whether the target is reached; nil is a walk without one.
func (t *gtidTarget) done() bool { return t != nil && t.final }

// next is told the GTID (domain, server id, sequence number) of the next
// transaction of the binlog and says whether it is applied.
func (t *gtidTarget) next(domain, server uint32, seq uint64) (bool, error) {
	if t.final {
		return false, nil
	}
	n, named := t.want[domain]
	if !named || seq < n || t.reached[domain] && seq <= n {
		if named {
			t.known[domain] = true
		}
		return true, nil
	}
	if seq > n && !t.known[domain] {
		return false, fmt.Errorf("GTID target %s: the backup records no GTID position in domain %d and the first archived transaction of that domain, %s, is already past the target, so whether the backup holds the target's transaction cannot be told; give --to-time or --to-position", t.text, domain, fmt.Sprintf("%d-%d-%d", domain, server, seq))
	}
	if t.reached[domain] || seq > n && len(t.reached) < len(t.want)-1 {
		return false, fmt.Errorf("GTID target %s is not a point of the archived binlog: transaction %s passes it in domain %d before the other domains it names are reached; give a GTID position the server went through (its gtid_binlog_pos at some moment), --to-time or --to-position", t.text, fmt.Sprintf("%d-%d-%d", domain, server, seq), domain)
	}
	// seq == n, or seq > n (the domain skipped n): domain is reached here.
	t.reached[domain] = true
	if len(t.reached) < len(t.want) {
		return true, nil
	}
	t.final = true
	return t.inclusive && seq == n, nil
}
