package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/amber-backup/amber/plugins/api/clock"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"sync"
	"time"

	pb "github.com/amber-backup/amber/plugins/api/amber/plugin/v1"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// ProtocolVersion is the version of amber.plugin.v1 in go-plugin's
// VersionedPlugins negotiation.
const ProtocolVersion = 1

// PluginName is the name of the engine plugin in go-plugin's plugin set.
const PluginName = "engine"

// Handshake is shared by the host and every plugin. The cookie only keeps a
// plugin binary from being run by hand; it is not a security measure.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  ProtocolVersion,
	MagicCookieKey:   "AMBER_PLUGIN_COOKIE",
	MagicCookieValue: "6f1c2f0e-amber-engine-plugin",
}

// VersionedPlugins is the version -> plugin set map for go-plugin. The host
// passes nil; a plugin passes its engine.
func VersionedPlugins(e Engine) map[int]plugin.PluginSet {
	return map[int]plugin.PluginSet{
		ProtocolVersion: {PluginName: &enginePlugin{engine: e}},
	}
}

// Serve runs e as a plugin process: it logs JSON to stderr through hclog
// (the host relays it into its own log), negotiates the protocol version
// with the host and serves until the host kills it. slog's default logger
// is set to the same JSON output, so engines just use slog. A plugin's main
// is one line: api.Serve(myengine.New()).
func Serve(e Engine) {
	go exitWithParent(os.Getppid(), time.Second)
	plugin.Serve(ServeConfig(e))
}

// exitWithParent ends the plugin when the host that started it is gone (a
// kill -9 of amber re-parents the plugin): a plugin never outlives its host,
// and what it held on the database (a session, a walsender) is released.
func exitWithParent(parent int, every time.Duration) {
	for range time.Tick(every) {
		if os.Getppid() != parent {
			os.Exit(1)
		}
	}
}

// ServeConfig is the go-plugin configuration Serve uses, for plugins that
// need to adjust it. It must be called before plugin.Serve, which replaces
// os.Stderr.
func ServeConfig(e Engine) *plugin.ServeConfig {
	level := hclog.LevelFromString(os.Getenv("AMBER_PLUGIN_LOG_LEVEL"))
	if level == hclog.NoLevel {
		level = hclog.Info
	}
	logger := hclog.New(&hclog.LoggerOptions{
		Level:      level,
		Output:     os.Stderr,
		JSONFormat: true,
	})
	slog.SetDefault(slog.New(NewHCLogHandler(logger)))
	return &plugin.ServeConfig{
		HandshakeConfig:  Handshake,
		VersionedPlugins: VersionedPlugins(e),
		GRPCServer:       NewGRPCServer,
		Logger:           logger,
	}
}

// NewGRPCServer builds the plugin's gRPC server: panics in handlers become
// errors, and messages are bounded.
func NewGRPCServer(opts []grpc.ServerOption) *grpc.Server {
	opts = append(opts,
		grpc.ChainUnaryInterceptor(recoverUnary),
		grpc.ChainStreamInterceptor(recoverStream),
		// A BackupRequest may carry the previous backup's file records.
		grpc.MaxRecvMsgSize(MaxRequestSize),
		grpc.InitialWindowSize(StreamWindow),
		grpc.InitialConnWindowSize(2*StreamWindow),
		grpc.WriteBufferSize(TransportBuffer),
		grpc.ReadBufferSize(TransportBuffer),
	)
	return grpc.NewServer(opts...)
}

// The gRPC connection between amber and a plugin is a local socket that
// carries whole backups (1 MiB data frames) and log segments (16 MiB WAL
// segments). With gRPC's defaults (64 KiB flow-control windows that its
// bandwidth estimate keeps small on a socket with almost no round-trip
// time, and 32 KiB socket buffers) every MiB costs the two processes
// dozens of window updates, wake-ups and system calls; on a busy machine
// each wake-up waits for a core. A window that holds several frames, and
// buffers of a frame, let the sender run ahead: a --data-dir backup took
// about 6% less time and a quarter less system time, and the WAL archive's
// lag p99 under load fell (docs/benchmarks.md, "Archive lag and the plugin
// connection"). The windows bound what one side buffers for the other, per
// call and per connection.
const (
	StreamWindow    = 8 << 20
	TransportBuffer = 1 << 20
)

// DialOptions are the host's side of the transport settings above.
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithInitialWindowSize(StreamWindow),
		grpc.WithInitialConnWindowSize(2 * StreamWindow),
		grpc.WithWriteBufferSize(TransportBuffer),
		grpc.WithReadBufferSize(TransportBuffer),
	}
}

func panicError(method string, v any) error {
	slog.Error("plugin panicked", "method", method, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
	return status.Errorf(codes.Internal, "plugin panicked in %s: %v", method, v)
}

func recoverUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = panicError(info.FullMethod, v)
		}
	}()
	return handler(ctx, req)
}

func recoverStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = panicError(info.FullMethod, v)
		}
	}()
	return handler(srv, ss)
}

// enginePlugin is the go-plugin glue. On the plugin side engine is set; on
// the host side it is nil and only GRPCClient is used.
type enginePlugin struct {
	plugin.NetRPCUnsupportedPlugin
	engine Engine
}

func (p *enginePlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	return register(s, p.engine, pipesFromEnv())
}

// Register registers the services of e on s. Serve does this in a plugin;
// tests and in-process hosts use it with NewGRPCServer and NewClient.
func Register(s *grpc.Server, e Engine) error {
	return register(s, e, nil)
}

// register registers e's services; with pipes, backup entries travel
// through pipes to the host (pipes.go).
func register(s *grpc.Server, e Engine, pipes *Pipes) error {
	srv, err := newServer(e)
	if err != nil {
		return err
	}
	srv.pipes = pipes
	pb.RegisterIdentityServiceServer(s, srv)
	pb.RegisterLogicalServiceServer(s, srv)
	pb.RegisterPhysicalServiceServer(s, srv)
	pb.RegisterSnapshotServiceServer(s, srv)
	pb.RegisterArchiveServiceServer(s, srv)
	pb.RegisterReplayServiceServer(s, srv)
	pb.RegisterLogFileServiceServer(s, srv)
	return nil
}

func (p *enginePlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return NewClient(c), nil
}

// server adapts an Engine to the gRPC services.
type server struct {
	pb.UnimplementedIdentityServiceServer
	pb.UnimplementedLogicalServiceServer
	pb.UnimplementedPhysicalServiceServer
	pb.UnimplementedSnapshotServiceServer
	pb.UnimplementedArchiveServiceServer
	pb.UnimplementedReplayServiceServer
	pb.UnimplementedLogFileServiceServer

	engine Engine
	info   Info
	clock  clock.Clock
	pipes  *Pipes // nil: entries travel on the gRPC stream

	mu     sync.Mutex
	leases map[string]*lease
}

type lease struct {
	timer   clock.Timer
	expires time.Time
	expired bool
}

func newServer(e Engine) (*server, error) {
	if e == nil {
		return nil, errors.New("api: no engine to serve")
	}
	info, err := e.Info(context.Background())
	if err != nil {
		return nil, fmt.Errorf("engine info: %w", err)
	}
	if info.Engine == "" {
		return nil, errors.New("engine info: empty engine name")
	}
	return &server{engine: e, info: info, clock: clock.Real, leases: map[string]*lease{}}, nil
}

// require fails unless the engine declared c.
func (s *server) require(c Capability) error {
	if s.info.Has(c) {
		return nil
	}
	return s.status(&UnsupportedError{Engine: s.info.Engine, Capability: c})
}

// status turns an engine error into a gRPC status error.
func (s *server) status(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var ue *UnsupportedError
	switch {
	case errors.As(err, &ue):
		if ue.Engine == "" {
			ue.Engine = s.info.Engine
		}
		return status.Error(codes.Unimplemented, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, ErrNoSegment):
		return status.Error(codes.NotFound, err.Error())
	}
	return status.Error(codes.Unknown, err.Error())
}

func (s *server) Info(ctx context.Context, _ *pb.InfoRequest) (*pb.InfoResponse, error) {
	info, err := s.engine.Info(ctx)
	if err != nil {
		return nil, s.status(err)
	}
	r := infoToPB(info)
	r.ReadsPipes = s.pipes != nil
	return r, nil
}

func (s *server) Probe(ctx context.Context, req *pb.ProbeRequest) (*pb.ProbeResponse, error) {
	p, err := s.engine.Probe(ctx, targetFromPB(req.GetTarget()))
	if err != nil {
		return nil, s.status(err)
	}
	return probeToPB(p), nil
}

func (s *server) ParsePosition(ctx context.Context, req *pb.ParsePositionRequest) (*pb.Position, error) {
	p, err := s.engine.ParsePosition(ctx, req.GetText())
	if err != nil {
		if _, ok := status.FromError(err); !ok {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
		return nil, err
	}
	return posToPB(p), nil
}

func (s *server) DescribeLogFile(ctx context.Context, req *pb.DescribeLogFileRequest) (*pb.DescribeLogFileResponse, error) {
	if err := s.require(LogFiles); err != nil {
		return nil, err
	}
	f, err := s.engine.DescribeLogFile(ctx, LogFileQuery{Name: req.GetName(), Path: req.GetPath(), Size: req.GetSize(), Settings: req.GetSettings()})
	if err != nil {
		return nil, s.status(err)
	}
	if f.Ignore {
		return &pb.DescribeLogFileResponse{Ignore: true}, nil
	}
	return &pb.DescribeLogFileResponse{Header: segHeaderToPB(f.Segment.SegmentHeader), Trailer: segTrailerToPB(f.Segment.SegmentTrailer)}, nil
}

// backupSink sends entries as BackupOutput frames.
func backupSink(send func(*pb.BackupOutput) error) *frameSink {
	return &frameSink{
		header: func(e Entry, pipe uint64) error {
			h := entryToPB(e)
			h.Pipe = pipe
			return send(&pb.BackupOutput{Msg: &pb.BackupOutput_Entry{Entry: h}})
		},
		data: func(b []byte) error {
			return send(&pb.BackupOutput{Msg: &pb.BackupOutput_Data{Data: b}})
		},
		end: func(n int64) error {
			return send(&pb.BackupOutput{Msg: &pb.BackupOutput_EntryEnd{EntryEnd: &pb.EntryEnd{Size: n}}})
		},
		mark: func(m FileMark) error {
			return send(&pb.BackupOutput{Msg: &pb.BackupOutput_FileMark{FileMark: fileMarkToPB(m)}})
		},
		fileData: func(n uint64, off, length int64) error {
			return send(&pb.BackupOutput{Msg: &pb.BackupOutput_FileData{FileData: &pb.FileData{File: n, Offset: off, Length: length}}})
		},
	}
}

func (s *server) backup(ctx context.Context, req *pb.BackupRequest, send func(*pb.BackupOutput) error,
	run func(context.Context, BackupRequest, EntrySink) (BackupResult, error)) error {
	sink := backupSink(send)
	switch {
	case !req.GetFileRecords():
		sink.mark = nil
		sink.pipes = s.pipes
	case req.GetReadsFiles():
		sink.files = s.pipes // nil without the socket: no FileSender
	}
	// An entry's pipe left open (an error, a panic) is closed, so the host
	// reads its end and then this call's status.
	defer sink.abort()
	res, err := run(ctx, backupReqFromPB(req), sink)
	if err != nil {
		return s.status(err)
	}
	if sink.open {
		return status.Error(codes.Internal, "engine returned with an entry still open")
	}
	return send(&pb.BackupOutput{Msg: &pb.BackupOutput_Result{Result: backupResultToPB(res)}})
}

func (s *server) LogicalDump(req *pb.BackupRequest, st grpc.ServerStreamingServer[pb.BackupOutput]) error {
	if err := s.require(LogicalDump); err != nil {
		return err
	}
	return s.backup(st.Context(), req, st.Send, s.engine.LogicalDump)
}

func (s *server) PhysicalBackup(req *pb.BackupRequest, st grpc.ServerStreamingServer[pb.BackupOutput]) error {
	if err := s.require(PhysicalBackup); err != nil {
		return err
	}
	return s.backup(st.Context(), req, st.Send, s.engine.PhysicalBackup)
}

func (s *server) restore(st grpc.ClientStreamingServer[pb.RestoreInput, pb.RestoreResult],
	run func(context.Context, RestoreRequest, EntrySource) (RestoreResult, error)) error {
	first, err := st.Recv()
	if err != nil {
		return err
	}
	req := first.GetRequest()
	if req == nil {
		return status.Error(codes.InvalidArgument, "restore stream must start with a RestoreRequest")
	}
	src := &frameSource{pipes: s.pipes, recv: func() (frame, error) {
		m, err := st.Recv()
		if err != nil {
			return frame{}, err
		}
		switch v := m.GetMsg().(type) {
		case *pb.RestoreInput_Entry:
			e := entryFromPB(v.Entry)
			return frame{header: &e, pipe: v.Entry.GetPipe()}, nil
		case *pb.RestoreInput_Data:
			return frame{data: v.Data}, nil
		case *pb.RestoreInput_EntryEnd:
			return frame{end: true, size: v.EntryEnd.GetSize()}, nil
		}
		return frame{}, errors.New("protocol error: unexpected message in restore stream")
	}}
	// The last entry's pipe, or one an engine left unread, is closed, so a
	// host still writing into it gets an error rather than blocking.
	defer src.closePipe()
	res, err := run(st.Context(), restoreReqFromPB(req), src)
	if err != nil {
		return s.status(err)
	}
	return st.SendAndClose(restoreResultToPB(res))
}

func (s *server) LogicalRestore(st grpc.ClientStreamingServer[pb.RestoreInput, pb.RestoreResult]) error {
	if err := s.require(LogicalRestore); err != nil {
		return err
	}
	return s.restore(st, s.engine.LogicalRestore)
}

func (s *server) PhysicalRestore(st grpc.ClientStreamingServer[pb.RestoreInput, pb.RestoreResult]) error {
	if err := s.require(PhysicalRestore); err != nil {
		return err
	}
	return s.restore(st, s.engine.PhysicalRestore)
}

// Leases. The engine only freezes and thaws; the lease clock lives here.

func newLeaseID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (s *server) Freeze(ctx context.Context, req *pb.FreezeRequest) (*pb.FreezeResponse, error) {
	if err := s.require(Freeze); err != nil {
		return nil, err
	}
	d := durFromPB(req.GetLease())
	if d <= 0 {
		return nil, status.Error(codes.InvalidArgument, "freeze needs a lease duration > 0")
	}
	id := newLeaseID()
	fr, err := s.engine.Freeze(ctx, FreezeRequest{Target: targetFromPB(req.GetTarget()), Lease: d, Label: req.GetLabel(), LeaseID: id,
		Archived: posFromPB(req.GetArchived())})
	if err != nil {
		return nil, s.status(err)
	}
	s.mu.Lock()
	l := &lease{expires: s.clock.Now().Add(d)}
	l.timer = s.clock.AfterFunc(d, func() { s.expire(id) })
	s.leases[id] = l
	s.mu.Unlock()
	return &pb.FreezeResponse{
		LeaseId:        id,
		ExpiresAt:      timestamppb.New(l.expires),
		Position:       posToPB(fr.Position),
		ConsistentTime: tsToPB(fr.ConsistentTime),
	}, nil
}

// expire thaws a lease nobody renewed.
func (s *server) expire(id string) {
	s.mu.Lock()
	l := s.leases[id]
	if l == nil || l.expired {
		s.mu.Unlock()
		return
	}
	l.expired = true
	s.mu.Unlock()
	slog.Warn("freeze lease expired without thaw; thawing", "lease", id)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	defer func() {
		if v := recover(); v != nil {
			slog.Error("plugin panicked thawing an expired lease", "lease", id, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
		}
	}()
	if _, err := s.engine.Thaw(ctx, id); err != nil {
		slog.Error("thaw after lease expiry failed", "lease", id, "error", err)
	}
}

func (s *server) RenewLease(_ context.Context, req *pb.RenewLeaseRequest) (*pb.RenewLeaseResponse, error) {
	if err := s.require(Freeze); err != nil {
		return nil, err
	}
	d := durFromPB(req.GetLease())
	if d <= 0 {
		return nil, status.Error(codes.InvalidArgument, "renew needs a lease duration > 0")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.leases[req.GetLeaseId()]
	switch {
	case l == nil:
		return nil, status.Errorf(codes.NotFound, "no freeze lease %q", req.GetLeaseId())
	case l.expired || !l.timer.Stop():
		return nil, status.Errorf(codes.FailedPrecondition, "freeze lease %s expired at %s; the engine thawed by itself", req.GetLeaseId(), l.expires.Format(time.RFC3339Nano))
	}
	l.expires = s.clock.Now().Add(d)
	l.timer.Reset(d)
	return &pb.RenewLeaseResponse{ExpiresAt: timestamppb.New(l.expires)}, nil
}

func (s *server) Thaw(ctx context.Context, req *pb.ThawRequest) (*pb.ThawResponse, error) {
	if err := s.require(Freeze); err != nil {
		return nil, err
	}
	id := req.GetLeaseId()
	s.mu.Lock()
	l := s.leases[id]
	if l == nil {
		s.mu.Unlock()
		return nil, status.Errorf(codes.NotFound, "no freeze lease %q", id)
	}
	delete(s.leases, id)
	expired := l.expired || !l.timer.Stop()
	l.expired = true
	s.mu.Unlock()
	if expired {
		return nil, status.Errorf(codes.FailedPrecondition,
			"freeze lease %s expired at %s before Thaw; the engine thawed by itself and a snapshot taken under it must be discarded",
			id, l.expires.Format(time.RFC3339Nano))
	}
	t, err := s.engine.Thaw(ctx, id)
	if err != nil {
		return nil, s.status(err)
	}
	return thawedToPB(t), nil
}

// Archive.

type archiveSink struct {
	send func(*pb.ArchiveOutput) error
	open *segmentWriter
}

func (a *archiveSink) Begin(ctx context.Context, h SegmentHeader) (SegmentWriter, error) {
	if a.open != nil {
		return nil, fmt.Errorf("segment %s begun before segment %s was finished or aborted", h.Name, a.open.name)
	}
	if h.Name == "" {
		return nil, errors.New("segment without a name")
	}
	if err := a.send(&pb.ArchiveOutput{Msg: &pb.ArchiveOutput_Begin{Begin: segHeaderToPB(h)}}); err != nil {
		return nil, fmt.Errorf("segment %s: %w", h.Name, err)
	}
	w := &segmentWriter{sink: a, name: h.Name}
	w.chunkWriter = newChunkWriter(func(b []byte) error {
		return a.send(&pb.ArchiveOutput{Msg: &pb.ArchiveOutput_Data{Data: b}})
	})
	a.open = w
	return w, nil
}

type segmentWriter struct {
	*chunkWriter
	sink *archiveSink
	name string
}

func (w *segmentWriter) Finish(t SegmentTrailer) error {
	if w.sink.open != w {
		return fmt.Errorf("segment %s already finished or aborted", w.name)
	}
	w.sink.open = nil
	if err := w.flush(); err != nil {
		return fmt.Errorf("segment %s: %w", w.name, err)
	}
	t.Size = w.n
	return w.sink.send(&pb.ArchiveOutput{Msg: &pb.ArchiveOutput_End{End: segTrailerToPB(t)}})
}

func (w *segmentWriter) Abort(reason string) error {
	if w.sink.open != w {
		return nil
	}
	w.sink.open = nil
	if reason == "" {
		reason = "aborted by the engine"
	}
	return w.sink.send(&pb.ArchiveOutput{Msg: &pb.ArchiveOutput_Abort{Abort: reason}})
}

func (s *server) Archive(st grpc.BidiStreamingServer[pb.ArchiveInput, pb.ArchiveOutput]) error {
	if err := s.require(Archive); err != nil {
		return err
	}
	first, err := st.Recv()
	if err != nil {
		return err
	}
	req := first.GetRequest()
	if req == nil {
		return status.Error(codes.InvalidArgument, "archive stream must start with an ArchiveRequest")
	}
	ctx, cancel := context.WithCancel(st.Context())
	defer cancel()

	// Receive durable positions, keeping only the newest one pending so a
	// slow engine never blocks the host.
	recvd := make(chan Position)
	go func() {
		defer close(recvd)
		for {
			m, err := st.Recv()
			if err != nil {
				if !errors.Is(err, io.EOF) {
					cancel()
				}
				return
			}
			if p := m.GetDurable(); p != nil {
				select {
				case recvd <- posFromPB(p):
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	durable := make(chan Position)
	go func() {
		defer close(durable)
		var pending *Position
		in := recvd
		for in != nil || pending != nil {
			var out chan Position
			var p Position
			if pending != nil {
				out, p = durable, *pending
			}
			select {
			case q, ok := <-in:
				if !ok {
					in = nil
					continue
				}
				pending = &q
			case out <- p:
				pending = nil
			case <-ctx.Done():
				return
			}
		}
	}()

	sink := &archiveSink{send: st.Send}
	err = s.engine.Archive(ctx, archiveReqFromPB(req), sink, durable)
	if sink.open != nil {
		_ = sink.open.Abort("archive ended")
	}
	return s.status(err)
}

// Replay.

type replaySource struct {
	send func(*pb.ReplayOutput) error
	recv func() (*pb.ReplayInput, error)
	cur  *chunkReader
}

func (r *replaySource) Fetch(ctx context.Context, q SegmentQuery) (Segment, io.ReadCloser, error) {
	if r.cur != nil {
		if err := r.cur.drain(); err != nil {
			return Segment{}, nil, err
		}
		r.cur = nil
	}
	f := &pb.Fetch{Stream: q.Stream}
	switch {
	case q.Name != "":
		f.Query = &pb.Fetch_Name{Name: q.Name}
	default:
		f.Query = &pb.Fetch_After{After: posToPB(q.After)}
		if f.GetAfter() == nil {
			f.Query = &pb.Fetch_After{After: &pb.Position{}}
		}
	}
	if err := r.send(&pb.ReplayOutput{Msg: &pb.ReplayOutput_Fetch{Fetch: f}}); err != nil {
		return Segment{}, nil, err
	}
	m, err := r.recv()
	if err != nil {
		return Segment{}, nil, err
	}
	switch v := m.GetMsg().(type) {
	case *pb.ReplayInput_Miss:
		return Segment{}, nil, fmt.Errorf("%w: %s", ErrNoSegment, v.Miss.GetReason())
	case *pb.ReplayInput_Segment:
		seg := Segment{SegmentHeader: segHeaderFromPB(v.Segment.GetHeader()), SegmentTrailer: segTrailerFromPB(v.Segment.GetTrailer())}
		r.cur = &chunkReader{what: "segment " + seg.Name, next: func() ([]byte, bool, int64, error) {
			m, err := r.recv()
			if err != nil {
				return nil, false, 0, err
			}
			switch v := m.GetMsg().(type) {
			case *pb.ReplayInput_Data:
				return v.Data, false, 0, nil
			case *pb.ReplayInput_Done:
				return nil, true, v.Done.GetSize(), nil
			}
			return nil, false, 0, errors.New("protocol error: unexpected message inside a segment")
		}}
		return seg, io.NopCloser(r.cur), nil
	}
	return Segment{}, nil, errors.New("protocol error: Fetch answered with neither segment nor miss")
}

func (s *server) Replay(st grpc.BidiStreamingServer[pb.ReplayInput, pb.ReplayOutput]) error {
	if err := s.require(Replay); err != nil {
		return err
	}
	first, err := st.Recv()
	if err != nil {
		return err
	}
	req := first.GetRequest()
	if req == nil {
		return status.Error(codes.InvalidArgument, "replay stream must start with a ReplayRequest")
	}
	src := &replaySource{send: st.Send, recv: st.Recv}
	res, err := s.engine.Replay(st.Context(), replayReqFromPB(req), src)
	if err != nil {
		return s.status(err)
	}
	return st.Send(&pb.ReplayOutput{Msg: &pb.ReplayOutput_Result{Result: replayResultToPB(res)}})
}
