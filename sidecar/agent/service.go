package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/amber-backup/amber/plugins/api"
	"github.com/amber-backup/amber/sidecar/agent/agentpb"
	"github.com/amber-backup/amber/sidecar/job"
	"github.com/amber-backup/amber/sidecar/repo"
	"github.com/amber-backup/amber/sidecar/storage/throttle"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// guard admits a call: the agent is not shutting down, and the caller
// presented a client certificate that was verified during the handshake
// (the TLS configuration already refuses any other; this is a second lock).
func (a *Agent) guard(ctx context.Context, method string) error {
	if a.closing.Load() {
		return status.Error(codes.Unavailable, "the agent is shutting down; call again once its pod is back")
	}
	p, ok := peer.FromContext(ctx)
	if !ok {
		return status.Error(codes.Unauthenticated, "a verified client certificate is required")
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0]) == 0 {
		return status.Error(codes.Unauthenticated, "a verified client certificate is required")
	}
	a.calls.Add(1)
	a.log.Debug("agent call", "method", method, "client", ti.State.VerifiedChains[0][0].Subject.CommonName)
	return nil
}

func (a *Agent) unaryGuard(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := a.guard(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (a *Agent) streamGuard(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := a.guard(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return h(srv, ss)
}

// toStatus gives err the gRPC code that says what the caller can do.
func (a *Agent) toStatus(err error) error {
	var re *api.RemoteError
	switch {
	case err == nil:
		return nil
	case a.life.Err() != nil && errors.Is(err, context.Canceled):
		return status.Errorf(codes.Unavailable, "the agent is shutting down: %v", err)
	case errors.Is(err, job.ErrUsage):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, api.ErrUnsupported):
		return status.Error(codes.Unimplemented, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.As(err, &re) && (re.Code == codes.FailedPrecondition || re.Code == codes.NotFound || re.Code == codes.InvalidArgument):
		return status.Error(re.Code, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// service implements agentpb.AgentServiceServer.
type service struct {
	agentpb.UnimplementedAgentServiceServer
	a *Agent
}

var _ agentpb.AgentServiceServer = (*service)(nil)

// pluginVersion asks the plugin once.
func (a *Agent) pluginVersion(ctx context.Context) string {
	a.mu.Lock()
	v := a.pluginVer
	a.mu.Unlock()
	if v != "" {
		return v
	}
	info, err := a.cfg.Engine.Info(ctx)
	if err != nil {
		return ""
	}
	a.mu.Lock()
	a.pluginVer = info.PluginVersion
	a.mu.Unlock()
	return info.PluginVersion
}

// probe asks the plugin about the database and remembers its lineage.
func (a *Agent) probe(ctx context.Context) (api.Probe, error) {
	p, err := a.cfg.Engine.Probe(ctx, a.cfg.Target)
	if err != nil {
		return p, err
	}
	if p.SystemID != "" {
		a.mu.Lock()
		a.systemID = p.SystemID
		a.mu.Unlock()
	}
	return p, nil
}

func (s *service) Probe(ctx context.Context, _ *agentpb.ProbeRequest) (*agentpb.ProbeResponse, error) {
	a := s.a
	p, err := a.probe(ctx)
	if err != nil {
		a.noteError("probe", err)
		return nil, status.Errorf(codes.Unavailable, "probe %s: %v", a.cfg.EngineName, err)
	}
	out := &agentpb.ProbeResponse{Engine: a.cfg.EngineName, ServerVersion: p.ServerVersion, Role: rolePB(p.Role),
		SystemId: p.SystemID, Healthy: p.Healthy, Detail: p.Detail, Facts: p.Facts, PluginVersion: a.pluginVersion(ctx)}
	if p.Role == api.RoleReplica {
		out.ReplicationLag = dur(p.ReplicationLag)
	}
	if !p.Position.IsZero() {
		out.Position = posPB(p.Position)
	}
	return out, nil
}

func (s *service) Backup(req *agentpb.BackupRequest, stream agentpb.AgentService_BackupServer) error {
	a := s.a
	mode := job.ModePhysical
	switch req.GetMode() {
	case agentpb.BackupMode_BACKUP_MODE_UNSPECIFIED, agentpb.BackupMode_BACKUP_MODE_PHYSICAL:
	case agentpb.BackupMode_BACKUP_MODE_LOGICAL:
		mode = job.ModeLogical
	default:
		return status.Errorf(codes.InvalidArgument, "unknown backup mode %v", req.GetMode())
	}
	interval := time.Second
	if req.GetProgressInterval() != nil {
		interval = max(req.GetProgressInterval().AsDuration(), 100*time.Millisecond)
	}
	name := req.GetName()
	if name == "" {
		name = a.cfg.EngineName
	}
	b := &runningBackup{name: name, mode: mode, started: a.clk.Now()}
	a.mu.Lock()
	if cur := a.backup; cur != nil {
		a.mu.Unlock()
		return status.Errorf(codes.FailedPrecondition, "a %s backup %q is running since %s; one backup runs at a time: wait for its result",
			cur.mode, cur.name, cur.started.UTC().Format(time.RFC3339))
	}
	a.backup = b
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.backup = nil
		a.mu.Unlock()
	}()

	// The backup ends with its call, and at shutdown.
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	defer context.AfterFunc(a.life, cancel)()
	ctx = job.WithLogger(ctx, a.jobLog)
	if req.GetUploadBytesPerSecond() < 0 {
		return status.Error(codes.InvalidArgument, "upload_bytes_per_second must be >= 0")
	}
	ctx = throttle.WithLimit(ctx, req.GetUploadBytesPerSecond())
	tags := maps.Clone(a.cfg.Tags)
	if tags == nil {
		tags = map[string]string{}
	}
	maps.Copy(tags, req.GetTags())

	target := a.cfg.Target
	if mode == job.ModePhysical && a.cfg.DataDir != "" {
		if err := readableDir(a.cfg.DataDir); err != nil {
			a.backupFailed(err)
			return status.Error(codes.FailedPrecondition, err.Error())
		}
		target.DataDir = a.cfg.DataDir
	}

	type outcome struct {
		rep *job.BackupReport
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		rep, err := job.BackupEngine(ctx, a.cfg.Repo, a.cfg.Engine, job.EngineBackup{Engine: a.cfg.EngineName, Mode: mode,
			Name: name, Tags: tags, Target: target, Options: req.GetOptions()}, a.clk,
			func(f func() int64) { b.done.Store(&f) })
		done <- outcome{rep, err}
	}()
	for {
		select {
		case o := <-done:
			if o.err != nil {
				a.backupFailed(o.err)
				return a.toStatus(o.err)
			}
			res := a.backupDone(ctx, b, o.rep)
			return stream.Send(&agentpb.BackupEvent{Event: &agentpb.BackupEvent_Result{Result: res}})
		case <-a.clk.After(interval):
			ev := &agentpb.BackupEvent{Event: &agentpb.BackupEvent_Progress{Progress: &agentpb.Progress{
				BytesIn: b.bytes(), Elapsed: dur(a.clk.Now().Sub(b.started))}}}
			if err := stream.Send(ev); err != nil {
				cancel()
				<-done
				return err
			}
		}
	}
}

// backupFailed records a failed backup for Status and the metrics.
func (a *Agent) backupFailed(err error) {
	rec := a.noteError("backup", err)
	a.m.backups.WithLabelValues("failure").Inc()
	a.mu.Lock()
	a.lastBkErr = rec
	a.mu.Unlock()
}

// backupDone records a committed backup and starts recomputing the window.
func (a *Agent) backupDone(ctx context.Context, b *runningBackup, rep *job.BackupReport) *agentpb.BackupResult {
	now := a.clk.Now()
	res := &agentpb.BackupResult{Id: rep.ID.String(), ShortId: rep.ID.Short(), Name: rep.Name, BytesIn: rep.BytesIn,
		BytesAdded: rep.BytesAdded, Duration: dur(rep.Duration), StartedAt: ts(b.started), FinishedAt: ts(now), Mode: b.mode,
		FilesRead: rep.FilesRead, FilesReused: rep.FilesReused, BytesReused: rep.BytesReused}
	if rep.Previous != (repo.ID{}) {
		res.PreviousId = rep.Previous.String()
	}
	all, err := a.cfg.Repo.Backups(ctx)
	if err != nil {
		a.noteError("window", fmt.Errorf("list backups after backup %s: %w", rep.ID.Short(), err))
	}
	for _, m := range all {
		if m.ID == rep.ID {
			res.ConsistentTime = ts(m.ConsistentTime)
			if m.Record != nil {
				res.Consistent = &agentpb.Position{Epoch: m.Record.Consistent.Epoch, Offset: m.Record.Consistent.Offset,
					Text: m.Record.Consistent.Text}
				if m.Record.SystemID != "" {
					a.mu.Lock()
					a.systemID = m.Record.SystemID
					a.mu.Unlock()
				}
			}
		}
	}
	a.m.backups.WithLabelValues("success").Inc()
	a.mu.Lock()
	a.lastBackup, a.lastBkErr = res, nil
	a.mu.Unlock()
	a.win.kick()
	return res
}

func (s *service) Freeze(ctx context.Context, req *agentpb.FreezeRequest) (*agentpb.FreezeResponse, error) {
	a := s.a
	d := req.GetLease().AsDuration()
	if req.GetLease() == nil || d <= 0 {
		return nil, status.Error(codes.InvalidArgument, "freeze needs a lease > 0: the database thaws by itself when it runs out")
	}
	if d > a.cfg.MaxLease {
		return nil, status.Errorf(codes.InvalidArgument, "a freeze lease of %s is longer than this agent grants (%s); ask for less and renew it", d, a.cfg.MaxLease)
	}
	end, err := job.ArchivedEndOf(ctx, a.cfg.Repo, a.cfg.Engine, a.cfg.EngineName, a.cfg.Target)
	if err != nil {
		a.noteError("freeze", err)
		return nil, a.toStatus(err)
	}
	fr, err := a.cfg.Engine.Freeze(ctx, api.FreezeRequest{Target: a.cfg.Target, Lease: d, Label: req.GetLabel(), Archived: end})
	if err != nil {
		a.noteError("freeze", err)
		return nil, a.toStatus(err)
	}
	a.mu.Lock()
	a.leases[fr.LeaseID] = &agentpb.Lease{LeaseId: fr.LeaseID, ExpiresAt: ts(fr.ExpiresAt), Label: req.GetLabel()}
	a.mu.Unlock()
	a.log.Info("database frozen", "lease", fr.LeaseID, "expires", fr.ExpiresAt)
	return &agentpb.FreezeResponse{LeaseId: fr.LeaseID, ExpiresAt: ts(fr.ExpiresAt), Position: posPB(fr.Position),
		ConsistentTime: ts(fr.ConsistentTime)}, nil
}

func (s *service) RenewLease(ctx context.Context, req *agentpb.RenewLeaseRequest) (*agentpb.RenewLeaseResponse, error) {
	a := s.a
	d := req.GetLease().AsDuration()
	switch {
	case req.GetLeaseId() == "":
		return nil, status.Error(codes.InvalidArgument, "renew needs the lease_id Freeze returned")
	case req.GetLease() == nil || d <= 0:
		return nil, status.Error(codes.InvalidArgument, "renew needs a lease > 0")
	case d > a.cfg.MaxLease:
		return nil, status.Errorf(codes.InvalidArgument, "a freeze lease of %s is longer than this agent grants (%s)", d, a.cfg.MaxLease)
	}
	l, ok := a.cfg.Engine.(Leaser)
	if !ok {
		return nil, status.Errorf(codes.Unimplemented, "engine %s cannot renew freeze leases", a.cfg.EngineName)
	}
	exp, err := l.RenewLease(ctx, req.GetLeaseId(), d)
	a.mu.Lock()
	if cur := a.leases[req.GetLeaseId()]; cur != nil {
		if err == nil {
			cur.ExpiresAt = ts(exp)
		} else if st := a.toStatus(err); status.Code(st) == codes.FailedPrecondition || status.Code(st) == codes.NotFound {
			delete(a.leases, req.GetLeaseId())
		}
	}
	a.mu.Unlock()
	if err != nil {
		a.noteError("freeze", err)
		return nil, a.toStatus(err)
	}
	return &agentpb.RenewLeaseResponse{ExpiresAt: ts(exp)}, nil
}

func (s *service) Thaw(ctx context.Context, req *agentpb.ThawRequest) (*agentpb.ThawResponse, error) {
	a := s.a
	if req.GetLeaseId() == "" {
		return nil, status.Error(codes.InvalidArgument, "thaw needs the lease_id Freeze returned")
	}
	th, err := a.cfg.Engine.Thaw(ctx, req.GetLeaseId())
	a.mu.Lock()
	delete(a.leases, req.GetLeaseId())
	a.mu.Unlock()
	if err != nil {
		a.noteError("thaw", err)
		return nil, a.toStatus(err)
	}
	out := &agentpb.ThawResponse{Consistent: posPB(th.Consistent), ConsistentTime: ts(th.ConsistentTime), Metadata: th.Metadata}
	for _, f := range th.Files {
		out.Files = append(out.Files, &agentpb.File{Name: f.Name, Content: f.Content, Mode: f.Mode})
	}
	a.log.Info("database thawed", "lease", req.GetLeaseId(), "consistent", th.Consistent.String())
	return out, nil
}

func (s *service) StartArchiving(ctx context.Context, req *agentpb.StartArchivingRequest) (*agentpb.StartArchivingResponse, error) {
	a := s.a
	flush := a.cfg.FlushInterval
	if req.GetFlushInterval() != nil {
		if flush = req.GetFlushInterval().AsDuration(); flush <= 0 {
			return nil, status.Error(codes.InvalidArgument, "flush_interval must be > 0 when given")
		}
	}
	if req.GetUploadBytesPerSecond() < 0 {
		return nil, status.Error(codes.InvalidArgument, "upload_bytes_per_second must be >= 0")
	}
	already, st, err := a.arch.start(ctx, flush, req.GetUploadBytesPerSecond())
	if err != nil {
		return nil, a.toStatus(err)
	}
	return &agentpb.StartArchivingResponse{AlreadyRunning: already, Archive: st}, nil
}

func (s *service) StopArchiving(ctx context.Context, _ *agentpb.StopArchivingRequest) (*agentpb.StopArchivingResponse, error) {
	was, err := s.a.arch.stop(ctx)
	st := s.a.arch.status()
	if err != nil {
		return nil, s.a.toStatus(err)
	}
	return &agentpb.StopArchivingResponse{WasRunning: was, Archive: st}, nil
}

func (s *service) Status(context.Context, *agentpb.StatusRequest) (*agentpb.StatusResponse, error) {
	a := s.a
	now := a.clk.Now()
	out := &agentpb.StatusResponse{Engine: a.cfg.EngineName, Version: a.cfg.Version, Archive: a.arch.status(),
		Window: a.win.status()}
	a.mu.Lock()
	defer a.mu.Unlock()
	out.StartedAt = ts(a.started)
	if b := a.backup; b != nil {
		out.BackupRunning = &agentpb.RunningBackup{Name: b.name, Mode: b.mode, StartedAt: ts(b.started), BytesIn: b.bytes()}
	}
	out.LastBackup, out.LastBackupError, out.LastError = a.lastBackup, a.lastBkErr, a.lastErr
	for id, l := range a.leases {
		if l.ExpiresAt.AsTime().Before(now) { // the plugin has thawed by itself
			delete(a.leases, id)
			continue
		}
		out.Leases = append(out.Leases, proto.Clone(l).(*agentpb.Lease)) // RenewLease updates l
	}
	return out, nil
}

// stream is the repository log stream of this database, once known.
func (a *Agent) stream() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.systemID == "" {
		return ""
	}
	return job.StreamName(a.cfg.EngineName, a.systemID)
}
