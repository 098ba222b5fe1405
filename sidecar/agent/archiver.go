package agent

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/amber-backup/amber/sidecar/agent/agentpb"
	"github.com/amber-backup/amber/sidecar/archive"
	"github.com/amber-backup/amber/sidecar/job"
	"github.com/amber-backup/amber/sidecar/storage/throttle"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// archiver holds the archiver role: job.Archive running in the background.
type archiver struct {
	a  *Agent
	op sync.Mutex // serialises start and stop

	mu      sync.Mutex
	running bool
	cancel  context.CancelFunc
	done    chan struct{}
	stream  string
	stats   *archive.Stats // of the current or last run
	started time.Time
	stopped time.Time
	report  *job.ArchiveReport
	err     error
	// Totals of the runs that ended, for the counters.
	endedSegments, endedBytes int64
}

// start runs job.Archive in the background and returns once it has
// started (or failed to). It does nothing when archiving already runs.
func (ar *archiver) start(ctx context.Context, flush time.Duration, uploadLimit int64) (already bool, st *agentpb.ArchiveStatus, err error) {
	a := ar.a
	ar.op.Lock()
	defer ar.op.Unlock()
	ar.mu.Lock()
	running := ar.running
	ar.mu.Unlock()
	if running {
		return true, ar.status(), nil
	}
	if a.closing.Load() {
		return false, nil, status.Error(codes.Unavailable, "the agent is shutting down")
	}
	run := job.ArchiveRun{Engine: a.cfg.EngineName, Target: a.cfg.Target, FlushInterval: flush}
	if a.cfg.Slot != "" {
		run.Options = map[string]string{"slot": a.cfg.Slot}
	}
	// The run outlives this call: it ends with stop (or shutdown).
	runCtx, cancel := context.WithCancel(throttle.WithLimit(job.WithLogger(context.Background(), a.jobLog), uploadLimit))
	begun, done := make(chan struct{}), make(chan struct{})
	var once sync.Once
	run.OnStart = func(stream, version string, stats *archive.Stats) {
		ar.mu.Lock()
		ar.stream, ar.stats = stream, stats
		ar.mu.Unlock()
		a.log.Info("archiving", "stream", stream, "server", version)
		once.Do(func() { close(begun) })
	}
	ar.mu.Lock()
	ar.running, ar.cancel, ar.done = true, cancel, done
	ar.started, ar.stopped, ar.stats, ar.report, ar.err = a.clk.Now(), time.Time{}, nil, nil, nil
	ar.mu.Unlock()

	go func() {
		defer close(done)
		rep, err := job.Archive(runCtx, a.cfg.Repo, a.cfg.Engine, run, a.clk)
		cancel()
		ar.mu.Lock()
		ar.running, ar.report, ar.err, ar.stopped = false, rep, err, a.clk.Now()
		if rep != nil {
			ar.endedSegments += rep.Segments
			ar.endedBytes += rep.Bytes
		}
		ar.mu.Unlock()
		if err != nil {
			a.noteError("archive", err)
		}
		a.win.kick()
	}()

	select {
	case <-begun:
		a.win.kick()
		return false, ar.status(), nil
	case <-done:
		ar.mu.Lock()
		err := ar.err
		ar.mu.Unlock()
		if err == nil {
			err = errors.New("archiving ended as soon as it started")
		}
		return false, ar.status(), status.Errorf(codes.FailedPrecondition, "start archiving: %v", err)
	case <-ctx.Done():
		// The caller stopped waiting; archiving goes on starting.
		return false, ar.status(), ctx.Err()
	}
}

// stop ends archiving and returns once everything received is durable
// (job.Archive's own stop path). It reports whether archiving ran, and
// the run's error, if it ended with one.
func (ar *archiver) stop(context.Context) (bool, error) {
	ar.op.Lock()
	defer ar.op.Unlock()
	ar.mu.Lock()
	running, cancel, done := ar.running, ar.cancel, ar.done
	ar.mu.Unlock()
	if !running {
		return false, nil
	}
	ar.a.log.Info("stopping archiving: making received log durable")
	cancel()
	// Wait even if the caller gives up: durability is the point of stopping.
	<-done
	ar.mu.Lock()
	err := ar.err
	ar.mu.Unlock()
	return true, err
}

// status is the archiver's state for Status and the archiving calls.
func (ar *archiver) status() *agentpb.ArchiveStatus {
	ar.mu.Lock()
	defer ar.mu.Unlock()
	st := &agentpb.ArchiveStatus{Running: ar.running, Stream: ar.stream, StartedAt: ts(ar.started), StoppedAt: ts(ar.stopped)}
	if ar.stats != nil {
		ar.stats.Lock()
		st.Segments, st.Bytes = ar.stats.Segments, ar.stats.Bytes
		st.LastPosition = posPB(ar.stats.LastEnd)
		if ar.stats.Segments > 0 {
			st.Lag = dur(ar.stats.LastLag)
		}
		ar.stats.Unlock()
	}
	if ar.err != nil {
		st.Error = ar.err.Error()
	}
	return st
}

// totals are the segments and bytes archived since the agent started.
func (ar *archiver) totals() (segments, bytes int64) {
	ar.mu.Lock()
	defer ar.mu.Unlock()
	segments, bytes = ar.endedSegments, ar.endedBytes
	if ar.running && ar.stats != nil {
		ar.stats.Lock()
		segments += ar.stats.Segments
		bytes += ar.stats.Bytes
		ar.stats.Unlock()
	}
	return segments, bytes
}

// lag is the archive lag while archiving runs and has stored a segment.
func (ar *archiver) lag() (time.Duration, bool) {
	ar.mu.Lock()
	defer ar.mu.Unlock()
	if !ar.running || ar.stats == nil {
		return 0, false
	}
	ar.stats.Lock()
	defer ar.stats.Unlock()
	return ar.stats.LastLag, ar.stats.Segments > 0
}

// pending is how long the oldest log handed over by the plugin has waited
// to be durable (0 when all of it is), while archiving runs.
func (ar *archiver) pending(now time.Time) (time.Duration, bool) {
	ar.mu.Lock()
	defer ar.mu.Unlock()
	if !ar.running || ar.stats == nil {
		return 0, false
	}
	ar.stats.Lock()
	defer ar.stats.Unlock()
	if ar.stats.PendingSince.IsZero() {
		return 0, true
	}
	return max(now.Sub(ar.stats.PendingSince), 0), true
}

func (ar *archiver) isRunning() bool {
	ar.mu.Lock()
	defer ar.mu.Unlock()
	return ar.running
}
