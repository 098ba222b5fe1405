package retry_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/amber-backup/amber/sidecar/storage"
	"github.com/amber-backup/amber/sidecar/storage/faulty"
	"github.com/amber-backup/amber/sidecar/storage/retry"
)

// TestCreateLostReply: a Create that stored the object but whose reply was
// lost is retried; the retry meets ErrExists, finds the object holds exactly
// its content and succeeds. A Create over different content still gets
// ErrExists, retried or not.
func TestCreateLostReply(t *testing.T) {
	ctx := context.Background()
	fb := faulty.New(fileBackend(t), 1, faulty.Fault{Op: faulty.Create, Kind: faulty.LostReply, Calls: []int{1, 3}})
	clock := newClock()
	b := retry.New(fb, clock.options())
	c, ok := storage.AsCreator(b)
	if !ok || c != storage.Creator(b) {
		t.Fatalf("AsCreator(retry over faulty over file) = %T, %v; want the retry wrapper", c, ok)
	}
	data := bytes.Repeat([]byte("segment "), 100_000)
	if err := c.Create(ctx, "log/a", bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatalf("create whose first reply was lost: %v", err)
	}
	if fb.Calls(faulty.Create) != 2 {
		t.Errorf("%d create calls, want 2 (one lost reply, one retry)", fb.Calls(faulty.Create))
	}
	got, err := storage.ReadAll(ctx, b, "log/a")
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("object after create: %d bytes, %v", len(got), err)
	}
	// Different content: ErrExists from the first attempt (call 3 fails
	// there, so its lost-reply fault changes nothing).
	other := append(bytes.Clone(data[:len(data)-1]), 'X')
	if err := c.Create(ctx, "log/a", bytes.NewReader(other), int64(len(other))); !errors.Is(err, storage.ErrExists) {
		t.Fatalf("create over different content: %v, want ErrExists", err)
	}
	if err := c.Create(ctx, "log/a", bytes.NewReader(data), int64(len(data))); !errors.Is(err, storage.ErrExists) {
		t.Fatalf("first-attempt create over the same content: %v, want ErrExists", err)
	}
}

// TestAsCreatorNeedsInner: a wrapper over a backend that cannot create is
// no Creator.
func TestAsCreatorNeedsInner(t *testing.T) {
	b := retry.New(noCreate{fileBackend(t)}, retry.Options{})
	if _, ok := storage.AsCreator(b); ok {
		t.Fatal("AsCreator found a Creator over a backend without Create")
	}
}

type noCreate struct{ storage.Backend }
