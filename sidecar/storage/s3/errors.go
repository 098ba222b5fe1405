package s3

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/amber-backup/amber/sidecar/storage"
)

// mapErr turns an error from minio-go into Amber's storage vocabulary, naming
// the operation and object. ra holds the Retry-After header of the failed
// request, if the transport saw one.
func (b *Backend) mapErr(ctx context.Context, op, name string, err error, ra *retryAfterHolder) error {
	what := op
	if name != "" {
		what = op + " " + name
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("%s: %w", what, ctxErr)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w", what, err)
	}

	resp := minio.ToErrorResponse(err)
	switch resp.Code {
	case "":
		// Not an S3 error response: a network or client-side failure.
		return b.mapNetErr(what, err)
	case minio.NoSuchKey, "NotFound":
		if name == "" {
			break
		}
		return storage.NotFound(name)
	case minio.NoSuchBucket:
		return storage.Permanent(fmt.Errorf("%s: bucket %q does not exist at %s; create it or fix the bucket name", what, b.bucket, b.endpoint))
	case minio.AccessDenied:
		return storage.Permanent(fmt.Errorf("%s: access denied to %s; check that the credentials are right and that their policy allows s3:ListBucket, s3:GetObject, s3:PutObject and s3:DeleteObject on it", what, b.location))
	case "InvalidAccessKeyId":
		return storage.Permanent(fmt.Errorf("%s: %s does not know the access key id; check the configured access key (or AWS_ACCESS_KEY_ID)", what, b.endpoint))
	case "SignatureDoesNotMatch":
		return storage.Permanent(fmt.Errorf("%s: %s rejected the request signature: the secret access key is wrong for this access key id; check the configured secret", what, b.endpoint))
	case "InvalidBucketName":
		return storage.Permanent(fmt.Errorf("%s: %q is not a valid bucket name", what, b.bucket))
	case "AuthorizationHeaderMalformed", "InvalidRegion", "IllegalLocationConstraintException":
		return storage.Permanent(fmt.Errorf("%s: region mismatch for bucket %q: %s; set the bucket's region", what, b.bucket, resp.Message))
	case "RequestTimeTooSkewed":
		return storage.Permanent(fmt.Errorf("%s: %s says this machine's clock is off; synchronise the clock (NTP)", what, b.endpoint))
	case "ExpiredToken", "ExpiredTokenException", "InvalidToken":
		// Temporary credentials expire; the provider refreshes them.
		return fmt.Errorf("%s: %s: %w", what, resp.Code, err)
	case "SlowDown", "SlowDownRead", "SlowDownWrite", "Throttling", "ThrottlingException",
		"RequestLimitExceeded", "RequestThrottled", "TooManyRequests":
		return storage.WithRetryAfter(fmt.Errorf("%s: S3 endpoint %s asks to slow down (%s): %w", what, b.endpoint, resp.Code, err), b.retryDelay(ra))
	}
	// err's text is only the server's message; say who answered what.
	err = fmt.Errorf("S3 endpoint %s answered %s (HTTP %d): %w", b.endpoint, resp.Code, resp.StatusCode, err)
	switch {
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable:
		return storage.WithRetryAfter(fmt.Errorf("%s: %w", what, err), b.retryDelay(ra))
	case resp.StatusCode == http.StatusNotFound && name != "":
		return storage.NotFound(name)
	case resp.StatusCode == http.StatusRequestTimeout || resp.Code == "RequestTimeout" || resp.Code == "InternalError":
		return fmt.Errorf("%s: %w", what, err)
	case resp.StatusCode >= 400 && resp.StatusCode < 500:
		// Other client errors repeat on retry.
		return storage.Permanent(fmt.Errorf("%s: %w", what, err))
	}
	return fmt.Errorf("%s: %w", what, err)
}

// mapNetErr explains errors that happened before any S3 response.
func (b *Backend) mapNetErr(what string, err error) error {
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var certInvalid x509.CertificateInvalidError
	if errors.As(err, &unknownCA) || errors.As(err, &hostname) || errors.As(err, &certInvalid) {
		return storage.Permanent(fmt.Errorf("%s: TLS certificate of S3 endpoint %s is not trusted: %w; fix the endpoint or install its CA", what, b.endpoint, err))
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return fmt.Errorf("%s: cannot resolve S3 endpoint %s: %w; check the endpoint name and DNS", what, b.endpoint, dnsErr)
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		return fmt.Errorf("%s: cannot reach S3 endpoint %s: %w; check the endpoint address and that the server is running", what, b.endpoint, opErr)
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%s: cannot reach S3 endpoint %s: %w; check the endpoint address and that the server is running", what, b.endpoint, err)
	}
	return fmt.Errorf("%s: S3 endpoint %s: %w", what, b.endpoint, err)
}

func (b *Backend) retryDelay(ra *retryAfterHolder) time.Duration {
	if ra != nil {
		if d, ok := ra.get(); ok {
			return d
		}
	}
	return b.slowDown
}

// retryAfterHolder receives the Retry-After of a request's 429/503 response:
// minio-go's error values do not carry response headers, so the transport
// hands it over through the request's context.
type retryAfterHolder struct {
	mu    sync.Mutex
	delay time.Duration
	set   bool
}

func (h *retryAfterHolder) put(d time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.set || d > h.delay {
		h.delay, h.set = d, true
	}
}

func (h *retryAfterHolder) get() (time.Duration, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.delay, h.set
}

type retryAfterKey struct{}

func withRetryAfterHolder(ctx context.Context, h *retryAfterHolder) context.Context {
	return context.WithValue(ctx, retryAfterKey{}, h)
}

// retryAfterTransport records the Retry-After header of 429 and 503
// responses in the holder carried by the request's context.
type retryAfterTransport struct {
	base http.RoundTripper
	now  func() time.Time // nil: time.Now
}

func (t *retryAfterTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err != nil || (resp.StatusCode != http.StatusTooManyRequests && resp.StatusCode != http.StatusServiceUnavailable) {
		return resp, err
	}
	if h, ok := req.Context().Value(retryAfterKey{}).(*retryAfterHolder); ok {
		now := time.Now
		if t.now != nil {
			now = t.now
		}
		if d, ok := parseRetryAfter(resp.Header.Get("Retry-After"), now()); ok {
			h.put(d)
		}
	}
	return resp, nil
}

func (t *retryAfterTransport) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// parseRetryAfter reads a Retry-After value: delay-seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs < 0 {
			return 0, false
		}
		return time.Duration(secs) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		d := t.Sub(now)
		if d < 0 {
			d = 0
		}
		return d, true
	}
	return 0, false
}
