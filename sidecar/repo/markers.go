package repo

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/amber-backup/amber/sidecar/storage"
)

// writersDir holds one marker per open Writer (docs/repository-format.md,
// "Writer markers"): prune deletes no pack while a live one exists.
const writersDir = "writers/"

// markerInfo is the plaintext JSON of a writer marker or a prune lock.
// Times come from the writer's own clock and are informational: ages are
// judged by the storage server's modification times.
type markerInfo struct {
	Version   int       `json:"version"`
	Host      string    `json:"host"`
	PID       int       `json:"pid"`
	Start     time.Time `json:"start"`
	Refreshed time.Time `json:"refreshed"`
	// Scope names the kernel boot and PID namespace of the process: a
	// client in the same scope can tell that the process is gone.
	Scope string `json:"scope,omitempty"`
}

var ourScope = procScope()

// holderGone reports whether the marker's process is known to have exited:
// it ran in this client's kernel and PID namespace, and its PID is unused.
func holderGone(mi markerInfo) bool {
	return mi.Scope != "" && mi.Scope == ourScope && mi.PID != os.Getpid() && pidGone(mi.PID)
}

// lease is an object (a writer marker or a prune lock) that this client
// keeps fresh by saving it again every Options.Refresh. Another client takes
// it for abandoned once the server's modification time is older than
// StaleAfter. The holder relies on it only while its last successful save
// began less than StaleAfter - leaseMargin ago (by its own elapsed time):
// until then no other client can have judged it stale, whatever the clocks
// say. Once that has passed, the lease is dead for good and is never
// saved again (a save could otherwise resurrect a marker a prune removed).
type lease struct {
	r    *Repository
	name string

	mu          sync.Mutex
	info        markerInfo
	refreshedAt time.Time // local clock at the start of the last successful save
	serverMod   time.Time // the server's modification time of that save
	held        bool      // a save has succeeded
	dead        error

	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

func newMarkerName(prefix string) string {
	var rnd [16]byte
	_, _ = rand.Read(rnd[:])
	return prefix + hex.EncodeToString(rnd[:])
}

// takeLease saves name and starts refreshing it until release.
func (r *Repository) takeLease(ctx context.Context, name string) (*lease, error) {
	host, _ := os.Hostname()
	l := &lease{r: r, name: name, info: markerInfo{Version: 1, Host: host, PID: os.Getpid(), Start: r.now().UTC(), Scope: ourScope},
		stop: make(chan struct{}), done: make(chan struct{})}
	if err := l.save(ctx); err != nil {
		return nil, err
	}
	go l.loop(context.WithoutCancel(ctx))
	return l, nil
}

// save writes the object again and, if the lease was still valid when the
// save completed, extends it from the save's start.
func (l *lease) save(ctx context.Context) error {
	if err := l.valid(); err != nil {
		return err
	}
	began := l.r.now()
	l.mu.Lock()
	l.info.Refreshed = began.UTC()
	b, _ := json.Marshal(l.info)
	l.mu.Unlock()
	if err := l.r.be.Save(ctx, l.name, bytes.NewReader(b), int64(len(b))); err != nil {
		return fmt.Errorf("save %s: %w", l.name, err)
	}
	fi, err := l.r.be.Stat(ctx, l.name)
	if err != nil {
		return fmt.Errorf("stat %s: %w", l.name, err)
	}
	if err := l.valid(); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.refreshedAt, l.serverMod, l.held = began, fi.ModTime, true
	return nil
}

// valid returns an error once the lease may have been judged stale.
func (l *lease) valid() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.dead != nil {
		return l.dead
	}
	if !l.held {
		return nil
	}
	limit := l.r.opts.staleAfter() - l.r.opts.leaseMargin()
	if el := l.r.now().Sub(l.refreshedAt); el >= limit {
		l.dead = fmt.Errorf("%s could not be refreshed for %s (storage unreachable or the process stalled), so another client may have taken it for abandoned", l.name, el.Round(time.Millisecond))
		return l.dead
	}
	return nil
}

// remaining is how long the lease can still be relied on without a refresh.
func (l *lease) remaining() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.refreshedAt.Add(l.r.opts.staleAfter() - l.r.opts.leaseMargin()).Sub(l.r.now())
}

// serverNow estimates the storage server's clock: the modification time of
// the last save plus the local time elapsed since it began.
func (l *lease) serverNow() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.serverMod.Add(l.r.now().Sub(l.refreshedAt))
}

func (l *lease) loop(ctx context.Context) {
	defer close(l.done)
	t := time.NewTicker(l.r.opts.refresh())
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			if err := l.save(ctx); err != nil {
				if l.valid() != nil {
					l.r.opts.logger().Error("lease lost; the operation holding it will fail", "object", l.name, "error", err)
					return
				}
				l.r.opts.logger().Warn("refresh failed; will retry", "object", l.name, "error", err)
			}
		}
	}
}

// release stops refreshing and removes the object.
func (l *lease) release(ctx context.Context) {
	l.stopOnce.Do(func() {
		close(l.stop)
		<-l.done
		l.mu.Lock()
		if l.dead == nil {
			l.dead = fmt.Errorf("%s was released", l.name)
		}
		l.mu.Unlock()
		if err := l.r.be.Remove(context.WithoutCancel(ctx), l.name); err != nil && !errors.Is(err, storage.ErrNotFound) {
			l.r.opts.logger().Warn("could not remove; it goes stale by itself", "object", l.name, "error", err)
		}
	})
}

// readMarker reads a marker or lock for messages; damage is no error.
func (r *Repository) readMarker(ctx context.Context, name string) markerInfo {
	var mi markerInfo
	if b, err := readCapped(ctx, r.be, name, maxSmallObject); err == nil {
		_ = json.Unmarshal(b, &mi)
	}
	return mi
}

func describeHolder(mi markerInfo) string {
	if mi.Host == "" {
		return "an unknown host"
	}
	return fmt.Sprintf("%s (pid %d, started %s by its clock)", mi.Host, mi.PID, mi.Start.Format(time.RFC3339))
}

// pruneLocks lists prune locks and returns the newest locks/pruned- marker.
func (r *Repository) pruneLocks(ctx context.Context) ([]storage.FileInfo, string, error) {
	var locks []storage.FileInfo
	newest := ""
	err := r.be.List(ctx, locksDir, func(fi storage.FileInfo) error {
		switch {
		case strings.HasPrefix(fi.Name, pruneLockPrefix):
			locks = append(locks, fi)
		case strings.HasPrefix(fi.Name, prunedPrefix) && fi.Name > newest:
			newest = fi.Name
		}
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("list locks: %w", err)
	}
	return locks, newest, nil
}

// waitForPrune runs after a new writer's marker is durable: a prune that
// holds its lock now may have listed writers/ before the marker existed,
// so the writer waits (at most Options.LockWait, logging which lock) until
// it is done. A lock not refreshed for StaleAfter by the server's clock
// belongs to a prune that died: it is ignored, with a warning. It returns
// the newest locks/pruned- marker.
func (r *Repository) waitForPrune(ctx context.Context, l *lease) (string, error) {
	log := r.opts.logger()
	wait := r.opts.lockWait()
	poll := min(2*time.Second, max(wait/20, 10*time.Millisecond))
	logEvery := min(30*time.Second, max(wait/4, poll))
	began := r.now()
	var lastLog time.Time
	warned := map[string]bool{}
	for {
		locks, newest, err := r.pruneLocks(ctx)
		if err != nil {
			return "", err
		}
		now := l.serverNow()
		var live *storage.FileInfo
		for i, fi := range locks {
			if age := now.Sub(fi.ModTime); age > r.opts.staleAfter() || holderGone(r.readMarker(ctx, fi.Name)) {
				if !warned[fi.Name] {
					warned[fi.Name] = true
					log.Warn("ignoring a stale prune lock: that prune stopped refreshing it and is taken for dead; `amber unlock` removes it",
						"lock", fi.Name, "age", age.Round(time.Second))
				}
				continue
			}
			live = &locks[i]
		}
		if live == nil {
			return newest, nil
		}
		waited := r.now().Sub(began)
		if waited >= wait {
			mi := r.readMarker(ctx, live.Name)
			return "", fmt.Errorf("%w: lock %s of %s is still held after waiting %s; let that prune finish, or if you are sure it is not running, remove the lock with `amber unlock --force`",
				ErrLocked, live.Name, describeHolder(mi), wait)
		}
		if lastLog.IsZero() || r.now().Sub(lastLog) >= logEvery {
			lastLog = r.now()
			log.Warn("waiting for a prune to finish before writing", "lock", live.Name, "waited", waited.Round(time.Millisecond), "max_wait", wait)
		}
		if err := l.valid(); err != nil {
			return "", err
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(poll):
		}
	}
}
