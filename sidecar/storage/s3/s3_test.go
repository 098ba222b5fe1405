package s3_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/amber-backup/amber/conformance/testbed"
	"github.com/amber-backup/amber/sidecar/storage"
	"github.com/amber-backup/amber/sidecar/storage/s3"
	"github.com/amber-backup/amber/sidecar/storage/storagetest"
)

// TestMinIO runs everything that needs a real S3 server against one MinIO
// started for this test binary; each subtest gets its own prefix.
func TestMinIO(t *testing.T) {
	m := testbed.StartMinIO(t)
	bucket := m.CreateBucket(t, "")
	config := func(prefix string) s3.Config {
		return s3.Config{
			Bucket:          bucket,
			Prefix:          prefix,
			Endpoint:        m.Endpoint,
			Region:          "us-east-1",
			PathStyle:       true,
			Insecure:        true,
			AccessKeyID:     m.AccessKey,
			SecretAccessKey: s3.Secret(m.SecretKey),
		}
	}
	open := func(t *testing.T, cfg s3.Config) *s3.Backend {
		t.Helper()
		b, err := s3.Open(context.Background(), cfg)
		if err != nil {
			t.Fatalf("open %s: %v", cfg.Bucket, err)
		}
		t.Cleanup(func() { b.Close() })
		return b
	}

	t.Run("Suite", func(t *testing.T) {
		storagetest.Run(t, func(t *testing.T) storage.Backend {
			return open(t, config(freshPrefix(t)))
		})
	})

	t.Run("SuiteMultipart", func(t *testing.T) {
		// The suite's Large object (24 MiB) crosses a 5 MiB part size.
		storagetest.Run(t, func(t *testing.T) storage.Backend {
			cfg := config(freshPrefix(t))
			cfg.PartSize = s3.MinPartSize
			return open(t, cfg)
		})
	})

	t.Run("MissingBucket", func(t *testing.T) {
		cfg := config("x")
		cfg.Bucket = "no-such-bucket-" + strings.ToLower(randomName(4))
		_, err := s3.Open(context.Background(), cfg)
		if err == nil {
			t.Fatal("open of a missing bucket succeeded")
		}
		if !storage.IsPermanent(err) {
			t.Errorf("missing bucket error is not permanent: %v", err)
		}
		for _, want := range []string{cfg.Bucket, "does not exist", "create it"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("missing bucket error %q does not mention %q", err, want)
			}
		}
	})

	t.Run("WrongSecret", func(t *testing.T) {
		cfg := config("x")
		cfg.SecretAccessKey = "not-the-secret-at-all"
		_, err := s3.Open(context.Background(), cfg)
		if err == nil {
			t.Fatal("open with a wrong secret succeeded")
		}
		if !storage.IsPermanent(err) {
			t.Errorf("wrong secret error is not permanent: %v", err)
		}
		if !strings.Contains(err.Error(), "secret access key is wrong") {
			t.Errorf("wrong secret error %q does not say the secret is wrong", err)
		}
		if strings.Contains(err.Error(), "not-the-secret-at-all") || strings.Contains(err.Error(), m.SecretKey) {
			t.Errorf("error %q leaks a secret", err)
		}
	})

	t.Run("UnknownAccessKey", func(t *testing.T) {
		cfg := config("x")
		cfg.AccessKeyID = "nobody"
		_, err := s3.Open(context.Background(), cfg)
		if err == nil || !storage.IsPermanent(err) || !strings.Contains(err.Error(), "access key id") {
			t.Fatalf("open with an unknown access key: %v, want a permanent error about the access key id", err)
		}
	})

	t.Run("Multipart", func(t *testing.T) {
		counter := &requestCounter{base: http.DefaultTransport}
		cfg := config(freshPrefix(t))
		cfg.PartSize = s3.MinPartSize
		cfg.Concurrency = 2
		cfg.Transport = counter
		b := open(t, cfg)

		data := make([]byte, 2*s3.MinPartSize+12345)
		rand.Read(data)
		// Hold the upload after its first part to see that the object is
		// not visible before completion.
		gate := &gatedReader{r: bytes.NewReader(data), gateAt: s3.MinPartSize, opened: make(chan struct{}), release: make(chan struct{})}
		done := make(chan error, 1)
		go func() { done <- b.Save(context.Background(), "data/big", gate, int64(len(data))) }()
		select {
		case <-gate.opened:
		case err := <-done:
			t.Fatalf("save finished before reaching the gate: %v", err)
		case <-time.After(30 * time.Second):
			t.Fatal("upload never reached the second part")
		}
		if _, err := b.Stat(context.Background(), "data/big"); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("stat during multipart upload: %v, want ErrNotFound", err)
		}
		close(gate.release)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if got := counter.parts.Load(); got != 3 {
			t.Errorf("uploaded %d parts, want 3", got)
		}
		if counter.completes.Load() != 1 {
			t.Errorf("completed %d multipart uploads, want 1", counter.completes.Load())
		}
		got, err := storage.ReadAll(context.Background(), b, "data/big")
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("multipart object differs after round trip (%d bytes, %v)", len(got), err)
		}
	})

	t.Run("MultipartFailureLeavesNothing", func(t *testing.T) {
		cfg := config(freshPrefix(t))
		cfg.PartSize = s3.MinPartSize
		b := open(t, cfg)
		src := &failingReaderAt{data: make([]byte, 3*s3.MinPartSize), failAt: 2 * s3.MinPartSize}
		if err := b.Save(context.Background(), "data/broken", src, int64(len(src.data))); err == nil {
			t.Fatal("save with a failing source succeeded")
		}
		if _, err := b.Stat(context.Background(), "data/broken"); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("stat after failed save: %v, want ErrNotFound", err)
		}
		uploads := 0
		for u := range m.Client(t).ListIncompleteUploads(context.Background(), bucket, cfg.Prefix, true) {
			if u.Err == nil {
				uploads++
			}
		}
		if uploads != 0 {
			t.Errorf("%d incomplete multipart uploads left behind", uploads)
		}
	})

	t.Run("Versioned", func(t *testing.T) {
		ctx := context.Background()
		vbucket := m.CreateBucket(t, "")
		if err := m.Client(t).EnableVersioning(ctx, vbucket); err != nil {
			testbed.Skip(t, "this MinIO does not do versioning: %v", err)
		}
		cfg := config("v")
		cfg.Bucket = vbucket
		b := open(t, cfg)
		for _, s := range []string{"one", "two", "three"} {
			if err := b.Save(ctx, "config", strings.NewReader(s), int64(len(s))); err != nil {
				t.Fatal(err)
			}
		}
		if err := b.Remove(ctx, "config"); err != nil {
			t.Fatal(err)
		}
		left := 0
		for o := range m.Client(t).ListObjects(ctx, vbucket, minio.ListObjectsOptions{WithVersions: true, Recursive: true}) {
			if o.Err != nil {
				t.Fatal(o.Err)
			}
			left++
		}
		if left != 0 {
			t.Errorf("%d versions left after remove", left)
		}
		if err := b.Remove(ctx, "config"); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("second remove: %v, want ErrNotFound", err)
		}
	})

	t.Run("Location", func(t *testing.T) {
		b := open(t, config("some/prefix/"))
		want := "s3://" + m.Endpoint + "/" + bucket + "/some/prefix"
		if b.Location() != want {
			t.Errorf("location %q, want %q", b.Location(), want)
		}
	})
}

func TestUnreachableEndpoint(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := s3.Open(ctx, s3.Config{
		Bucket: "amber", Endpoint: "127.0.0.1:9", Insecure: true, Region: "us-east-1", PathStyle: true,
		AccessKeyID: "k", SecretAccessKey: "s",
	})
	if err == nil {
		t.Fatal("open of an unreachable endpoint succeeded")
	}
	t.Logf("unreachable endpoint: %v", err)
	if !strings.Contains(err.Error(), "cannot reach S3 endpoint 127.0.0.1:9") {
		t.Errorf("error %q does not name the endpoint", err)
	}
	if storage.IsPermanent(err) {
		t.Errorf("unreachable endpoint error is permanent, want transient: %v", err)
	}
}

func TestSecretNeverPrints(t *testing.T) {
	s := s3.Secret("hunter2")
	cfg := s3.Config{SecretAccessKey: s, SessionToken: s}
	for _, out := range []string{
		fmt.Sprint(s), fmt.Sprintf("%s %v %q %x %#v", s, s, s, s, s),
		fmt.Sprintf("%v %+v %#v", cfg, cfg, cfg),
	} {
		if strings.Contains(out, "hunter2") || strings.Contains(out, "68756e74657232") {
			t.Errorf("secret printed: %s", out)
		}
	}
	if s.Reveal() != "hunter2" {
		t.Error("Reveal does not return the secret")
	}
}

func freshPrefix(t *testing.T) string {
	name := regexp.MustCompile(`[^a-zA-Z0-9]+`).ReplaceAllString(t.Name(), "-")
	return "t/" + name + "-" + randomName(3)
}

func randomName(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return fmt.Sprintf("%x", b)
}

// requestCounter counts multipart part uploads and completions.
type requestCounter struct {
	base      http.RoundTripper
	parts     atomic.Int64
	completes atomic.Int64
}

func (c *requestCounter) RoundTrip(req *http.Request) (*http.Response, error) {
	q := req.URL.Query()
	if req.Method == http.MethodPut && q.Has("partNumber") && q.Has("uploadId") {
		c.parts.Add(1)
	}
	if req.Method == http.MethodPost && q.Has("uploadId") {
		c.completes.Add(1)
	}
	return c.base.RoundTrip(req)
}

// gatedReader blocks reads at or beyond gateAt until release is closed,
// signalling opened the first time.
type gatedReader struct {
	r       io.ReaderAt
	gateAt  int64
	once    sync.Once
	opened  chan struct{}
	release chan struct{}
}

func (g *gatedReader) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > g.gateAt {
		g.once.Do(func() { close(g.opened) })
		<-g.release
	}
	return g.r.ReadAt(p, off)
}

// failingReaderAt fails every read that reaches failAt.
type failingReaderAt struct {
	data   []byte
	failAt int64
}

func (f *failingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > f.failAt {
		return 0, errors.New("source broke")
	}
	return copy(p, f.data[off:]), nil
}
