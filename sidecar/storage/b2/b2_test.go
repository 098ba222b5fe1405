package b2_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"github.com/amber-backup/amber/plugins/api/clock"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Backblaze/blazer/base"

	"github.com/amber-backup/amber/sidecar/storage"
	"github.com/amber-backup/amber/sidecar/storage/b2"
	"github.com/amber-backup/amber/sidecar/storage/b2/b2fake"
	"github.com/amber-backup/amber/sidecar/storage/storagetest"
)

// Test sizes: small enough to keep tests quick, large enough that
// storagetest's 24 MiB object goes through the large-file API in 5 parts.
const (
	testThreshold = 6 << 20
	testPartSize  = 5 << 20
)

var bucketSeq atomic.Int64

func newServer(t *testing.T, opts ...b2fake.Option) *b2fake.Server {
	t.Helper()
	srv := b2fake.New(opts...)
	t.Cleanup(srv.Close)
	return srv
}

func config(srv *b2fake.Server, bucket string) b2.Config {
	return b2.Config{
		Bucket:             bucket,
		Prefix:             "repo",
		KeyID:              srv.KeyID(),
		Key:                b2.Secret(srv.Key()),
		APIBase:            srv.URL(),
		LargeFileThreshold: testThreshold,
		PartSize:           testPartSize,
		Concurrency:        3,
	}
}

func open(t *testing.T, cfg b2.Config) *b2.Backend {
	t.Helper()
	be, err := b2.Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { be.Close() })
	return be
}

// freshBucket makes a new bucket on srv and a backend on it.
func freshBucket(t *testing.T, srv *b2fake.Server, lock bool, edit ...func(*b2.Config)) (*b2.Backend, string) {
	t.Helper()
	name := fmt.Sprintf("amber-test-%d", bucketSeq.Add(1))
	srv.CreateBucket(name, lock)
	cfg := config(srv, name)
	for _, e := range edit {
		e(&cfg)
	}
	return open(t, cfg), name
}

func random(t *testing.T, n int) []byte {
	t.Helper()
	buf := make([]byte, n)
	if _, err := rand.Read(buf); err != nil {
		t.Fatal(err)
	}
	return buf
}

func save(t *testing.T, be storage.Backend, name string, data []byte) {
	t.Helper()
	if err := be.Save(context.Background(), name, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatalf("save %s: %v", name, err)
	}
}

func TestSuite(t *testing.T) {
	srv := newServer(t)
	storagetest.Run(t, func(t *testing.T) storage.Backend {
		be, _ := freshBucket(t, srv, false)
		return be
	})
	if srv.Calls("b2_start_large_file") == 0 || srv.Calls("b2_finish_large_file") == 0 {
		t.Errorf("the suite's Large test did not go through B2's large-file API (start %d, finish %d calls)",
			srv.Calls("b2_start_large_file"), srv.Calls("b2_finish_large_file"))
	}
}

func TestSuiteWithoutPrefix(t *testing.T) {
	srv := newServer(t)
	storagetest.Run(t, func(t *testing.T) storage.Backend {
		be, _ := freshBucket(t, srv, false, func(c *b2.Config) { c.Prefix = "" })
		return be
	})
}

func TestLargeFilePath(t *testing.T) {
	srv := newServer(t)
	be, bucket := freshBucket(t, srv, false)

	small := random(t, testThreshold-1)
	save(t, be, "data/small", small)
	if n := srv.Calls("b2_start_large_file"); n != 0 {
		t.Fatalf("object below the threshold started %d large files", n)
	}

	large := random(t, 2*testPartSize+12345) // 3 parts, the last one short
	save(t, be, "data/large", large)
	if got := srv.Calls("b2_start_large_file"); got != 1 {
		t.Errorf("b2_start_large_file called %d times, want 1", got)
	}
	if got := srv.Calls("b2_finish_large_file"); got != 1 {
		t.Errorf("b2_finish_large_file called %d times, want 1", got)
	}
	if got := srv.Calls("b2_upload_part"); got != 3 {
		t.Errorf("b2_upload_part called %d times, want 3", got)
	}
	vs := srv.Versions(bucket, "repo/data/large")
	if len(vs) != 1 || vs[0].LargeFileParts != 3 || vs[0].Size != int64(len(large)) {
		t.Fatalf("stored versions %+v, want one large file of 3 parts and %d bytes", vs, len(large))
	}
	if vs[0].Info["large_file_sha1"] == "" {
		t.Errorf("large file stored without large_file_sha1 info")
	}
	got, err := storage.ReadAll(context.Background(), be, "data/large")
	if err != nil || !bytes.Equal(got, large) {
		t.Fatalf("large object differs after round trip (%d bytes, err %v)", len(got), err)
	}
	// Exactly the threshold takes the large path too.
	save(t, be, "data/edge", random(t, testThreshold))
	if got := srv.Calls("b2_start_large_file"); got != 2 {
		t.Errorf("object of exactly the threshold size: %d large files started in all, want 2", got)
	}
}

func TestLargeFileFailureLeavesNothing(t *testing.T) {
	srv := newServer(t)
	be, bucket := freshBucket(t, srv, false)
	srv.FailNext(1, b2fake.Fault{Method: "b2_upload_part", Status: 500})
	data := random(t, 3*testPartSize)
	err := be.Save(context.Background(), "data/broken", bytes.NewReader(data), int64(len(data)))
	if err == nil {
		t.Fatal("save succeeded although a part upload failed")
	}
	if storage.IsPermanent(err) {
		t.Errorf("a 500 on a part gave a permanent error: %v", err)
	}
	if vs := srv.Versions(bucket, ""); len(vs) != 0 {
		t.Errorf("failed save left versions behind: %+v", vs)
	}
	if srv.Calls("b2_cancel_large_file") != 1 {
		t.Errorf("unfinished large file was not cancelled")
	}
	if _, err := be.Stat(context.Background(), "data/broken"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("stat after failed save: %v, want ErrNotFound", err)
	}
	save(t, be, "data/broken", data) // a retry by the caller works
}

func TestWrongKey(t *testing.T) {
	srv := newServer(t)
	srv.CreateBucket("b", false)
	cfg := config(srv, "b")
	cfg.Key = "K000definitelyNotTheKey"
	_, err := b2.Open(context.Background(), cfg)
	if err == nil {
		t.Fatal("open with a wrong key succeeded")
	}
	if !storage.IsPermanent(err) {
		t.Errorf("wrong key gave a transient error: %v", err)
	}
	msg := err.Error()
	for _, want := range []string{"B2_APPLICATION_KEY_ID", "B2_APPLICATION_KEY", srv.KeyID()} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %s", msg, want)
		}
	}
	if strings.Contains(msg, "definitelyNotTheKey") {
		t.Errorf("error leaks the key: %q", msg)
	}
}

func TestMissingBucket(t *testing.T) {
	srv := newServer(t)
	srv.CreateBucket("other", false)
	_, err := b2.Open(context.Background(), config(srv, "no-such-bucket"))
	if err == nil {
		t.Fatal("open of a missing bucket succeeded")
	}
	if !storage.IsPermanent(err) {
		t.Errorf("missing bucket gave a transient error: %v", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "no-such-bucket does not exist or the key cannot see it") ||
		!strings.Contains(msg, "B2_APPLICATION_KEY_ID") {
		t.Errorf("error %q does not say what to check", msg)
	}
}

// clock is a settable clock shared by the fake server and the backend.
// testClock moves only when told to (Add); waits pass in real time.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func newTestClock(t time.Time) *testClock { return &testClock{t: t} }

func (c *testClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}
func (c *testClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
func (c *testClock) AfterFunc(d time.Duration, f func()) clock.Timer {
	return time.AfterFunc(d, f)
}

func TestObjectLock(t *testing.T) {
	for _, mode := range []b2.RetentionMode{b2.Governance, b2.Compliance} {
		t.Run(string(mode), func(t *testing.T) {
			clk := newTestClock(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
			srv := newServer(t, b2fake.WithClock(clk.Now))
			be, bucket := freshBucket(t, srv, true, func(c *b2.Config) {
				c.LockDays, c.LockMode, c.Clock, c.Purge = 30, mode, clk, true
			})
			ctx := context.Background()
			save(t, be, "snapshots/s1", []byte("manifest"))
			save(t, be, "data/big", random(t, testThreshold+1)) // large-file path

			until := clk.Now().Add(30 * 24 * time.Hour)
			vs := srv.Versions(bucket, "")
			if len(vs) != 2 {
				t.Fatalf("got %d versions, want 2", len(vs))
			}
			for _, v := range vs {
				if v.RetentionMode != string(mode) || !v.RetainUntil.Equal(until) {
					t.Errorf("%s stored with retention %q until %v, want %s until %v", v.Name, v.RetentionMode, v.RetainUntil, mode, until)
				}
			}

			err := be.Remove(ctx, "snapshots/s1")
			if err == nil {
				t.Fatal("remove of a locked object succeeded")
			}
			if !storage.IsPermanent(err) {
				t.Errorf("remove of a locked object gave a transient error: %v", err)
			}
			if !strings.Contains(err.Error(), "Object Lock") || !strings.Contains(err.Error(), "snapshots/s1") {
				t.Errorf("error %q does not explain the lock or name the object", err)
			}
			if got, err := storage.ReadAll(ctx, be, "snapshots/s1"); err != nil || string(got) != "manifest" {
				t.Fatalf("locked object damaged by the refused remove: %q, %v", got, err)
			}

			clk.Add(31 * 24 * time.Hour)
			if err := be.Remove(ctx, "snapshots/s1"); err != nil {
				t.Fatalf("remove after the lock expired: %v", err)
			}
		})
	}
}

func TestObjectLockNeedsLockBucket(t *testing.T) {
	srv := newServer(t)
	be, _ := freshBucket(t, srv, false, func(c *b2.Config) { c.LockDays = 7 })
	err := be.Save(context.Background(), "x", bytes.NewReader([]byte("x")), 1)
	if err == nil || !storage.IsPermanent(err) || !strings.Contains(err.Error(), "Object Lock enabled") {
		t.Fatalf("save with retention into a bucket without Object Lock: %v, want a permanent error explaining it", err)
	}
}

func TestRetryAfter(t *testing.T) {
	srv := newServer(t)
	be, _ := freshBucket(t, srv, false)
	ctx := context.Background()

	srv.FailNext(1, b2fake.Fault{Method: "b2_upload_file", Status: 503, RetryAfter: 7 * time.Second})
	err := be.Save(ctx, "a", bytes.NewReader([]byte("a")), 1)
	if d, ok := storage.RetryAfter(err); !ok || d != 7*time.Second {
		t.Errorf("503 with Retry-After 7: RetryAfter(%v) = %v, %v; want 7s", err, d, ok)
	}
	if storage.IsPermanent(err) {
		t.Errorf("503 gave a permanent error: %v", err)
	}
	save(t, be, "a", []byte("a"))

	srv.FailNext(1, b2fake.Fault{Method: "b2_download_file_by_name", Status: 429, RetryAfter: 2 * time.Second})
	_, err = be.Load(ctx, "a", 0, 0)
	if d, ok := storage.RetryAfter(err); !ok || d != 2*time.Second {
		t.Errorf("429 with Retry-After 2: RetryAfter(%v) = %v, %v; want 2s", err, d, ok)
	}

	for _, f := range []b2fake.Fault{{Status: 500}, {Drop: true}, {Status: 503}} {
		srv.FailNext(1, b2fake.Fault{Method: "b2_list_file_names", Status: f.Status, Drop: f.Drop})
		_, err := be.Stat(ctx, "a")
		if err == nil {
			t.Errorf("fault %+v: stat succeeded", f)
			continue
		}
		if storage.IsPermanent(err) {
			t.Errorf("fault %+v gave a permanent error: %v", f, err)
		}
		if _, ok := storage.RetryAfter(err); ok {
			t.Errorf("fault %+v without Retry-After reported one: %v", f, err)
		}
	}
	if _, err := be.Stat(ctx, "a"); err != nil {
		t.Fatalf("stat after faults: %v", err)
	}
}

func TestReauthorizesExpiredToken(t *testing.T) {
	srv := newServer(t)
	be, _ := freshBucket(t, srv, false)
	ctx := context.Background()
	save(t, be, "a", []byte("one"))
	srv.ExpireTokens()
	if _, err := be.Stat(ctx, "a"); err != nil {
		t.Fatalf("stat after token expiry: %v", err)
	}
	srv.ExpireTokens()
	if got, err := storage.ReadAll(ctx, be, "a"); err != nil || string(got) != "one" {
		t.Errorf("load after token expiry: %q, %v", got, err)
	}
	if n := srv.Calls("b2_authorize_account"); n != 3 {
		t.Errorf("b2_authorize_account called %d times, want 3 (open, then once after each expiry)", n)
	}
}

// rawBucket reaches the fake through blazer's low-level API, to make states
// the backend never makes itself (hide markers).
func rawBucket(t *testing.T, srv *b2fake.Server, name string) *base.Bucket {
	t.Helper()
	ctx := context.Background()
	auth, err := base.AuthorizeAccount(ctx, srv.KeyID(), srv.Key(), base.SetAPIBase(srv.URL()))
	if err != nil {
		t.Fatal(err)
	}
	bs, err := auth.ListBuckets(ctx, name)
	if err != nil || len(bs) != 1 {
		t.Fatalf("list buckets: %v, %d", err, len(bs))
	}
	return bs[0]
}

func TestHiddenAndVersions(t *testing.T) {
	srv := newServer(t)
	be, bucket := freshBucket(t, srv, false, func(c *b2.Config) { c.Purge = true })
	ctx := context.Background()
	save(t, be, "keys/a", []byte("a1"))
	save(t, be, "keys/a", []byte("a2"))
	save(t, be, "keys/b", []byte("b1"))
	if _, err := rawBucket(t, srv, bucket).HideFile(ctx, "repo/keys/b"); err != nil {
		t.Fatal(err)
	}

	var listed []string
	if err := be.List(ctx, "keys/", func(fi storage.FileInfo) error {
		listed = append(listed, fmt.Sprintf("%s:%d", fi.Name, fi.Size))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(listed) != "[keys/a:2]" {
		t.Errorf("list = %v, want only the latest version of keys/a", listed)
	}
	if _, err := be.Stat(ctx, "keys/b"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("stat of hidden object: %v, want ErrNotFound", err)
	}
	if _, err := be.Load(ctx, "keys/b", 0, 0); !errors.Is(err, storage.ErrNotFound) || !strings.Contains(err.Error(), "keys/b") {
		t.Errorf("load of hidden object: %v, want ErrNotFound naming it", err)
	}

	if err := be.Remove(ctx, "keys/a"); err != nil {
		t.Fatal(err)
	}
	// A hidden name is gone, but purging it deletes the hide marker and
	// the hidden version.
	if err := be.Remove(ctx, "keys/b"); err != nil {
		t.Fatal(err)
	}
	if vs := srv.Versions(bucket, ""); len(vs) != 0 {
		t.Errorf("versions left after remove: %+v", vs)
	}
}

func TestConfigNeverPrintsKey(t *testing.T) {
	const key = "K005supersecretapplicationkey"
	cfg := b2.Config{Bucket: "b", KeyID: "005id", Key: key}
	var out []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d"} {
		out = append(out, fmt.Sprintf(verb, cfg), fmt.Sprintf(verb, cfg.Key))
	}
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("open", "config", cfg, "key", cfg.Key)
	slog.New(slog.NewTextHandler(&logged, nil)).Info("open", "config", cfg, "key", cfg.Key)
	out = append(out, logged.String())
	for _, s := range out {
		if strings.Contains(s, "supersecret") || strings.Contains(s, fmt.Sprintf("%x", key)) {
			t.Errorf("key leaked: %s", s)
		}
	}
	if err := func() error {
		_, err := b2.Open(context.Background(), b2.Config{Bucket: "b", KeyID: "x", Key: key, APIBase: "http://127.0.0.1:1"})
		return err
	}(); err != nil && strings.Contains(err.Error(), "supersecret") {
		t.Errorf("open error leaks the key: %v", err)
	}
}

func TestLocation(t *testing.T) {
	srv := newServer(t)
	be, bucket := freshBucket(t, srv, false)
	if got, want := be.Location(), "b2://"+bucket+"/repo"; got != want {
		t.Errorf("Location() = %q, want %q", got, want)
	}
	if loc := be.Location(); strings.Contains(loc, srv.Key()) {
		t.Errorf("Location leaks the key")
	}
}

func TestLoadVerifiesSHA1(t *testing.T) {
	srv := newServer(t)
	be, _ := freshBucket(t, srv, false)
	data := random(t, 1000)
	save(t, be, "x", data)
	rd, err := be.Load(context.Background(), "x", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	if got, err := io.ReadAll(rd); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read: %v", err)
	}
}
