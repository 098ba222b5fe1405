package cli

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/amber-backup/amber/sidecar/job"
	"golang.org/x/term"
)

// progress prints a one-line status (bytes, rate, ETA) to stderr every
// half second, only when stderr is a terminal.
type progress struct {
	out   io.Writer
	label string
	total int64 // 0 when unknown
	read  func() int64
	start time.Time
	stop  chan struct{}
	done  sync.WaitGroup
}

// track returns a job.Progress that shows progress once the job has
// started, and the function that stops showing it.
func (e *env) track(label string, total int64) (job.Progress, func()) {
	var p *progress
	return func(done func() int64) { p = e.startProgress(label, total, done) }, func() {
		if p != nil {
			p.Stop()
		}
	}
}

func (e *env) startProgress(label string, total int64, read func() int64) *progress {
	p := &progress{out: e.stderr, label: label, total: total, read: read, start: time.Now(), stop: make(chan struct{})}
	f, ok := e.stderr.(*os.File)
	if e.quiet || !ok || !term.IsTerminal(int(f.Fd())) {
		return p
	}
	p.done.Add(1)
	go func() {
		defer p.done.Done()
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				fmt.Fprint(p.out, "\r\033[K")
				return
			case <-t.C:
				p.print()
			}
		}
	}()
	return p
}

func (p *progress) print() {
	n := p.read()
	secs := time.Since(p.start).Seconds()
	rate := float64(n) / secs
	line := fmt.Sprintf("%s %s  %s/s", p.label, humanBytes(n), humanBytes(int64(rate)))
	if p.total > 0 && rate > 0 {
		eta := time.Duration(float64(p.total-n) / rate * float64(time.Second)).Round(time.Second)
		line += fmt.Sprintf("  %.0f%%  ETA %s", 100*float64(n)/float64(p.total), eta)
	}
	fmt.Fprintf(p.out, "\r\033[K%s", line)
}

func (p *progress) Stop() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	p.done.Wait()
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
