package agent

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/amber-backup/amber/sidecar/agent/agentpb"
	"github.com/amber-backup/amber/sidecar/job"
)

// windowWatch keeps the recoverable window of this database's lineage. It
// recomputes it (job.Windows) at start, after each backup and archiving
// run, and every WindowInterval while this agent archives: listing a
// repository is not free, and the window only moves with backups and log.
type windowWatch struct {
	a    *Agent
	kick func()
	ch   chan struct{}

	mu sync.Mutex
	w  *job.Window
	at time.Time
}

func newWindowWatch(a *Agent) *windowWatch {
	w := &windowWatch{a: a, ch: make(chan struct{}, 1)}
	w.kick = func() {
		select {
		case w.ch <- struct{}{}:
		default:
		}
	}
	return w
}

// run refreshes the window until ctx ends.
func (w *windowWatch) run(ctx context.Context) {
	w.kick()
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.ch:
		case <-w.a.clk.After(w.a.cfg.WindowInterval):
			if !w.a.arch.isRunning() {
				continue
			}
		}
		if err := w.refresh(ctx); err != nil && ctx.Err() == nil {
			w.a.noteError("window", err)
		}
	}
}

// refresh recomputes the window now.
func (w *windowWatch) refresh(ctx context.Context) error {
	a := w.a
	stream := a.stream()
	if stream == "" {
		if _, err := a.probe(ctx); err != nil {
			return nil // the database is not up yet; Probe reports that
		}
		if stream = a.stream(); stream == "" {
			return nil
		}
	}
	all, err := a.cfg.Repo.Backups(ctx)
	if err != nil {
		return fmt.Errorf("recoverable window: %w", err)
	}
	ws, err := job.Windows(ctx, a.cfg.Repo, all)
	if err != nil {
		return fmt.Errorf("recoverable window of %s: %w", stream, err)
	}
	var found *job.Window
	for i := range ws {
		if ws[i].Stream == stream {
			found = &ws[i]
		}
	}
	w.mu.Lock()
	w.w, w.at = found, a.clk.Now()
	w.mu.Unlock()
	return nil
}

// current is the window last computed, or nil.
func (w *windowWatch) current() *job.Window {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w
}

func (w *windowWatch) status() *agentpb.Window {
	cur := w.current()
	if cur == nil {
		return nil
	}
	out := &agentpb.Window{Stream: cur.Stream, Start: ts(cur.EarliestTime), End: ts(cur.LatestTime),
		StartPosition: cur.EarliestPosition, EndPosition: cur.LatestPosition, Note: cur.Note}
	for _, g := range cur.Gaps {
		out.Gaps = append(out.Gaps, g.String())
	}
	return out
}
