package throttle_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/amber-backup/amber/sidecar/storage"
	"github.com/amber-backup/amber/sidecar/storage/file"
	"github.com/amber-backup/amber/sidecar/storage/throttle"
)

// A limited upload takes as long as the limit says and stores every byte;
// an unlimited one on the same backend is not slowed; the conditional
// create is kept, and throttled too.
func TestLimit(t *testing.T) {
	inner, err := file.Open(t.TempDir(), true)
	if err != nil {
		t.Fatal(err)
	}
	be := throttle.Wrap(inner)
	data := bytes.Repeat([]byte("amber "), 2<<20/6) // ~2 MiB
	const limit = 4 << 20                           // 4 MiB/s: ~0.5 s less the burst

	ctx := context.Background()
	start := time.Now()
	if err := be.Save(ctx, "data/free", bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	free := time.Since(start)

	lctx := throttle.WithLimit(ctx, limit)
	if got := throttle.Limit(lctx); got != limit {
		t.Fatalf("Limit = %d, want %d", got, limit)
	}
	start = time.Now()
	if err := be.Save(lctx, "data/limited", bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	limited := time.Since(start)
	want := time.Duration(float64(len(data)-256<<10) / limit * float64(time.Second))
	if limited < want*9/10 {
		t.Errorf("a %d-byte upload at %d B/s took %s, want at least %s", len(data), limit, limited, want)
	}
	if free > want/2 {
		t.Errorf("an upload without a limit took %s: it was slowed", free)
	}
	got, err := storage.ReadAll(ctx, be, "data/limited")
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes (%v), want the %d written", len(got), err, len(data))
	}

	c, ok := storage.AsCreator(be)
	if !ok {
		t.Fatal("the wrapper hides the file backend's conditional create")
	}
	if err := c.Create(lctx, "data/limited", bytes.NewReader(data), int64(len(data))); !errors.Is(err, storage.ErrExists) {
		t.Fatalf("Create over an existing object: %v, want ErrExists", err)
	}
	ctx2, cancel := context.WithCancel(throttle.WithLimit(ctx, 1024))
	cancel()
	if err := be.Save(ctx2, "data/cancelled", bytes.NewReader(data), int64(len(data))); err == nil {
		t.Fatal("a cancelled, limited upload succeeded")
	}
}
