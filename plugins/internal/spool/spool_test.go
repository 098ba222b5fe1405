package spool

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
)

// recorder is a Worker that keeps what it loaded, and fails on an entry
// named "bad".
type recorder struct {
	mu     *sync.Mutex
	loaded map[string]string
	ended  *[]bool
}

func (r recorder) Load(_ context.Context, e Entry, f *File) error {
	if e.Name == "bad" {
		return errors.New("bad entry")
	}
	rc, err := f.Open()
	if err != nil {
		return err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.loaded[e.Name] = string(b) + "/" + e.Meta.(string)
	r.mu.Unlock()
	return nil
}

func (r recorder) End(failed bool) error {
	r.mu.Lock()
	*r.ended = append(*r.ended, failed)
	r.mu.Unlock()
	return nil
}

func newRecorderPool(t *testing.T, workers int) (*Pool, recorder, string, context.Context) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	rec := recorder{mu: &sync.Mutex{}, loaded: map[string]string{}, ended: new([]bool)}
	p := New(ctx, cancel, workers, dir, "test-", func(context.Context) (Worker, error) { return rec, nil })
	return p, rec, dir, ctx
}

// TestPoolLoadsEverything: entries whole and followed (read while they are
// spooled, here through a pipe written in pieces) all arrive complete,
// every session ends unfailed, and no spool file is left.
func TestPoolLoadsEverything(t *testing.T) {
	p, rec, dir, ctx := newRecorderPool(t, 3)
	big := strings.Repeat("x", 1<<20)
	for i, name := range []string{"a", "b", "c", "d", "e"} {
		pr, pw := io.Pipe()
		go func() {
			for range 4 {
				pw.Write([]byte(big[:1<<18]))
			}
			pw.Close()
		}()
		n, err := p.Submit(ctx, Entry{Name: name, Meta: "m" + name}, pr, i%2 == 0)
		if err != nil || n != 1<<20 {
			t.Fatalf("submit %s: %d bytes, %v", name, n, err)
		}
	}
	if err := p.Wait(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a", "b", "c", "d", "e"} {
		if got := rec.loaded[name]; got != big+"/m"+name {
			t.Errorf("entry %s loaded %d bytes", name, len(got))
		}
	}
	if len(*rec.ended) != 3 || slices.Contains(*rec.ended, true) {
		t.Errorf("sessions ended %v, want 3 unfailed", *rec.ended)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("spool files left: %v", left)
	}
}

// TestPoolFailure: a session's failure is what Wait, later Submits and
// Close return; the sessions end failed, and no spool file is left.
func TestPoolFailure(t *testing.T) {
	p, rec, dir, ctx := newRecorderPool(t, 2)
	if _, err := p.Submit(ctx, Entry{Name: "bad", Meta: ""}, bytes.NewReader([]byte("x")), false); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(); err == nil || err.Error() != "bad entry" {
		t.Fatalf("wait: %v", err)
	}
	if _, err := p.Submit(ctx, Entry{Name: "late", Meta: ""}, bytes.NewReader([]byte("y")), true); err == nil || err.Error() != "bad entry" {
		t.Fatalf("submit after the failure: %v", err)
	}
	if err := p.Close(); err == nil || err.Error() != "bad entry" {
		t.Fatalf("close: %v", err)
	}
	if len(*rec.ended) != 2 || slices.Contains(*rec.ended, false) {
		t.Errorf("sessions ended %v, want 2 failed", *rec.ended)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("spool files left: %v", left)
	}
}

// TestPoolFollowedWriterFails: when spooling a followed entry fails, the
// session reading it gets that error, not a short entry.
func TestPoolFollowedWriterFails(t *testing.T) {
	p, rec, _, ctx := newRecorderPool(t, 1)
	r := io.MultiReader(strings.NewReader("partial"), errReader{errors.New("stream broke")})
	if _, err := p.Submit(ctx, Entry{Name: "f", Meta: ""}, r, true); err == nil || !strings.Contains(err.Error(), "stream broke") {
		t.Fatalf("submit: %v", err)
	}
	if err := p.Close(); err == nil || !strings.Contains(err.Error(), "stream broke") {
		t.Fatalf("close: %v", err)
	}
	if _, ok := rec.loaded["f"]; ok {
		t.Errorf("the broken entry was loaded: %q", rec.loaded["f"])
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }
