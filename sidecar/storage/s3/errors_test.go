package s3_test

import (
	"context"
	"errors"
	"fmt"
	"github.com/amber-backup/amber/plugins/api/clock"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/amber-backup/amber/sidecar/storage"
	"github.com/amber-backup/amber/sidecar/storage/retry"
	"github.com/amber-backup/amber/sidecar/storage/s3"
)

// fakeS3 answers the bucket check and then serves canned responses to object
// requests, so error mapping can be tested for answers MinIO does not give
// on demand (throttling, Retry-After).
type fakeS3 struct {
	mu        sync.Mutex
	responses []fakeResponse // consumed in order; the last one repeats
	requests  int
}

type fakeResponse struct {
	status     int
	code       string
	retryAfter string
	body       string
}

func (f *fakeS3) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if r.Method == http.MethodGet && q.Has("list-type") {
		w.Header().Set("Content-Type", "application/xml")
		fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>bucket</Name><Prefix></Prefix><KeyCount>0</KeyCount><MaxKeys>1</MaxKeys><IsTruncated>false</IsTruncated></ListBucketResult>`)
		return
	}
	if q.Has("versioning") {
		fmt.Fprint(w, `<VersioningConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"></VersioningConfiguration>`)
		return
	}
	f.mu.Lock()
	f.requests++
	resp := f.responses[0]
	if len(f.responses) > 1 {
		f.responses = f.responses[1:]
	}
	f.mu.Unlock()
	if resp.retryAfter != "" {
		w.Header().Set("Retry-After", resp.retryAfter)
	}
	if resp.status == http.StatusOK {
		w.Header().Set("Content-Length", fmt.Sprint(len(resp.body)))
		w.Header().Set("Last-Modified", time.Now().UTC().Format(http.TimeFormat))
		w.Header().Set("ETag", `"0123456789abcdef0123456789abcdef"`)
		w.WriteHeader(http.StatusOK)
		if r.Method != http.MethodHead {
			fmt.Fprint(w, resp.body)
		}
		return
	}
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(resp.status)
	if r.Method != http.MethodHead {
		fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>canned</Message><Key>k</Key><BucketName>bucket</BucketName><Resource>/bucket/k</Resource><RequestId>1</RequestId><HostId>h</HostId></Error>`, resp.code)
	}
}

func openFake(t *testing.T, responses ...fakeResponse) (*s3.Backend, *fakeS3) {
	t.Helper()
	f := &fakeS3{responses: responses}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	b, err := s3.Open(context.Background(), s3.Config{
		Bucket: "bucket", Endpoint: srv.URL, Region: "us-east-1", PathStyle: true,
		AccessKeyID: "key", SecretAccessKey: "very-secret", SlowDownDelay: 2 * time.Second,
	})
	if err != nil {
		t.Fatalf("open fake s3: %v", err)
	}
	return b, f
}

func TestErrorMapping(t *testing.T) {
	ctx := context.Background()
	load := func(b *s3.Backend) error {
		rd, err := b.Load(ctx, "data/obj", 0, 0)
		if err == nil {
			rd.Close()
		}
		return err
	}
	stat := func(b *s3.Backend) error { _, err := b.Stat(ctx, "data/obj"); return err }
	save := func(b *s3.Backend) error { return b.Save(ctx, "data/obj", strings.NewReader("abc"), 3) }

	for _, tc := range []struct {
		name       string
		resp       fakeResponse
		op         func(*s3.Backend) error
		permanent  bool
		notFound   bool
		retryAfter time.Duration // 0: none expected
		mention    string
	}{
		{"SlowDownRetryAfter", fakeResponse{status: 503, code: "SlowDown", retryAfter: "7"}, load, false, false, 7 * time.Second, "slow down"},
		{"SlowDownNoHeader", fakeResponse{status: 503, code: "SlowDown"}, load, false, false, 2 * time.Second, "slow down"},
		{"TooManyRequests", fakeResponse{status: 429, code: "TooManyRequests", retryAfter: "11"}, save, false, false, 11 * time.Second, ""},
		{"HeadThrottled", fakeResponse{status: 503, retryAfter: "5"}, stat, false, false, 5 * time.Second, ""},
		{"NoSuchKey", fakeResponse{status: 404, code: "NoSuchKey"}, load, true, true, 0, "data/obj"},
		{"HeadNotFound", fakeResponse{status: 404}, stat, true, true, 0, "data/obj"},
		{"NoSuchBucket", fakeResponse{status: 404, code: "NoSuchBucket"}, save, true, false, 0, "create it"},
		{"AccessDenied", fakeResponse{status: 403, code: "AccessDenied"}, load, true, false, 0, "access denied"},
		{"InvalidAccessKeyId", fakeResponse{status: 403, code: "InvalidAccessKeyId"}, save, true, false, 0, "access key id"},
		{"SignatureDoesNotMatch", fakeResponse{status: 403, code: "SignatureDoesNotMatch"}, load, true, false, 0, "secret access key is wrong"},
		{"InternalError", fakeResponse{status: 500, code: "InternalError"}, load, false, false, 0, "data/obj"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, f := openFake(t, tc.resp)
			err := tc.op(b)
			if err == nil {
				t.Fatal("no error")
			}
			if storage.IsPermanent(err) != tc.permanent {
				t.Errorf("IsPermanent = %v, want %v: %v", !tc.permanent, tc.permanent, err)
			}
			if errors.Is(err, storage.ErrNotFound) != tc.notFound {
				t.Errorf("ErrNotFound = %v, want %v: %v", !tc.notFound, tc.notFound, err)
			}
			d, ok := storage.RetryAfter(err)
			if tc.retryAfter == 0 && ok {
				t.Errorf("unexpected retry-after %s: %v", d, err)
			}
			if tc.retryAfter != 0 && (!ok || d != tc.retryAfter) {
				t.Errorf("retry-after %s (%v), want %s: %v", d, ok, tc.retryAfter, err)
			}
			if !strings.Contains(err.Error(), tc.mention) {
				t.Errorf("error %q does not mention %q", err, tc.mention)
			}
			if strings.Contains(err.Error(), "very-secret") {
				t.Errorf("error %q leaks the secret", err)
			}
			if f.requests != 1 {
				t.Errorf("%d requests; the client retried by itself", f.requests)
			}
		})
	}
}

func TestRetryOverThrottledS3(t *testing.T) {
	b, f := openFake(t,
		fakeResponse{status: 503, code: "SlowDown", retryAfter: "3"},
		fakeResponse{status: 429, code: "TooManyRequests", retryAfter: "4"},
		fakeResponse{status: 200, body: "hello"},
	)
	rec := &recordingClock{}
	rb := retry.New(b, retry.Options{Clock: rec})
	got, err := storage.ReadAll(context.Background(), rb, "data/obj")
	if err != nil || string(got) != "hello" {
		t.Fatalf("load through retry: %q, %v", got, err)
	}
	if fmt.Sprint(rec.waits) != "[3s 4s]" {
		t.Errorf("waits %v, want [3s 4s]", rec.waits)
	}
	if f.requests != 3 {
		t.Errorf("%d requests, want 3", f.requests)
	}
}

func TestRetryAfterDate(t *testing.T) {
	when := time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)
	b, _ := openFake(t, fakeResponse{status: 503, code: "SlowDown", retryAfter: when})
	_, err := b.Stat(context.Background(), "x")
	d, ok := storage.RetryAfter(err)
	if !ok || d < 80*time.Second || d > 91*time.Second {
		t.Fatalf("retry-after %s (%v) from date %s, want about 90s", d, ok, when)
	}
}

// recordingClock records each wait and lets it pass at once.
type recordingClock struct{ waits []time.Duration }

func (c *recordingClock) Now() time.Time { return time.Now() }
func (c *recordingClock) After(d time.Duration) <-chan time.Time {
	c.waits = append(c.waits, d)
	ch := make(chan time.Time, 1)
	ch <- time.Now()
	return ch
}
func (c *recordingClock) AfterFunc(d time.Duration, f func()) clock.Timer {
	return time.AfterFunc(d, f)
}
