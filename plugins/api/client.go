package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	pb "github.com/amber-backup/amber/plugins/api/amber/plugin/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Client is the host's Engine: it calls a plugin over gRPC. Streams are
// consumed and produced through the same sinks and sources an engine sees,
// so host code is written against Engine whether the engine is in-process
// (tests) or a plugin.
type Client struct {
	identity pb.IdentityServiceClient
	logical  pb.LogicalServiceClient
	physical pb.PhysicalServiceClient
	snapshot pb.SnapshotServiceClient
	archive  pb.ArchiveServiceClient
	replay   pb.ReplayServiceClient
	logFiles pb.LogFileServiceClient
	pipes    *Pipes // nil: the plugin sends every entry on the stream
	// restorePipes: the plugin reads restore entries from pipes too.
	restorePipes bool
}

var _ Engine = (*Client)(nil)

// NewClient returns a Client over an established connection to a plugin.
func NewClient(c grpc.ClientConnInterface) *Client {
	return &Client{
		identity: pb.NewIdentityServiceClient(c),
		logical:  pb.NewLogicalServiceClient(c),
		physical: pb.NewPhysicalServiceClient(c),
		snapshot: pb.NewSnapshotServiceClient(c),
		archive:  pb.NewArchiveServiceClient(c),
		replay:   pb.NewReplayServiceClient(c),
		logFiles: pb.NewLogFileServiceClient(c),
	}
}

// UsePipes lets the plugin send backup entries through pipes passed over p,
// the host's end of the socket pair whose other end the plugin process got
// (NewPipes); the host reads those entries from the pipes itself. With
// restores (the plugin's Info.ReadsPipes) the host also sends restore
// entries through pipes it passes to the plugin.
func (c *Client) UsePipes(p *Pipes, restores bool) {
	c.pipes, c.restorePipes = p, restores && p != nil
}

// RemoteError is an error the plugin returned, with its gRPC code.
type RemoteError struct {
	Code codes.Code
	Msg  string
}

func (e *RemoteError) Error() string { return e.Msg }

// Is maps the codes the plugin uses for them to ErrUnsupported,
// ErrNoSegment, context.Canceled and context.DeadlineExceeded.
func (e *RemoteError) Is(target error) bool {
	switch e.Code {
	case codes.Unimplemented:
		return target == ErrUnsupported
	case codes.NotFound:
		return target == ErrNoSegment
	case codes.Canceled:
		return target == context.Canceled
	case codes.DeadlineExceeded:
		return target == context.DeadlineExceeded
	}
	return false
}

// remote converts a gRPC error into a RemoteError; other errors (from the
// host's own sinks and sources) pass unchanged.
func remote(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if ctx.Err() != nil && status.Code(err) == codes.Canceled {
		return ctx.Err()
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	return &RemoteError{Code: st.Code(), Msg: st.Message()}
}

func (c *Client) Info(ctx context.Context) (Info, error) {
	r, err := c.identity.Info(ctx, &pb.InfoRequest{})
	if err != nil {
		return Info{}, remote(ctx, err)
	}
	return infoFromPB(r), nil
}

func (c *Client) Probe(ctx context.Context, t Target) (Probe, error) {
	r, err := c.identity.Probe(ctx, &pb.ProbeRequest{Target: targetToPB(t)})
	if err != nil {
		return Probe{}, remote(ctx, err)
	}
	return probeFromPB(r), nil
}

func (c *Client) ParsePosition(ctx context.Context, text string) (Position, error) {
	r, err := c.identity.ParsePosition(ctx, &pb.ParsePositionRequest{Text: text})
	if err != nil {
		return Position{}, remote(ctx, err)
	}
	return posFromPB(r), nil
}

func (c *Client) DescribeLogFile(ctx context.Context, q LogFileQuery) (LogFile, error) {
	r, err := c.logFiles.DescribeLogFile(ctx, &pb.DescribeLogFileRequest{Name: q.Name, Path: q.Path, Size: q.Size, Settings: q.Settings})
	if err != nil {
		return LogFile{}, remote(ctx, err)
	}
	if r.GetIgnore() {
		return LogFile{Ignore: true}, nil
	}
	return LogFile{Segment: Segment{SegmentHeader: segHeaderFromPB(r.GetHeader()), SegmentTrailer: segTrailerFromPB(r.GetTrailer())}}, nil
}

func (c *Client) LogicalDump(ctx context.Context, req BackupRequest, sink EntrySink) (BackupResult, error) {
	return c.backup(ctx, req, sink, c.logical.LogicalDump)
}

func (c *Client) PhysicalBackup(ctx context.Context, req BackupRequest, sink EntrySink) (BackupResult, error) {
	return c.backup(ctx, req, sink, c.physical.PhysicalBackup)
}

// sinkError marks errors of the host's sink, which are returned as they are.
type sinkError struct{ err error }

func (e sinkError) Error() string { return e.err.Error() }
func (e sinkError) Unwrap() error { return e.err }

func (c *Client) backup(ctx context.Context, req BackupRequest, sink EntrySink,
	call func(context.Context, *pb.BackupRequest, ...grpc.CallOption) (grpc.ServerStreamingClient[pb.BackupOutput], error)) (BackupResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pbReq := backupReqToPB(req)
	pbReq.ReadsFiles = req.FileRecords && c.pipes != nil
	st, err := call(ctx, pbReq, grpc.ForceCodecV2(newFrameCodec()))
	if err != nil {
		return BackupResult{}, remote(ctx, err)
	}
	var pending *pb.BackupOutput // a message read past the end of an entry
	recv := func() (*pb.BackupOutput, error) {
		if m := pending; m != nil {
			pending = nil
			return m, nil
		}
		return st.Recv()
	}
	for {
		m, err := recv()
		if errors.Is(err, io.EOF) {
			return BackupResult{}, errors.New("plugin ended the backup stream without a result")
		}
		if err != nil {
			return BackupResult{}, remote(ctx, err)
		}
		switch v := m.GetMsg().(type) {
		case *pb.BackupOutput_Result:
			return backupResultFromPB(v.Result), nil
		case *pb.BackupOutput_Entry:
			e := entryFromPB(v.Entry)
			if req.FileRecords {
				fs, ok := sink.(FileSink)
				if !ok {
					return BackupResult{}, errors.New("a backup with file records needs a FileSink")
				}
				src := &partSource{what: "entry " + e.Name, ctx: ctx, pipes: c.pipes, recv: func() (*pb.BackupOutput, error) {
					m, err := st.Recv()
					if err != nil {
						return nil, remote(ctx, err)
					}
					return m, nil
				}}
				if err := fs.FileEntry(ctx, e, src); err != nil {
					if src.streamErr != nil {
						return BackupResult{}, src.streamErr
					}
					return BackupResult{}, err
				}
				err := src.drain(ctx)
				src.close()
				if err != nil {
					return BackupResult{}, err
				}
				continue
			}
			if n := v.Entry.GetPipe(); n != 0 {
				if err := c.pipeEntry(ctx, e, n, sink, st); err != nil {
					return BackupResult{}, err
				}
				continue
			}
			var streamErr error
			r := &chunkReader{what: "entry " + e.Name, next: func() ([]byte, bool, int64, error) {
				m, err := st.Recv()
				if err != nil {
					streamErr = remote(ctx, err)
					return nil, false, 0, streamErr
				}
				switch v := m.GetMsg().(type) {
				case *pb.BackupOutput_Data:
					return v.Data, false, 0, nil
				case *pb.BackupOutput_EntryEnd:
					return nil, true, v.EntryEnd.GetSize(), nil
				}
				return nil, false, 0, fmt.Errorf("protocol error: entry %s not ended before the next message", e.Name)
			}}
			if err := sink.Entry(ctx, e, r); err != nil {
				if streamErr != nil {
					return BackupResult{}, streamErr
				}
				return BackupResult{}, err
			}
			if err := r.drain(); err != nil {
				return BackupResult{}, err
			}
		default:
			return BackupResult{}, errors.New("protocol error: data outside an entry")
		}
	}
}

// pipeEntry receives an entry whose bytes come through the pipe passed under
// number n, and its end from the stream.
func (c *Client) pipeEntry(ctx context.Context, e Entry, n uint64, sink EntrySink, st grpc.ServerStreamingClient[pb.BackupOutput]) error {
	if c.pipes == nil {
		return fmt.Errorf("protocol error: entry %s sent through a pipe this host did not offer", e.Name)
	}
	f, err := c.pipes.take(ctx, n)
	if err != nil {
		return fmt.Errorf("entry %s: %w", e.Name, err)
	}
	// Closing the pipe ends a read blocked on it when the backup is
	// cancelled, and gives a writer still writing an error (EPIPE).
	defer f.Close()
	stop := context.AfterFunc(ctx, func() { f.Close() })
	defer stop()
	var streamErr error
	r := &pipeReader{f: f, what: "entry " + e.Name, ctx: ctx, end: func() (int64, error) {
		m, err := st.Recv()
		if err != nil {
			streamErr = remote(ctx, err)
			return 0, streamErr
		}
		if end, ok := m.GetMsg().(*pb.BackupOutput_EntryEnd); ok {
			return end.EntryEnd.GetSize(), nil
		}
		return 0, fmt.Errorf("protocol error: entry %s not ended after its pipe", e.Name)
	}}
	if err := sink.Entry(ctx, e, r); err != nil {
		if streamErr != nil {
			return streamErr
		}
		return err
	}
	return r.drain()
}

func (c *Client) LogicalRestore(ctx context.Context, req RestoreRequest, src EntrySource) (RestoreResult, error) {
	return c.restore(ctx, req, src, c.logical.LogicalRestore)
}

func (c *Client) PhysicalRestore(ctx context.Context, req RestoreRequest, src EntrySource) (RestoreResult, error) {
	return c.restore(ctx, req, src, c.physical.PhysicalRestore)
}

func (c *Client) restore(ctx context.Context, req RestoreRequest, src EntrySource,
	call func(context.Context, ...grpc.CallOption) (grpc.ClientStreamingClient[pb.RestoreInput, pb.RestoreResult], error)) (RestoreResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := call(ctx)
	if err != nil {
		return RestoreResult{}, remote(ctx, err)
	}
	// The plugin's answer is awaited from the start: a plugin that ends
	// the call early (it refused the request, or needed no more) must not
	// leave the host writing into a pipe nobody will read, so its end
	// closes the entry's pipe. A failed Send or write means the plugin
	// ended the call: its status comes from finish.
	var (
		answer    pb.RestoreResult
		answerErr error
		answered  = make(chan struct{})
		pipes     = &callPipe{}
	)
	go func() {
		answerErr = st.RecvMsg(&answer)
		close(answered)
		pipes.end()
	}()
	finish := func() (RestoreResult, error) {
		_ = st.CloseSend()
		<-answered
		if answerErr != nil {
			return RestoreResult{}, remote(ctx, answerErr)
		}
		return restoreResultFromPB(&answer), nil
	}
	if err := st.Send(&pb.RestoreInput{Msg: &pb.RestoreInput_Request{Request: restoreReqToPB(req)}}); err != nil {
		return finish()
	}
	sink := &frameSink{
		header: func(e Entry, pipe uint64) error {
			h := entryToPB(e)
			h.Pipe = pipe
			return st.Send(&pb.RestoreInput{Msg: &pb.RestoreInput_Entry{Entry: h}})
		},
		data: func(b []byte) error {
			return st.Send(&pb.RestoreInput{Msg: &pb.RestoreInput_Data{Data: b}})
		},
		end: func(n int64) error {
			return st.Send(&pb.RestoreInput{Msg: &pb.RestoreInput_EntryEnd{EntryEnd: &pb.EntryEnd{Size: n}}})
		},
	}
	if c.restorePipes {
		sink.pipes, sink.call = c.pipes, pipes
	}
	// A pipe left open when the restore ends early is closed.
	defer sink.abort()
	for {
		e, r, err := src.Next(ctx)
		if errors.Is(err, io.EOF) {
			return finish()
		}
		if err != nil {
			return RestoreResult{}, fmt.Errorf("restore source: %w", err)
		}
		if e.Name == "" {
			return RestoreResult{}, errors.New("restore source: entry without a name")
		}
		w, err := sink.create(e)
		if err != nil {
			return finish()
		}
		// A failed write means the plugin ended the call: its status
		// comes from finish. A failed read is the host's source.
		if err := w.readFrom(ctx, r); err != nil {
			if w.failed() != nil {
				return finish()
			}
			return RestoreResult{}, fmt.Errorf("restore entry %s: %w", e.Name, err)
		}
		if err := w.Close(); err != nil {
			return finish()
		}
	}
}

// Freeze quiesces the database; see Engine. The lease must be renewed with
// RenewLease before Frozen.ExpiresAt, or the plugin thaws by itself.
func (c *Client) Freeze(ctx context.Context, req FreezeRequest) (Frozen, error) {
	r, err := c.snapshot.Freeze(ctx, &pb.FreezeRequest{Target: targetToPB(req.Target), Lease: durationpb.New(req.Lease), Label: req.Label,
		Archived: posToPB(req.Archived)})
	if err != nil {
		return Frozen{}, remote(ctx, err)
	}
	return Frozen{LeaseID: r.GetLeaseId(), ExpiresAt: tsFromPB(r.GetExpiresAt()), Position: posFromPB(r.GetPosition()), ConsistentTime: tsFromPB(r.GetConsistentTime())}, nil
}

// RenewLease extends a freeze lease to d from now and returns its new expiry.
func (c *Client) RenewLease(ctx context.Context, leaseID string, d time.Duration) (time.Time, error) {
	r, err := c.snapshot.RenewLease(ctx, &pb.RenewLeaseRequest{LeaseId: leaseID, Lease: durationpb.New(d)})
	if err != nil {
		return time.Time{}, remote(ctx, err)
	}
	return tsFromPB(r.GetExpiresAt()), nil
}

func (c *Client) Thaw(ctx context.Context, leaseID string) (Thawed, error) {
	r, err := c.snapshot.Thaw(ctx, &pb.ThawRequest{LeaseId: leaseID})
	if err != nil {
		return Thawed{}, remote(ctx, err)
	}
	return thawedFromPB(r), nil
}

// Archive streams segments from the plugin into out, and forwards the
// positions received on durable to the plugin. Closing durable ends the
// call cleanly (the plugin finishes or aborts its open segment); cancelling
// ctx ends it at once. An unfinished segment is aborted on out.
func (c *Client) Archive(ctx context.Context, req ArchiveRequest, out SegmentSink, durable <-chan Position) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := c.archive.Archive(ctx)
	if err != nil {
		return remote(ctx, err)
	}
	if err := st.Send(&pb.ArchiveInput{Msg: &pb.ArchiveInput_Request{Request: archiveReqToPB(req)}}); err != nil {
		_, err = st.Recv()
		return remote(ctx, err)
	}
	go func() {
		for {
			select {
			case p, ok := <-durable:
				if !ok {
					_ = st.CloseSend()
					return
				}
				if err := st.Send(&pb.ArchiveInput{Msg: &pb.ArchiveInput_Durable{Durable: posToPB(p)}}); err != nil {
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()

	var (
		w    SegmentWriter
		name string
		n    int64
	)
	abort := func(reason string) {
		if w != nil {
			_ = w.Abort(reason)
			w = nil
		}
	}
	defer func() { abort("archive stream ended") }()
	for {
		m, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return remote(ctx, err)
		}
		switch v := m.GetMsg().(type) {
		case *pb.ArchiveOutput_Begin:
			abort("protocol error: next segment begun")
			h := segHeaderFromPB(v.Begin)
			if w, err = out.Begin(ctx, h); err != nil {
				w = nil
				return fmt.Errorf("begin segment %s: %w", h.Name, err)
			}
			name, n = h.Name, 0
		case *pb.ArchiveOutput_Data:
			if w == nil {
				return errors.New("protocol error: segment data outside a segment")
			}
			if _, err := w.Write(v.Data); err != nil {
				return fmt.Errorf("write segment %s: %w", name, err)
			}
			n += int64(len(v.Data))
		case *pb.ArchiveOutput_End:
			if w == nil {
				return errors.New("protocol error: segment end outside a segment")
			}
			t := segTrailerFromPB(v.End)
			if t.Size != n {
				return fmt.Errorf("segment %s: plugin counted %d bytes, received %d: %w", name, t.Size, n, io.ErrUnexpectedEOF)
			}
			err := w.Finish(t)
			w = nil
			if err != nil {
				return fmt.Errorf("finish segment %s: %w", name, err)
			}
		case *pb.ArchiveOutput_Abort:
			abort(v.Abort)
		}
	}
}

// Replay runs replay on the plugin, answering its fetches from src.
func (c *Client) Replay(ctx context.Context, req ReplayRequest, src SegmentSource) (ReplayResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := c.replay.Replay(ctx)
	if err != nil {
		return ReplayResult{}, remote(ctx, err)
	}
	if err := st.Send(&pb.ReplayInput{Msg: &pb.ReplayInput_Request{Request: replayReqToPB(req)}}); err != nil {
		_, err = st.Recv()
		return ReplayResult{}, remote(ctx, err)
	}
	var result *ReplayResult
	for {
		m, err := st.Recv()
		if errors.Is(err, io.EOF) {
			if result == nil {
				return ReplayResult{}, errors.New("plugin ended replay without a result")
			}
			return *result, nil
		}
		if err != nil {
			return ReplayResult{}, remote(ctx, err)
		}
		switch v := m.GetMsg().(type) {
		case *pb.ReplayOutput_Result:
			r := replayResultFromPB(v.Result)
			result = &r
		case *pb.ReplayOutput_Fetch:
			q := SegmentQuery{Name: v.Fetch.GetName(), After: posFromPB(v.Fetch.GetAfter()), Stream: v.Fetch.GetStream()}
			if err := c.sendSegment(ctx, st, src, q); err != nil {
				return ReplayResult{}, err
			}
		}
	}
}

func (c *Client) sendSegment(ctx context.Context, st grpc.BidiStreamingClient[pb.ReplayInput, pb.ReplayOutput], src SegmentSource, q SegmentQuery) error {
	seg, r, err := src.Fetch(ctx, q)
	if errors.Is(err, ErrNoSegment) {
		// A failed Send surfaces as the plugin's status on the next Recv.
		_ = st.Send(&pb.ReplayInput{Msg: &pb.ReplayInput_Miss{Miss: &pb.FetchMiss{Reason: err.Error()}}})
		return nil
	}
	if err != nil {
		return fmt.Errorf("fetch segment for replay: %w", err)
	}
	defer r.Close()
	info := &pb.SegmentInfo{Header: segHeaderToPB(seg.SegmentHeader), Trailer: segTrailerToPB(seg.SegmentTrailer)}
	if err := st.Send(&pb.ReplayInput{Msg: &pb.ReplayInput_Segment{Segment: info}}); err != nil {
		return nil
	}
	w := newChunkWriter(func(b []byte) error {
		return st.Send(&pb.ReplayInput{Msg: &pb.ReplayInput_Data{Data: b}})
	})
	if err := w.readFrom(ctx, r); err != nil {
		if w.err != nil {
			return nil // stream error: reported by Recv
		}
		return fmt.Errorf("read segment %s for replay: %w", seg.Name, err)
	}
	_ = st.Send(&pb.ReplayInput{Msg: &pb.ReplayInput_Done{Done: &pb.SegmentDone{Size: w.n}}})
	return nil
}

// partSource reads an entry with file marks from a backup stream.
type partSource struct {
	what      string
	ctx       context.Context
	pipes     *Pipes // where the files FileData names arrive; nil: none offered
	recv      func() (*pb.BackupOutput, error)
	cur       *partReader
	next      *pb.FileMark // the mark that ended the current part
	n         int64        // data bytes received
	started   bool
	done      bool
	streamErr error
}

func (s *partSource) Next(ctx context.Context) (FileMark, io.Reader, error) {
	if s.cur != nil {
		err := s.cur.drain()
		s.cur.close()
		s.cur = nil
		if err != nil {
			return FileMark{}, nil, err
		}
	}
	if err := ctx.Err(); err != nil {
		return FileMark{}, nil, err
	}
	var mark FileMark
	switch {
	case s.done:
		return FileMark{}, nil, io.EOF
	case !s.started:
		s.started = true
	case s.next != nil:
		mark = fileMarkFromPB(s.next)
		s.next = nil
	}
	if err := checkMark(mark); err != nil {
		return FileMark{}, nil, fmt.Errorf("protocol error: %s: %w", s.what, err)
	}
	if mark.Reuse {
		if mark.Key == "" || mark.Length <= 0 {
			return FileMark{}, nil, fmt.Errorf("protocol error: %s: a reused file record without a key or length", s.what)
		}
		// No data follows: the next message is a mark or the end.
		m, err := s.recv()
		if err != nil {
			s.streamErr = err
			return FileMark{}, nil, err
		}
		switch v := m.GetMsg().(type) {
		case *pb.BackupOutput_FileMark:
			s.next = v.FileMark
		case *pb.BackupOutput_EntryEnd:
			if err := s.end(v.EntryEnd.GetSize()); err != nil {
				return FileMark{}, nil, err
			}
			s.next = nil
		default:
			return FileMark{}, nil, fmt.Errorf("protocol error: %s: data after reused file record %s", s.what, mark.Key)
		}
		return mark, nil, nil
	}
	s.cur = &partReader{s: s, key: mark.Key}
	return mark, s.cur, nil
}

// close closes a file the current part was reading, if any.
func (s *partSource) close() {
	if s.cur != nil {
		s.cur.close()
	}
}

// partReader reads one part: data frames, and the files FileData names,
// which it reads from the files themselves.
type partReader struct {
	s    *partSource
	key  string // the part's file record, for errors
	buf  []byte
	file *os.File // the file being read, and what is left of its span
	off  int64
	left int64
	past bool // the file ended before its span: the rest is zeros
	done bool
	err  error
}

func (r *partReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 && r.left == 0 {
		if r.done {
			return 0, io.EOF
		}
		if r.err != nil {
			return 0, r.err
		}
		r.err = r.receive()
	}
	if r.left > 0 {
		return r.readFile(p)
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// receive takes the next message of the part: data, a file, or its end.
func (r *partReader) receive() error {
	s := r.s
	if s.done || s.next != nil {
		r.done = true
		return nil
	}
	m, err := s.recv()
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = fmt.Errorf("%s: %w", s.what, io.ErrUnexpectedEOF)
		}
		s.streamErr = err
		return err
	}
	switch v := m.GetMsg().(type) {
	case *pb.BackupOutput_Data:
		s.n += int64(len(v.Data))
		r.buf = v.Data
	case *pb.BackupOutput_FileData:
		return r.open(v.FileData)
	case *pb.BackupOutput_FileMark:
		s.next = v.FileMark
		r.done = true
	case *pb.BackupOutput_EntryEnd:
		if err := s.end(v.EntryEnd.GetSize()); err != nil {
			return err
		}
		r.done = true
	default:
		return fmt.Errorf("protocol error: %s not ended before the next message", s.what)
	}
	return nil
}

// open takes the file a FileData message names.
func (r *partReader) open(d *pb.FileData) error {
	s := r.s
	if s.pipes == nil {
		return fmt.Errorf("protocol error: %s: a file passed to a host that did not offer to read files", s.what)
	}
	if d.GetOffset() < 0 || d.GetLength() <= 0 {
		return fmt.Errorf("protocol error: %s: file data at offset %d, length %d", s.what, d.GetOffset(), d.GetLength())
	}
	f, err := s.pipes.take(s.ctx, d.GetFile())
	if err != nil {
		return fmt.Errorf("%s: %w", s.what, err)
	}
	r.close()
	r.file, r.off, r.left, r.past = f, d.GetOffset(), d.GetLength(), false
	s.n += d.GetLength()
	return nil
}

// readFile reads the current file's span into p, zeros past its end.
func (r *partReader) readFile(p []byte) (int, error) {
	p = p[:min(int64(len(p)), r.left)]
	k := 0
	if !r.past {
		var err error
		k, err = r.file.ReadAt(p, r.off)
		switch {
		case errors.Is(err, io.EOF):
			r.past = true
		case err != nil:
			r.err = fmt.Errorf("%s, file record %q: read the file the plugin passed: %w", r.s.what, r.key, err)
			return 0, r.err
		}
	}
	clear(p[k:])
	r.off += int64(len(p))
	r.left -= int64(len(p))
	if r.left == 0 {
		r.close()
	}
	return len(p), nil
}

func (r *partReader) close() {
	if r.file != nil {
		r.file.Close()
		r.file = nil
	}
}

// drain reads what is left of the part, so the stream is positioned after it.
func (r *partReader) drain() error {
	r.left = 0 // a file's unread bytes need not be read to be skipped
	r.close()
	_, err := io.Copy(io.Discard, r)
	return err
}

// end checks the sender's count at the end of the entry.
func (s *partSource) end(size int64) error {
	s.done = true
	if size != s.n {
		return fmt.Errorf("%s: sender counted %d bytes, received %d: %w", s.what, size, s.n, io.ErrUnexpectedEOF)
	}
	return nil
}

// drain reads the rest of the entry, up to its end.
func (s *partSource) drain(ctx context.Context) error {
	for {
		_, _, err := s.Next(ctx)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
