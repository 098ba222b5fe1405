package b2_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/amber-backup/amber/sidecar/storage"
	"github.com/amber-backup/amber/sidecar/storage/b2"
	"github.com/amber-backup/amber/sidecar/storage/b2/b2fake"
)

// actions returns the actions of name's versions, newest first.
func actions(srv *b2fake.Server, bucket, name string) []string {
	var out []string
	for _, v := range srv.Versions(bucket, name) {
		if v.Name == name {
			out = append(out, v.Action)
		}
	}
	return out
}

// TestRemoveHides: by default Remove hides the name (b2_hide_file) and keeps
// every version, so deleting the hide marker undoes it.
func TestRemoveHides(t *testing.T) {
	srv := newServer(t)
	be, bucket := freshBucket(t, srv, false)
	ctx := context.Background()
	save(t, be, "index/i1", []byte("v1"))
	save(t, be, "index/i1", []byte("v2"))
	if err := be.Remove(ctx, "index/i1"); err != nil {
		t.Fatal(err)
	}
	if _, err := be.Stat(ctx, "index/i1"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("stat after remove: %v, want ErrNotFound", err)
	}
	if got := actions(srv, bucket, "repo/index/i1"); len(got) != 3 || got[0] != "hide" || got[1] != "upload" || got[2] != "upload" {
		t.Fatalf("versions after remove: %v, want [hide upload upload]", got)
	}
	if err := be.Remove(ctx, "index/i1"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("remove of a hidden name: %v, want ErrNotFound", err)
	}
	if n := len(actions(srv, bucket, "repo/index/i1")); n != 3 {
		t.Errorf("second remove changed the versions (%d now)", n)
	}
	// Undo: delete the hide marker.
	vs := srv.Versions(bucket, "repo/index/i1")
	if err := rawBucket(t, srv, bucket).File(vs[0].ID, vs[0].Name).DeleteFileVersion(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := storage.ReadAll(ctx, be, "index/i1"); err != nil || string(got) != "v2" {
		t.Fatalf("after deleting the hide marker: %q, %v; want v2", got, err)
	}
}

// TestRemovePurge: with Purge, Remove deletes every version.
func TestRemovePurge(t *testing.T) {
	srv := newServer(t)
	be, bucket := freshBucket(t, srv, false, func(c *b2.Config) { c.Purge = true })
	ctx := context.Background()
	save(t, be, "index/i1", []byte("v1"))
	save(t, be, "index/i1", []byte("v2"))
	if err := be.Remove(ctx, "index/i1"); err != nil {
		t.Fatal(err)
	}
	if got := actions(srv, bucket, "repo/index/i1"); len(got) != 0 {
		t.Fatalf("versions after a purging remove: %v", got)
	}
}

// TestLockExempt: with lock-days, names amber removes routinely (locks/,
// writers/, *.partial) are stored without retention and can be purged; a
// pack is locked: it can be hidden, never deleted.
func TestLockExempt(t *testing.T) {
	clk := newTestClock(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
	srv := newServer(t, b2fake.WithClock(clk.Now))
	ctx := context.Background()
	purging, bucket := freshBucket(t, srv, true, func(c *b2.Config) {
		c.LockDays, c.Clock, c.Purge = 7, clk, true
	})
	cfg := config(srv, bucket)
	cfg.LockDays, cfg.Clock = 7, clk
	hiding := open(t, cfg)

	for _, n := range []string{"locks/prune-20300102T030405Z-ab", "writers/w1", "log/pg/1/000A-000B.partial", "data/ab/abcd", "log/pg/1/000A-000B"} {
		save(t, purging, n, []byte("x"))
	}
	for _, v := range srv.Versions(bucket, "") {
		locked := v.RetentionMode != ""
		want := v.Name == "repo/data/ab/abcd" || v.Name == "repo/log/pg/1/000A-000B"
		if locked != want {
			t.Errorf("%s stored with retention %q; want locked: %v", v.Name, v.RetentionMode, want)
		}
	}
	for _, n := range []string{"locks/prune-20300102T030405Z-ab", "writers/w1", "log/pg/1/000A-000B.partial"} {
		if err := purging.Remove(ctx, n); err != nil {
			t.Errorf("remove %s: %v", n, err)
		}
		if got := actions(srv, bucket, "repo/"+n); len(got) != 0 {
			t.Errorf("%s: versions %v left after remove", n, got)
		}
	}
	if err := purging.Remove(ctx, "data/ab/abcd"); err == nil || !storage.IsPermanent(err) {
		t.Errorf("purge of a locked pack: %v, want a permanent error", err)
	}
	// A key holder can still hide it; the locked version stays.
	if err := hiding.Remove(ctx, "data/ab/abcd"); err != nil {
		t.Fatalf("hide of a locked pack: %v", err)
	}
	if got := actions(srv, bucket, "repo/data/ab/abcd"); len(got) != 2 || got[1] != "upload" {
		t.Errorf("locked pack after hide: %v, want [hide upload]", got)
	}

	// The exemptions are configuration: with none, a lock is locked too.
	strict, strictBucket := freshBucket(t, srv, true, func(c *b2.Config) {
		c.LockDays, c.Clock, c.LockExemptPrefixes, c.LockExemptSuffixes = 7, clk, []string{}, []string{}
	})
	save(t, strict, "locks/x", []byte("x"))
	if vs := srv.Versions(strictBucket, "repo/locks/x"); len(vs) != 1 || vs[0].RetentionMode == "" {
		t.Errorf("with no exemptions, locks/x stored as %+v, want locked", vs)
	}
}
