package job

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/amber-backup/amber/plugins/api"
	"github.com/amber-backup/amber/plugins/api/clock"
	"github.com/amber-backup/amber/sidecar/archive"
	"github.com/amber-backup/amber/sidecar/pluginhost"
	"github.com/amber-backup/amber/sidecar/repo"
)

// ArchiveRun asks for continuous log archiving.
type ArchiveRun struct {
	Engine        string
	Target        api.Target
	FlushInterval time.Duration     // bounds the recovery point; 0: the engine's default
	Options       map[string]string // engine options ("slot")
	// OnStart, when set, is told the stream and server once archiving runs;
	// Stats may be read (under its lock) while it does.
	OnStart func(stream, serverVersion string, stats *archive.Stats)
}

// ArchiveReport says what an archiving run stored.
type ArchiveReport struct {
	Stream       string `json:"stream"`
	Segments     int64  `json:"segments"`
	Bytes        int64  `json:"bytes"`
	LastPosition string `json:"last_position"`
}

// Archive streams the database's log into the repository until ctx ends,
// then makes what it received durable and returns. A plugin that dies is
// started again and resumes where the repository's log ends.
func Archive(ctx context.Context, r *repo.Repository, eng api.Engine, a ArchiveRun, clk clock.Clock) (*ArchiveReport, error) {
	clk = clock.Or(clk)
	probe, err := eng.Probe(ctx, a.Target)
	if err != nil {
		return nil, err
	}
	if !probe.Healthy && probe.Detail != "" {
		return nil, fmt.Errorf("%s is not ready to archive: %s", a.Engine, probe.Detail)
	}
	stream := StreamName(a.Engine, probe.SystemID)
	ctx = with(ctx, "engine", a.Engine, "stream", stream)
	log := Logger(ctx)
	sink := archive.NewSink(r, stream, log, clk)
	if a.OnStart != nil {
		a.OnStart(stream, shortVersion(probe.ServerVersion), &sink.Stats)
	}
	starts := 0 // plugin starts that failed in a row
	for attempt := 0; ; attempt++ {
		req := api.ArchiveRequest{Target: a.Target, FlushInterval: a.FlushInterval, Options: a.Options}
		var newest time.Time
		if req.Start, newest, err = archivedEnd(ctx, r, stream); err != nil {
			return nil, err
		}
		sink.CommittedUntil(newest)
		done := make(chan error, 1)
		go func() { done <- eng.Archive(context.WithoutCancel(ctx), req, sink, sink.Durable()) }()
		select {
		case err = <-done:
		case <-ctx.Done():
			sink.CloseDurable() // the plugin flushes what it holds, then returns
			err = <-done
		}
		if errors.Is(err, pluginhost.ErrStart) {
			starts++
		} else {
			starts = 0
		}
		if err == nil || ctx.Err() != nil || !(errors.Is(err, pluginhost.ErrExited) || errors.Is(err, pluginhost.ErrStart) && starts <= 5) {
			break
		}
		// The plugin died (a crash, an OOM kill), or a new one died while
		// starting: start it again and resume where the repository ends.
		// The engine kept its log meanwhile.
		sink.ForgetOpen()
		delay := min(time.Duration(attempt+1)*time.Second, 30*time.Second)
		log.Warn("engine plugin died while archiving; restarting it", "err", err, "retry_in", delay)
		if clock.Sleep(ctx, clk, delay) != nil {
			err = nil
			break
		}
	}
	// Complete segments still being stored in the background (their log is
	// durable in pieces already) are waited for, so a stopped archiver
	// leaves them whole.
	if werr := sink.Wait(); werr != nil && (err == nil || errors.Is(err, context.Canceled)) {
		err = werr
	}
	sink.Stats.Lock()
	rep := &ArchiveReport{Stream: stream, Segments: sink.Stats.Segments, Bytes: sink.Stats.Bytes,
		LastPosition: sink.Stats.LastEnd.String()}
	sink.Stats.Unlock()
	if err != nil && !errors.Is(err, context.Canceled) {
		return rep, fmt.Errorf("archive %s: %w", a.Engine, err)
	}
	return rep, nil
}

// shortVersion shortens "PostgreSQL 15.20 (Debian ...) on x86_64 ..." to its first two words.
func shortVersion(v string) string {
	f := strings.Fields(v)
	return strings.Join(f[:min(2, len(f))], " ")
}

// ArchivedEndOf is the archived end of the log stream of the server target
// names, for a backup or a freeze to pass to its engine
// (api.BackupRequest.Archived): the engine names the epoch of the
// position it reports from it, as its archiver does when it resumes there.
// Zero, without asking the server anything, when the engine does not
// archive or the repository holds no log of it; zero too when the server
// cannot be probed (the call that follows says why).
func ArchivedEndOf(ctx context.Context, r *repo.Repository, eng api.Engine, engine string, target api.Target) (api.Position, error) {
	info, err := eng.Info(ctx)
	if err != nil || !slices.Contains(info.Capabilities, api.Archive) {
		return api.Position{}, nil
	}
	if has, err := r.HasLog(ctx, StreamName(engine, "")); err != nil || !has {
		return api.Position{}, err
	}
	probe, err := eng.Probe(ctx, target)
	if err != nil || probe.SystemID == "" {
		return api.Position{}, nil
	}
	return ArchivedEnd(ctx, r, StreamName(engine, probe.SystemID))
}

// ArchivedEnd is where archiving resumes: the end of the newest segment of
// the stream (zero when the stream is empty).
func ArchivedEnd(ctx context.Context, r *repo.Repository, stream string) (api.Position, error) {
	p, _, err := archivedEnd(ctx, r, stream)
	return p, err
}

// archivedEnd is ArchivedEnd and the newest commit time the stream's
// newest segment records.
func archivedEnd(ctx context.Context, r *repo.Repository, stream string) (api.Position, time.Time, error) {
	segs, err := r.Segments(ctx, stream)
	if err != nil {
		return api.Position{}, time.Time{}, err
	}
	var newest *repo.Segment
	for i, s := range segs {
		if s.Start != s.End && (newest == nil || s.Epoch > newest.Epoch || (s.Epoch == newest.Epoch && s.End > newest.End)) {
			newest = &segs[i]
		}
	}
	if newest == nil {
		return api.Position{}, time.Time{}, nil
	}
	full, _, err := r.GetSegment(ctx, newest.ObjectName())
	if err != nil {
		return api.Position{}, time.Time{}, err
	}
	p, err := archive.EndPosition(full)
	return p, full.LastTime, err
}
