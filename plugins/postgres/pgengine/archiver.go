package pgengine

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/amber-backup/amber/plugins/api/clock"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// Segment is one piece of archived WAL handed to ArchiverOptions.OnSegment:
// a complete WAL segment, the bytes of the segment being written received
// since the previous emission (Partial: a piece), or a timeline history
// file (History).
type Segment struct {
	// Name is PostgreSQL's file name: "000000010000000000000003" for WAL
	// (also for each Partial piece of it; the complete segment with the same
	// Name supersedes them), "00000002.history" for history files.
	Name     string
	Timeline uint32
	// StartLSN is the position of Data[0]: the segment start, or for a
	// Partial piece where the previous piece of this segment ended (the
	// segment start for its first piece, and after a restart).
	StartLSN LSN
	EndLSN   LSN // position just after the last byte of Data
	Partial  bool
	History  bool
	// SegmentSize is the server's WAL segment size (0 for history).
	SegmentSize int64
	// Data is valid only during the callback (for complete segments it is
	// handed over and not reused, but do not rely on that).
	Data []byte
	// ServerTime is the sending server's clock when it sent the last of
	// these bytes: no transaction in Data committed after it. Zero for history.
	ServerTime time.Time
	// LastCommit is the end time of the newest transaction commit or
	// abort whose record ends in Data (zero when none does): the latest
	// instant a recovery_target_time can stop at with this WAL.
	LastCommit time.Time
}

// ArchiverOptions configure an Archiver.
type ArchiverOptions struct {
	// Slot is the physical replication slot; default "amber". It is created
	// (with RESERVE_WAL) when missing unless NoCreateSlot.
	Slot         string
	NoCreateSlot bool
	// From is the end of the WAL the repository already holds (0: none).
	// Archiving resumes at the start of its segment. If the server no longer
	// has WAL from there, Run fails with ErrWALGap.
	From LSN
	// Timeline of From; default the server's current timeline. When the
	// server has moved to a later timeline, the archiver follows the switch.
	Timeline uint32
	// PartialInterval bounds how long received WAL waits before it is
	// emitted as a partial segment; default 1s.
	PartialInterval time.Duration
	// StatusInterval is the period of standby status updates; default 10s.
	StatusInterval time.Duration
	// Synchronous emits what was received as soon as the socket has nothing
	// more to read (not every PartialInterval) and reports each durable
	// position to the server the moment Durable is called: with
	// synchronous_standby_names naming ApplicationName, a commit is
	// acknowledged only once its WAL is durable where OnSegment put it.
	Synchronous bool
	// ApplicationName is the replication connection's application_name when
	// the DSN sets none; default the slot's name.
	ApplicationName string
	// OnSegment receives segments in WAL order. It runs on the receiving
	// goroutine: hand the data off quickly. An error stops Run.
	OnSegment func(ctx context.Context, s Segment) error
	Logger    *slog.Logger
	Clock     clock.Clock
}

// Archiver streams WAL from a physical replication slot and assembles it
// into segments. The slot only advances to positions the caller confirms
// with Durable, so the server keeps every byte until it is safe elsewhere.
type Archiver struct {
	dsn  DSN
	opts ArchiverOptions
	log  *slog.Logger

	mu       sync.Mutex
	durable  LSN // confirmed by the caller
	received LSN // end of WAL received
	slotPos  LSN // last flush position reported to the server
	// wake is cancelled by Durable in Synchronous mode, to interrupt a
	// receive wait so the new position is reported at once.
	wake       context.Context
	wakeCancel context.CancelFunc

	stopCtx  context.Context
	stop     context.CancelFunc
	done     chan struct{}
	runErr   error
	started  bool
	stopping bool
}

// NewArchiver prepares an archiver; Run starts it.
func NewArchiver(dsn DSN, opts ArchiverOptions) *Archiver {
	if opts.Slot == "" {
		opts.Slot = "amber"
	}
	if opts.PartialInterval <= 0 {
		opts.PartialInterval = time.Second
	}
	if opts.StatusInterval <= 0 {
		opts.StatusInterval = 10 * time.Second
	}
	if opts.ApplicationName == "" {
		opts.ApplicationName = opts.Slot
	}
	if opts.Clock == nil {
		opts.Clock = clock.Real
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &Archiver{dsn: dsn, opts: opts, done: make(chan struct{}),
		log: log.With("engine", "postgres", "slot", opts.Slot)}
	a.stopCtx, a.stop = context.WithCancel(context.Background())
	return a
}

// Durable tells the archiver that WAL before lsn is durable in the
// repository; the slot may release it. Positions beyond what was received
// are clamped. Safe for concurrent use.
func (a *Archiver) Durable(lsn LSN) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if lsn > a.received {
		lsn = a.received
	}
	if lsn > a.durable {
		a.durable = lsn
		if a.wakeCancel != nil {
			a.wakeCancel()
		}
	}
}

// armWake returns the context Durable cancels, made afresh once cancelled.
func (a *Archiver) armWake() context.Context {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.wake == nil || a.wake.Err() != nil {
		a.wake, a.wakeCancel = context.WithCancel(context.Background())
	}
	return a.wake
}

// Positions returns the end of WAL received, the durable position the
// caller confirmed, and the last position reported to the slot.
func (a *Archiver) Positions() (received, durable, slot LSN) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.received, a.durable, a.slotPos
}

// Stop ends Run after everything received has been emitted, and returns
// Run's error. Durable positions confirmed before Stop are reported to the
// slot; later ones are picked up by the next archiver from the repository.
func (a *Archiver) Stop(ctx context.Context) error {
	a.mu.Lock()
	a.stopping = true
	started := a.started
	a.mu.Unlock()
	a.stop()
	if !started {
		return nil
	}
	select {
	case <-a.done:
		return a.runErr
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run archives until Stop, ctx ends or an error occurs.
func (a *Archiver) Run(ctx context.Context) (err error) {
	a.mu.Lock()
	if a.started {
		a.mu.Unlock()
		return errors.New("archiver: Run called twice")
	}
	a.started = true
	a.mu.Unlock()
	defer func() {
		if errors.Is(err, errStopped) {
			err = nil
		}
		a.runErr = err
		close(a.done)
	}()

	info, err := Probe(ctx, a.dsn)
	if err != nil {
		return err
	}
	segSize := info.WALSegmentSize
	restart, err := a.ensureSlot(ctx)
	if err != nil {
		return err
	}
	start := restart
	if a.opts.From != 0 {
		if a.opts.From < SegmentStart(restart, segSize) {
			return fmt.Errorf("%w: the archive ends at %s but slot %s keeps WAL only from %s; the WAL in between is lost, take a new base backup",
				ErrWALGap, a.opts.From, a.opts.Slot, restart)
		}
		start = a.opts.From
	}
	if start == 0 {
		start = info.CurrentLSN
	}
	// Never report a flush position below the slot's: PostgreSQL would move
	// restart_lsn backwards.
	floor := max(restart, a.opts.From)
	if floor == 0 {
		floor = start
	}
	a.mu.Lock()
	a.durable, a.received, a.slotPos = floor, floor, floor
	a.mu.Unlock()
	start = SegmentStart(start, segSize)

	conn, err := connectReplicationAs(ctx, a.dsn, a.opts.ApplicationName)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	// PostgreSQL 14 and older refuse START_REPLICATION on a standby unless
	// IDENTIFY_SYSTEM ran first on the connection (it sets the walsender's
	// timeline); later versions do not need it, and it costs nothing.
	if _, err := pglogrepl.IdentifySystem(ctx, conn); err != nil {
		return fmt.Errorf("IDENTIFY_SYSTEM: %w", err)
	}

	tli := a.opts.Timeline
	if tli == 0 {
		tli = uint32(info.Timeline)
	}
	if tli > 1 {
		if err := a.emitHistory(ctx, conn, tli); err != nil {
			return err
		}
	}
	s := &stream{a: a, conn: conn, segSize: segSize}
	for {
		a.log.Info("start streaming", "timeline", tli, "from", start.String())
		next, nextStart, err := s.run(ctx, tli, start)
		if err != nil {
			return err
		}
		a.log.Info("timeline switch", "from_timeline", tli, "to_timeline", next, "at", nextStart.String())
		tli = next
		start = SegmentStart(nextStart, segSize)
		if err := a.emitHistory(ctx, conn, tli); err != nil {
			return err
		}
	}
}

var errStopped = errors.New("archiver stopped")

// ensureSlot returns the slot's restart_lsn, creating the slot if allowed.
func (a *Archiver) ensureSlot(ctx context.Context) (LSN, error) {
	sqlc, err := connectSQL(ctx, a.dsn)
	if err != nil {
		return 0, err
	}
	defer sqlc.Close(context.Background())
	q := `SELECT slot_type, restart_lsn::text, active_pid FROM pg_replication_slots WHERE slot_name = $1`
	var typ string
	var restart LSN
	var pid *int32
	err = sqlc.QueryRow(ctx, q, a.opts.Slot).Scan(&typ, &restart, &pid)
	if errors.Is(err, pgx.ErrNoRows) {
		if a.opts.NoCreateSlot {
			return 0, fmt.Errorf("replication slot %s does not exist; create it with SELECT pg_create_physical_replication_slot('%s', true)", a.opts.Slot, a.opts.Slot)
		}
		if _, err := sqlc.Exec(ctx, `SELECT pg_create_physical_replication_slot($1, true)`, a.opts.Slot); err != nil {
			return 0, fmt.Errorf("create replication slot %s: %w", a.opts.Slot, err)
		}
		a.log.Info("created replication slot")
		err = sqlc.QueryRow(ctx, q, a.opts.Slot).Scan(&typ, &restart, &pid)
	}
	if err != nil {
		return 0, fmt.Errorf("replication slot %s: %w", a.opts.Slot, err)
	}
	if typ != "physical" {
		return 0, fmt.Errorf("replication slot %s is %s, not physical", a.opts.Slot, typ)
	}
	// A slot still held by a walsender is often the previous archiver's,
	// killed a moment ago: the server notices the broken connection within
	// seconds. Wait a while before concluding another archiver holds it.
	for deadline := time.Now().Add(30 * time.Second); pid != nil && time.Now().Before(deadline); {
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
		if err := sqlc.QueryRow(ctx, q, a.opts.Slot).Scan(&typ, &restart, &pid); err != nil {
			return 0, fmt.Errorf("replication slot %s: %w", a.opts.Slot, err)
		}
	}
	if pid != nil {
		return 0, fmt.Errorf("replication slot %s is in use by server process %d (another archiver?)", a.opts.Slot, *pid)
	}
	return restart, nil
}

func (a *Archiver) emitHistory(ctx context.Context, conn *pgconn.PgConn, tli uint32) error {
	h, err := pglogrepl.TimelineHistory(ctx, conn, int32(tli))
	if err != nil {
		return fmt.Errorf("TIMELINE_HISTORY %d: %w", tli, err)
	}
	return a.emit(ctx, Segment{Name: h.FileName, Timeline: tli, History: true, Data: h.Content})
}

func (a *Archiver) emit(ctx context.Context, s Segment) error {
	if a.opts.OnSegment == nil {
		return nil
	}
	if err := a.opts.OnSegment(ctx, s); err != nil {
		return fmt.Errorf("archive %s: %w", s.Name, err)
	}
	return nil
}

// stream is the state of one replication connection's WAL assembly.
type stream struct {
	a       *Archiver
	conn    *pgconn.PgConn
	segSize int64

	tli        uint32
	segStart   LSN
	buf        []byte // segStart .. pos
	pos        LSN
	emitted    LSN // end of what was last emitted from this segment
	serverTime time.Time
	lastEmit   time.Time
	lastStatus time.Time
	idle       bool // the last receive found nothing to read
	scan       commitScan
}

// syncBatch bounds, in Synchronous mode, how long received WAL waits while
// more keeps arriving before it is emitted.
const syncBatch = 10 * time.Millisecond

// run streams timeline tli from start (a segment boundary) until the server
// ends the timeline (returning the next one) or the archiver stops.
func (s *stream) run(ctx context.Context, tli uint32, start LSN) (uint32, LSN, error) {
	a := s.a
	err := pglogrepl.StartReplication(ctx, s.conn, quoteIdent(a.opts.Slot), pglogrepl.LSN(start),
		pglogrepl.StartReplicationOptions{Timeline: int32(tli), Mode: pglogrepl.PhysicalReplication})
	if next, nextStart, ok := pglogrepl.IsErrEndTimeline(err); ok {
		return uint32(next), LSN(nextStart), nil
	}
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "58P01" {
			return 0, 0, fmt.Errorf("%w: %s; take a new base backup", ErrWALGap, pgErr.Message)
		}
		return 0, 0, fmt.Errorf("START_REPLICATION from %s on timeline %d: %w", start, tli, err)
	}
	s.tli, s.segStart, s.pos, s.emitted = tli, start, start, start
	if s.buf == nil {
		s.buf = make([]byte, 0, s.segSize)
	}
	s.buf = s.buf[:0]
	s.scan.reset(s.segSize, start)
	clk := a.opts.Clock
	s.lastEmit, s.lastStatus = clk.Now(), clk.Now()

	for {
		stopping := a.stopCtx.Err() != nil
		var wake context.Context
		if a.opts.Synchronous {
			wake = a.armWake() // before tick reads the durable position
		}
		if err := s.tick(ctx, stopping); err != nil {
			return 0, 0, err
		}
		if stopping {
			return 0, 0, errStopped
		}
		now := clk.Now()
		wait := min(s.lastEmit.Add(a.opts.PartialInterval).Sub(now),
			s.lastStatus.Add(a.opts.StatusInterval).Sub(now), 200*time.Millisecond)
		if a.opts.Synchronous {
			wait = min(s.lastStatus.Add(a.opts.StatusInterval).Sub(now), 200*time.Millisecond)
			if s.pos > s.emitted {
				// Received WAL waits only while more is already on its way.
				wait = 0
			}
		}
		rctx, cancel := context.WithTimeout(ctx, max(wait, time.Millisecond))
		unhook := context.AfterFunc(a.stopCtx, cancel)
		unwake := func() bool { return false }
		if wake != nil {
			unwake = context.AfterFunc(wake, cancel)
		}
		msg, err := s.conn.ReceiveMessage(rctx)
		unhook()
		unwake()
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return 0, 0, ctx.Err()
			}
			if pgconn.Timeout(err) || errors.Is(err, context.Canceled) {
				s.idle = true
				continue
			}
			return 0, 0, fmt.Errorf("receive WAL: %w", err)
		}
		s.idle = false
		switch m := msg.(type) {
		case *pgproto3.CopyData:
			if len(m.Data) == 0 {
				continue
			}
			switch m.Data[0] {
			case pglogrepl.PrimaryKeepaliveMessageByteID:
				pkm, err := pglogrepl.ParsePrimaryKeepaliveMessage(m.Data[1:])
				if err != nil {
					return 0, 0, err
				}
				if pkm.ReplyRequested {
					s.lastStatus = time.Time{}
				}
			case pglogrepl.XLogDataByteID:
				xld, err := pglogrepl.ParseXLogData(m.Data[1:])
				if err != nil {
					return 0, 0, err
				}
				if err := s.add(ctx, LSN(xld.WALStart), xld.WALData, xld.ServerTime); err != nil {
					return 0, 0, err
				}
			}
		case *pgproto3.CopyDone:
			// End of this timeline: the server says where the next begins.
			if err := s.emitPartial(ctx); err != nil {
				return 0, 0, err
			}
			return s.endOfTimeline(ctx)
		case *pgproto3.ErrorResponse:
			return 0, 0, fmt.Errorf("replication stream: %w", pgconn.ErrorResponseToPgError(m))
		case *pgproto3.NoticeResponse, *pgproto3.ParameterStatus:
		default:
			return 0, 0, fmt.Errorf("replication stream: unexpected %T", msg)
		}
	}
}

// add appends WAL at lsn, emitting each segment as it completes.
func (s *stream) add(ctx context.Context, lsn LSN, data []byte, serverTime time.Time) error {
	if lsn != s.pos {
		return fmt.Errorf("%w: expected WAL at %s on timeline %d, server sent %s", ErrWALGap, s.pos, s.tli, lsn)
	}
	s.serverTime = serverTime
	for len(data) > 0 {
		room := int(s.segSize) - len(s.buf)
		n := min(room, len(data))
		s.buf = append(s.buf, data[:n]...)
		s.scan.feed(data[:n])
		data = data[n:]
		s.pos += LSN(n)
		s.a.mu.Lock()
		s.a.received = s.pos
		s.a.mu.Unlock()
		if len(s.buf) == int(s.segSize) {
			seg := Segment{Name: WALFileName(s.tli, s.segStart, s.segSize), Timeline: s.tli, SegmentSize: s.segSize,
				StartLSN: s.segStart, EndLSN: s.pos, Data: s.buf, ServerTime: serverTime, LastCommit: s.scan.take()}
			s.buf = make([]byte, 0, s.segSize)
			s.segStart, s.emitted = s.pos, s.pos
			s.lastEmit = s.a.opts.Clock.Now()
			if err := s.a.emit(ctx, seg); err != nil {
				return err
			}
		}
	}
	return nil
}

// emitPartial emits what was received since the last emission as a piece
// of the current segment: each flush sends only its new bytes.
func (s *stream) emitPartial(ctx context.Context) error {
	if s.pos <= s.emitted {
		return nil
	}
	from := s.emitted
	s.emitted = s.pos
	s.lastEmit = s.a.opts.Clock.Now()
	return s.a.emit(ctx, Segment{Name: WALFileName(s.tli, s.segStart, s.segSize), Timeline: s.tli, SegmentSize: s.segSize,
		StartLSN: from, EndLSN: s.pos, Partial: true, Data: s.buf[from-s.segStart:], ServerTime: s.serverTime, LastCommit: s.scan.take()})
}

// tick emits a due partial segment and sends a due status update.
func (s *stream) tick(ctx context.Context, force bool) error {
	now := s.a.opts.Clock.Now()
	if force || now.Sub(s.lastEmit) >= s.a.opts.PartialInterval || s.a.opts.Synchronous && (s.idle || now.Sub(s.lastEmit) >= syncBatch) {
		if err := s.emitPartial(ctx); err != nil {
			return err
		}
		s.lastEmit = now
	}
	s.a.mu.Lock()
	durable, reported := s.a.durable, s.a.slotPos
	s.a.mu.Unlock()
	if force || durable != reported || now.Sub(s.lastStatus) >= s.a.opts.StatusInterval {
		if err := s.sendStatus(durable); err != nil {
			return err
		}
		s.lastStatus = now
	}
	return nil
}

// sendStatus reports received WAL as written and the durable position as
// flushed and applied; a physical slot's restart_lsn follows the flush
// position, so it never passes what the caller confirmed.
func (s *stream) sendStatus(durable LSN) error {
	write := s.pos
	if durable > write {
		durable = write
	}
	data := make([]byte, 0, 34)
	data = append(data, pglogrepl.StandbyStatusUpdateByteID)
	data = binary.BigEndian.AppendUint64(data, uint64(write))
	data = binary.BigEndian.AppendUint64(data, uint64(durable))
	data = binary.BigEndian.AppendUint64(data, uint64(durable))
	data = binary.BigEndian.AppendUint64(data, uint64(pgTime(s.a.opts.Clock.Now())))
	data = append(data, 0)
	buf, err := (&pgproto3.CopyData{Data: data}).Encode(nil)
	if err != nil {
		return err
	}
	if err := s.conn.Frontend().SendUnbufferedEncodedCopyData(buf); err != nil {
		return fmt.Errorf("standby status update: %w", err)
	}
	s.a.mu.Lock()
	s.a.slotPos = durable
	s.a.mu.Unlock()
	return nil
}

func pgTime(t time.Time) int64 {
	const unixToY2K = 946684800 * 1000000
	return t.UnixMicro() - unixToY2K
}

// endOfTimeline answers the server's CopyDone and reads the next timeline
// and its start position, leaving the connection ready for a new command.
func (s *stream) endOfTimeline(ctx context.Context) (uint32, LSN, error) {
	s.conn.Frontend().Send(&pgproto3.CopyDone{})
	if err := s.conn.Frontend().Flush(); err != nil {
		return 0, 0, err
	}
	var next uint64
	var nextStart LSN
	for {
		msg, err := s.conn.ReceiveMessage(ctx)
		if err != nil {
			return 0, 0, err
		}
		switch m := msg.(type) {
		case *pgproto3.DataRow:
			if len(m.Values) == 2 {
				if next, err = strconv.ParseUint(string(m.Values[0]), 10, 32); err != nil {
					return 0, 0, fmt.Errorf("next timeline %q: %w", m.Values[0], err)
				}
				if nextStart, err = ParseLSN(string(m.Values[1])); err != nil {
					return 0, 0, err
				}
			}
		case *pgproto3.ErrorResponse:
			return 0, 0, pgconn.ErrorResponseToPgError(m)
		case *pgproto3.ReadyForQuery:
			if next == 0 {
				return 0, 0, fmt.Errorf("timeline %d ended at %s without a next timeline", s.tli, s.pos)
			}
			return uint32(next), nextStart, nil
		}
	}
}
