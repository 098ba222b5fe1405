package b2

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/Backblaze/blazer/base"

	"github.com/amber-backup/amber/sidecar/storage"
)

// apiErr is what B2 answered, dug out of blazer's error.
type apiErr struct {
	status     int    // HTTP status; 0 when the request got no answer
	code       string // B2's error code, e.g. "bad_auth_token"
	msg        string
	retryAfter time.Duration // the Retry-After header, when B2 sent one
}

// b2Error finds blazer's error in err's chain. Blazer's error type is
// unexported, so each link is offered to base.MsgCode in turn.
func b2Error(err error) (apiErr, bool) {
	for e := err; e != nil; e = errors.Unwrap(e) {
		status, code, msg := base.MsgCode(e)
		if status != 0 {
			return apiErr{status: status, code: code, msg: msg, retryAfter: base.Backoff(e)}, true
		}
	}
	return apiErr{}, false
}

func tokenRejected(err error) bool {
	ae, ok := b2Error(err)
	return ok && ae.status == http.StatusUnauthorized && (ae.code == "expired_auth_token" || ae.code == "bad_auth_token")
}

// authErr explains a failed b2_authorize_account.
func (b *Backend) authErr(ctx context.Context, err error) error {
	ae, ok := b2Error(err)
	if ok && (ae.status == http.StatusUnauthorized || ae.status == http.StatusForbidden) {
		return storage.Permanent(fmt.Errorf("authorize B2 key %s: B2 rejected it (%s: %s); the key ID or key is wrong, revoked or expired: check B2_APPLICATION_KEY_ID and B2_APPLICATION_KEY",
			b.cfg.KeyID, ae.code, ae.msg))
	}
	return b.mapErr(ctx, "authorize B2 key", b.cfg.KeyID, err)
}

// mapErr turns an error from blazer into storage's vocabulary, saying which
// operation (op) on which object (where) failed:
//
//   - 404 not_found, 400 file_not_present: storage.ErrNotFound
//   - 400 bad_bucket_id: permanent, the bucket is gone or invisible
//   - 401/403 (other than an expired token), other 400s, 416: permanent
//   - 429, 5xx, 408, network errors, a SHA1 mismatch on upload: transient,
//     with storage.WithRetryAfter when B2 sent Retry-After
func (b *Backend) mapErr(ctx context.Context, op, where string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("%s %s: %w", op, where, err)
	}
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("%s %s: %w", op, where, cerr)
	}
	ae, ok := b2Error(err)
	if !ok {
		// No answer from B2 (connection refused or reset, timeout, a reply
		// blazer could not decode): worth another try.
		return fmt.Errorf("%s %s: %w", op, where, err)
	}
	wrapped := fmt.Errorf("%s %s: B2 answered %d %s: %s", op, where, ae.status, ae.code, ae.msg)
	switch {
	case ae.status == http.StatusNotFound || ae.code == "file_not_present" || ae.code == "no_such_file":
		return fmt.Errorf("%s %s: %w", op, where, storage.ErrNotFound)
	case ae.code == "bad_bucket_id":
		return storage.Permanent(fmt.Errorf("%s %s: %w", op, where, b.noBucket()))
	case ae.status == http.StatusUnauthorized && (ae.code == "expired_auth_token" || ae.code == "bad_auth_token"):
		return wrapped // refreshed once already; the next attempt authorises again
	case ae.status == http.StatusForbidden && (ae.code == "cap_exceeded" || ae.code == "storage_cap_exceeded" || ae.code == "transaction_cap_exceeded" || ae.code == "download_cap_exceeded"):
		return storage.Permanent(fmt.Errorf("%w; the B2 account reached a usage cap: raise the caps in the Backblaze web console", wrapped))
	case ae.status == http.StatusUnauthorized || ae.status == http.StatusForbidden:
		return storage.Permanent(fmt.Errorf("%w; B2_APPLICATION_KEY_ID (%s) names a key that may not do this: it needs listBuckets, listFiles, readFiles, writeFiles and deleteFiles (and writeFileRetentions with Object Lock) on bucket %s and prefix %q",
			wrapped, b.cfg.KeyID, b.cfg.Bucket, b.root))
	case ae.status == http.StatusRequestedRangeNotSatisfiable:
		return storage.Permanent(fmt.Errorf("%w; the range starts beyond the end of the object", wrapped))
	case ae.status == http.StatusTooManyRequests || ae.status == http.StatusRequestTimeout || ae.status >= 500:
		if ae.retryAfter > 0 && (ae.status == http.StatusTooManyRequests || ae.status == http.StatusServiceUnavailable) {
			return storage.WithRetryAfter(wrapped, ae.retryAfter)
		}
		return wrapped
	case ae.status == http.StatusBadRequest && (strings.Contains(ae.msg, "Sha1 did not match") || strings.HasPrefix(ae.msg, "more than one upload using auth token")):
		return wrapped // corrupted in transit, or an upload URL in use: a new upload may succeed
	case ae.status == http.StatusBadRequest && b.cfg.LockDays > 0 && op == "save":
		return storage.Permanent(fmt.Errorf("%w; uploads carry Object Lock retention, so bucket %s must have Object Lock enabled and the key the writeFileRetentions capability", wrapped, b.cfg.Bucket))
	default:
		return storage.Permanent(wrapped)
	}
}
