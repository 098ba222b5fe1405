package repo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"github.com/amber-backup/amber/conformance/testbed"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

// TestRandomKeySlot: a slot unlocked by a random secret opens without
// running any other slot's stretching, expires, and is removed by prune.
func TestRandomKeySlot(t *testing.T) {
	tr := newTestRepo(t, Options{})
	ctx := context.Background()
	// An expensive password slot beside it.
	if _, err := tr.AddKey(ctx, []byte("other"), KDFParams{Time: 3, Memory: 64 << 10, Threads: 4}); err != nil {
		t.Fatal(err)
	}
	id, secret, err := tr.AddRandomKey(ctx, "restore job 7", time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	r, err := Open(ctx, tr.be, secret, Options{CacheDir: "-", KeySlot: id})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(began); d > 50*time.Millisecond {
		t.Fatalf("opening with a random slot took %s", d)
	}
	// Without KeySlot the cheap slot is tried first, too.
	if _, err := Open(ctx, tr.be, secret, Options{CacheDir: "-"}); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, tr.be, []byte("wrong"), Options{CacheDir: "-", KeySlot: id}); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("wrong secret: %v", err)
	}
	keys, _ := r.Keys(ctx)
	found := false
	for _, k := range keys {
		if k.ID == id {
			found = k.Kind == "random" && k.Label == "restore job 7" && k.Current && !k.Expires.IsZero()
		}
	}
	if !found {
		t.Fatalf("key list: %+v", keys)
	}
	if err := tr.RemoveKey(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, tr.be, secret, Options{CacheDir: "-", KeySlot: id}); err == nil {
		t.Fatal("removed random slot still opens")
	}

	// Expired: refused by Open, removed by prune.
	id2, secret2, err := tr.AddRandomKey(ctx, "", time.Now().Add(-time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, tr.be, secret2, Options{CacheDir: "-", KeySlot: id2}); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired slot: %v", err)
	}
	res, err := tr.Prune(ctx, PrunePolicy{})
	if err != nil || res.KeysExpired != 1 {
		t.Fatalf("prune of an expired slot: %+v %v", res, err)
	}
	for _, n := range tr.names(t, keysDir) {
		if strings.HasSuffix(n, id2) {
			t.Fatal("expired slot still there")
		}
	}
}

// TestOversizeKDFRefused: parameters past the caps are refused before any
// derivation, whatever the planted slot asks for.
func TestOversizeKDFRefused(t *testing.T) {
	for _, p := range []KDFParams{
		{Time: 1, Memory: 1<<32 - 1, Threads: 1},
		{Time: 1, Memory: 2 << 20, Threads: 1},
		{Time: 101, Memory: 64, Threads: 1},
		{Time: 1, Memory: 64, Threads: 0},
	} {
		s := keySlot{Version: 1, KDF: kdfArgon2id, Params: p, Salt: make([]byte, 32), Wrapped: make([]byte, 60)}
		s.Check = s.checksum()
		b, _ := json.Marshal(s)
		began := time.Now()
		if _, err := parseSlot("keys/x", b); err == nil {
			t.Errorf("params %+v accepted", p)
		}
		if d := time.Since(began); d > 10*time.Millisecond {
			t.Errorf("refusing %+v took %s", p, d)
		}
	}
	tr := newTestRepo(t, Options{})
	if _, err := tr.AddKey(context.Background(), []byte("x"), KDFParams{Time: 1, Memory: 4 << 20, Threads: 1}); err == nil {
		t.Fatal("AddKey with 4 GiB accepted")
	}
}

// TestOversizeObjectsRefused: reads are capped by what the format allows.
func TestOversizeObjectsRefused(t *testing.T) {
	tr := newTestRepo(t, Options{})
	ctx := context.Background()
	big := append([]byte(`{"version":1`), bytes.Repeat([]byte(" "), maxSmallObject)...)
	big = append(big, '}')
	put(t, tr.be, keysDir+"00big", big)
	_, err := loadSlot(ctx, tr.be, keysDir+"00big")
	if err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("oversize key slot: %v", err)
	}
	// A compressed blob that inflates past the largest blob the format has.
	enc, _ := zstd.NewWriter(nil)
	bomb := enc.EncodeAll(make([]byte, maxBlobPlain+1), nil)
	id := ID{7}
	l := Location{BlobInfo: BlobInfo{ID: id, Type: DataBlob, RawLength: 100, Compressed: true}}
	_, err = tr.openBlob(l, tr.seal.seal(nil, bomb, blobAD(id, DataBlob)), nil)
	if err == nil || !strings.Contains(err.Error(), "decompress") {
		t.Fatalf("decompression bomb: %v", err)
	}
}

// TestDefaultKDFCost measures what one password open costs with the
// default parameters.
func TestDefaultKDFCost(t *testing.T) {
	if testing.Short() {
		testbed.Skip(t, "-short: this test measures the default key derivation")
	}
	began := time.Now()
	deriveKEK([]byte("password"), make([]byte, 32), DefaultKDF)
	t.Logf("default Argon2id %+v: %s per password open", DefaultKDF, time.Since(began).Round(time.Millisecond))
}
