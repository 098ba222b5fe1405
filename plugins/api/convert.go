package api

import (
	"time"

	pb "github.com/amber-backup/amber/plugins/api/amber/plugin/v1"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Conversions between the Go types of this package and the protocol.

var capToPB = map[Capability]pb.Capability{
	LogicalDump:     pb.Capability_CAPABILITY_LOGICAL_DUMP,
	LogicalRestore:  pb.Capability_CAPABILITY_LOGICAL_RESTORE,
	PhysicalBackup:  pb.Capability_CAPABILITY_PHYSICAL_BACKUP,
	PhysicalRestore: pb.Capability_CAPABILITY_PHYSICAL_RESTORE,
	Freeze:          pb.Capability_CAPABILITY_FREEZE,
	Archive:         pb.Capability_CAPABILITY_ARCHIVE,
	Replay:          pb.Capability_CAPABILITY_REPLAY,
	LogFiles:        pb.Capability_CAPABILITY_LOG_FILES,
	FileRecords:     pb.Capability_CAPABILITY_FILE_RECORDS,
}

func capFromPB(c pb.Capability) (Capability, bool) {
	for k, v := range capToPB {
		if v == c {
			return k, true
		}
	}
	return "", false
}

var roleToPB = map[Role]pb.Role{
	RoleUnknown:    pb.Role_ROLE_UNSPECIFIED,
	RolePrimary:    pb.Role_ROLE_PRIMARY,
	RoleReplica:    pb.Role_ROLE_REPLICA,
	RoleStandalone: pb.Role_ROLE_STANDALONE,
}

func roleFromPB(r pb.Role) Role {
	for k, v := range roleToPB {
		if v == r {
			return k
		}
	}
	return RoleUnknown
}

func tsToPB(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func tsFromPB(t *timestamppb.Timestamp) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.AsTime()
}

func durToPB(d time.Duration) *durationpb.Duration {
	if d == 0 {
		return nil
	}
	return durationpb.New(d)
}

func durFromPB(d *durationpb.Duration) time.Duration {
	if d == nil {
		return 0
	}
	return d.AsDuration()
}

func posToPB(p Position) *pb.Position {
	if p.IsZero() {
		return nil
	}
	return &pb.Position{Token: p.Token, Text: p.Text, Epoch: p.Epoch, Offset: p.Offset}
}

func posFromPB(p *pb.Position) Position {
	if p == nil {
		return Position{}
	}
	return Position{Token: p.GetToken(), Text: p.GetText(), Epoch: p.GetEpoch(), Offset: p.GetOffset()}
}

func targetToPB(t Target) *pb.Target {
	return &pb.Target{Dsn: string(t.DSN), DataDir: t.DataDir, Settings: t.Settings}
}

func targetFromPB(t *pb.Target) Target {
	return Target{DSN: Secret(t.GetDsn()), DataDir: t.GetDataDir(), Settings: t.GetSettings()}
}

func filesToPB(fs []File) []*pb.File {
	var out []*pb.File
	for _, f := range fs {
		out = append(out, &pb.File{Name: f.Name, Content: f.Content, Mode: f.Mode})
	}
	return out
}

func filesFromPB(fs []*pb.File) []File {
	var out []File
	for _, f := range fs {
		out = append(out, File{Name: f.GetName(), Content: f.GetContent(), Mode: f.GetMode()})
	}
	return out
}

func infoToPB(i Info) *pb.InfoResponse {
	r := &pb.InfoResponse{Engine: i.Engine, PluginVersion: i.PluginVersion, SupportedServers: i.SupportedServers,
		PreviousEntries: i.PreviousEntries}
	for _, c := range i.Capabilities {
		if v, ok := capToPB[c]; ok {
			r.Capabilities = append(r.Capabilities, v)
		}
	}
	return r
}

func infoFromPB(r *pb.InfoResponse) Info {
	i := Info{Engine: r.GetEngine(), PluginVersion: r.GetPluginVersion(), SupportedServers: r.GetSupportedServers(),
		PreviousEntries: r.GetPreviousEntries(), ReadsPipes: r.GetReadsPipes()}
	for _, c := range r.GetCapabilities() {
		if v, ok := capFromPB(c); ok {
			i.Capabilities = append(i.Capabilities, v)
		}
	}
	return i
}

func probeToPB(p Probe) *pb.ProbeResponse {
	return &pb.ProbeResponse{
		ServerVersion:  p.ServerVersion,
		Role:           roleToPB[p.Role],
		SystemId:       p.SystemID,
		Position:       posToPB(p.Position),
		ReplicationLag: durToPB(p.ReplicationLag),
		Healthy:        p.Healthy,
		Detail:         p.Detail,
		Facts:          p.Facts,
	}
}

func probeFromPB(r *pb.ProbeResponse) Probe {
	return Probe{
		ServerVersion:  r.GetServerVersion(),
		Role:           roleFromPB(r.GetRole()),
		SystemID:       r.GetSystemId(),
		Position:       posFromPB(r.GetPosition()),
		ReplicationLag: durFromPB(r.GetReplicationLag()),
		Healthy:        r.GetHealthy(),
		Detail:         r.GetDetail(),
		Facts:          r.GetFacts(),
	}
}

func backupReqToPB(r BackupRequest) *pb.BackupRequest {
	pr := &pb.BackupRequest{Target: targetToPB(r.Target), Databases: r.Databases, Label: r.Label, Options: r.Options,
		Archived: posToPB(r.Archived), FileRecords: r.FileRecords}
	if p := r.Previous; p != nil {
		pp := &pb.PreviousFiles{Backup: p.Backup, Result: backupResultToPB(p.Result), Entries: p.Entries}
		pp.Files = make([]*pb.PreviousFile, len(p.Files))
		for i, f := range p.Files {
			pp.Files[i] = &pb.PreviousFile{Entry: f.Entry, Key: f.Key, Stamp: f.Stamp, Length: f.Length}
		}
		pr.Previous = pp
	}
	return pr
}

func backupReqFromPB(r *pb.BackupRequest) BackupRequest {
	req := BackupRequest{Target: targetFromPB(r.GetTarget()), Databases: r.GetDatabases(), Label: r.GetLabel(), Options: r.GetOptions(),
		Archived: posFromPB(r.GetArchived()), FileRecords: r.GetFileRecords()}
	if p := r.GetPrevious(); p != nil && req.FileRecords {
		prev := &PreviousFiles{Backup: p.GetBackup(), Result: backupResultFromPB(p.GetResult()), Entries: p.GetEntries()}
		prev.Files = make([]PreviousFile, len(p.GetFiles()))
		for i, f := range p.GetFiles() {
			prev.Files[i] = PreviousFile{Entry: f.GetEntry(), Key: f.GetKey(), Stamp: f.GetStamp(), Length: f.GetLength()}
		}
		req.Previous = prev
	}
	return req
}

func backupResultToPB(r BackupResult) *pb.BackupResult {
	return &pb.BackupResult{
		Start:          posToPB(r.Start),
		Consistent:     posToPB(r.Consistent),
		ConsistentTime: tsToPB(r.ConsistentTime),
		StartTime:      tsToPB(r.StartTime),
		ServerVersion:  r.ServerVersion,
		SystemId:       r.SystemID,
		Metadata:       r.Metadata,
		Files:          filesToPB(r.Files),
	}
}

func backupResultFromPB(r *pb.BackupResult) BackupResult {
	return BackupResult{
		Start:          posFromPB(r.GetStart()),
		Consistent:     posFromPB(r.GetConsistent()),
		ConsistentTime: tsFromPB(r.GetConsistentTime()),
		StartTime:      tsFromPB(r.GetStartTime()),
		ServerVersion:  r.GetServerVersion(),
		SystemID:       r.GetSystemId(),
		Metadata:       r.GetMetadata(),
		Files:          filesFromPB(r.GetFiles()),
	}
}

func restoreReqToPB(r RestoreRequest) *pb.RestoreRequest {
	pr := &pb.RestoreRequest{Target: targetToPB(r.Target), Backup: backupResultToPB(r.Backup), Options: r.Options,
		LogCommand: r.LogCommand, LogDoneCommand: r.LogDoneCommand, KeepArchiving: r.KeepArchiving, RunAs: r.RunAs}
	if !r.To.IsLatest() {
		pr.RecoveryTarget = recoveryTargetToPB(r.To)
	}
	return pr
}

func restoreReqFromPB(r *pb.RestoreRequest) RestoreRequest {
	req := RestoreRequest{Target: targetFromPB(r.GetTarget()), Backup: backupResultFromPB(r.GetBackup()), Options: r.GetOptions(),
		LogCommand: r.GetLogCommand(), LogDoneCommand: r.GetLogDoneCommand(), KeepArchiving: r.GetKeepArchiving(), RunAs: r.GetRunAs()}
	if r.GetRecoveryTarget() != nil {
		req.To = recoveryTargetFromPB(r.GetRecoveryTarget())
	}
	return req
}

func restoreResultToPB(r RestoreResult) *pb.RestoreResult {
	res := &pb.RestoreResult{Position: posToPB(r.Position), ConsistentTime: tsToPB(r.ConsistentTime), Metadata: r.Metadata}
	if r.Owner != nil {
		res.Owner = &pb.FileOwner{Uid: r.Owner.UID, Gid: r.Owner.GID}
	}
	return res
}

func restoreResultFromPB(r *pb.RestoreResult) RestoreResult {
	res := RestoreResult{Position: posFromPB(r.GetPosition()), ConsistentTime: tsFromPB(r.GetConsistentTime()), Metadata: r.GetMetadata()}
	if o := r.GetOwner(); o != nil {
		res.Owner = &FileOwner{UID: o.GetUid(), GID: o.GetGid()}
	}
	return res
}

func entryToPB(e Entry) *pb.EntryHeader {
	return &pb.EntryHeader{Name: e.Name, Size: e.Size, Mode: e.Mode, Kind: e.Kind, Metadata: e.Metadata}
}

func entryFromPB(e *pb.EntryHeader) Entry {
	return Entry{Name: e.GetName(), Size: e.GetSize(), Mode: e.GetMode(), Kind: e.GetKind(), Metadata: e.GetMetadata()}
}

func thawedToPB(t Thawed) *pb.ThawResponse {
	return &pb.ThawResponse{Consistent: posToPB(t.Consistent), ConsistentTime: tsToPB(t.ConsistentTime), Files: filesToPB(t.Files), Metadata: t.Metadata}
}

func thawedFromPB(r *pb.ThawResponse) Thawed {
	return Thawed{Consistent: posFromPB(r.GetConsistent()), ConsistentTime: tsFromPB(r.GetConsistentTime()), Files: filesFromPB(r.GetFiles()), Metadata: r.GetMetadata()}
}

func archiveReqToPB(r ArchiveRequest) *pb.ArchiveRequest {
	return &pb.ArchiveRequest{Target: targetToPB(r.Target), Start: posToPB(r.Start), FlushInterval: durToPB(r.FlushInterval), Options: r.Options}
}

func archiveReqFromPB(r *pb.ArchiveRequest) ArchiveRequest {
	return ArchiveRequest{Target: targetFromPB(r.GetTarget()), Start: posFromPB(r.GetStart()), FlushInterval: durFromPB(r.GetFlushInterval()), Options: r.GetOptions()}
}

func segHeaderToPB(h SegmentHeader) *pb.SegmentHeader {
	return &pb.SegmentHeader{Name: h.Name, Start: posToPB(h.Start), Branch: posToPB(h.Branch)}
}

func segHeaderFromPB(h *pb.SegmentHeader) SegmentHeader {
	return SegmentHeader{Name: h.GetName(), Start: posFromPB(h.GetStart()), Branch: posFromPB(h.GetBranch())}
}

func segTrailerToPB(t SegmentTrailer) *pb.SegmentTrailer {
	return &pb.SegmentTrailer{End: posToPB(t.End), Partial: t.Partial, FirstCommit: tsToPB(t.FirstCommit), LastCommit: tsToPB(t.LastCommit), Size: t.Size, FileSize: t.FileSize}
}

func segTrailerFromPB(t *pb.SegmentTrailer) SegmentTrailer {
	return SegmentTrailer{End: posFromPB(t.GetEnd()), Partial: t.GetPartial(), FirstCommit: tsFromPB(t.GetFirstCommit()), LastCommit: tsFromPB(t.GetLastCommit()), Size: t.GetSize(), FileSize: t.GetFileSize()}
}

func recoveryTargetToPB(t RecoveryTarget) *pb.RecoveryTarget {
	r := &pb.RecoveryTarget{Inclusive: t.Inclusive}
	switch {
	case !t.Time.IsZero():
		r.Target = &pb.RecoveryTarget_Time{Time: timestamppb.New(t.Time)}
	case !t.Position.IsZero():
		r.Target = &pb.RecoveryTarget_Position{Position: posToPB(t.Position)}
	case t.Txn != "":
		r.Target = &pb.RecoveryTarget_Txn{Txn: t.Txn}
	case t.Name != "":
		r.Target = &pb.RecoveryTarget_Name{Name: t.Name}
	default:
		r.Target = &pb.RecoveryTarget_Latest{Latest: true}
	}
	return r
}

func recoveryTargetFromPB(r *pb.RecoveryTarget) RecoveryTarget {
	t := RecoveryTarget{Inclusive: r.GetInclusive()}
	switch v := r.GetTarget().(type) {
	case *pb.RecoveryTarget_Time:
		t.Time = v.Time.AsTime()
	case *pb.RecoveryTarget_Position:
		t.Position = posFromPB(v.Position)
	case *pb.RecoveryTarget_Txn:
		t.Txn = v.Txn
	case *pb.RecoveryTarget_Name:
		t.Name = v.Name
	default:
		t.Latest = true
	}
	return t
}

func replayReqToPB(r ReplayRequest) *pb.ReplayRequest {
	return &pb.ReplayRequest{Target: targetToPB(r.Target), RecoveryTarget: recoveryTargetToPB(r.To), From: posToPB(r.From), Stream: r.Stream, Options: r.Options, LogStart: posToPB(r.LogStart)}
}

func replayReqFromPB(r *pb.ReplayRequest) ReplayRequest {
	return ReplayRequest{Target: targetFromPB(r.GetTarget()), To: recoveryTargetFromPB(r.GetRecoveryTarget()), From: posFromPB(r.GetFrom()), Stream: r.GetStream(), Options: r.GetOptions(), LogStart: posFromPB(r.GetLogStart())}
}

func replayResultToPB(r ReplayResult) *pb.ReplayResult {
	return &pb.ReplayResult{Reached: posToPB(r.Reached), ReachedTime: tsToPB(r.ReachedTime), Metadata: r.Metadata}
}

func replayResultFromPB(r *pb.ReplayResult) ReplayResult {
	return ReplayResult{Reached: posFromPB(r.GetReached()), ReachedTime: tsFromPB(r.GetReachedTime()), Metadata: r.GetMetadata()}
}

func fileMarkToPB(m FileMark) *pb.FileMark {
	pm := &pb.FileMark{Key: m.Key, Stamp: m.Stamp, Length: m.Length, Reuse: m.Reuse, Base: m.Base, BaseKeep: m.Keep}
	for _, r := range m.Ranges {
		pm.Ranges = append(pm.Ranges, &pb.ByteRange{Offset: r.Offset, Length: r.Length})
	}
	return pm
}

func fileMarkFromPB(m *pb.FileMark) FileMark {
	fm := FileMark{Key: m.GetKey(), Stamp: m.GetStamp(), Length: m.GetLength(), Reuse: m.GetReuse(), Base: m.GetBase(), Keep: m.GetBaseKeep()}
	for _, r := range m.GetRanges() {
		fm.Ranges = append(fm.Ranges, ByteRange{Offset: r.GetOffset(), Length: r.GetLength()})
	}
	return fm
}
