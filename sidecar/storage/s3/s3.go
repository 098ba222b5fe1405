package s3

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/s3utils"

	"github.com/amber-backup/amber/sidecar/storage"
)

// Defaults for Config fields left zero.
const (
	DefaultPartSize    = 16 << 20
	DefaultConcurrency = 4
	// MinPartSize is the smallest part S3 accepts (except for the last one).
	MinPartSize = 5 << 20
	// DefaultSlowDownDelay is how long to wait after a SlowDown or 429
	// response that carried no Retry-After header.
	DefaultSlowDownDelay = time.Second
)

// Secret is a credential string that never prints: fmt with any verb (also
// inside structs and maps), String, GoString, LogValue (slog's text and JSON
// handlers), MarshalJSON and MarshalText all give "***" ("" when empty, so a
// log shows whether a secret is set). Use Reveal where the value is really
// needed. A Secret never round-trips through JSON.
type Secret string

func (s Secret) String() string                { return redact(s) }
func (s Secret) GoString() string              { return redact(s) }
func (s Secret) LogValue() slog.Value          { return slog.StringValue(redact(s)) }
func (s Secret) MarshalJSON() ([]byte, error)  { return []byte(`"` + redact(s) + `"`), nil }
func (s Secret) MarshalText() ([]byte, error)  { return []byte(redact(s)), nil }
func (s Secret) Format(f fmt.State, verb rune) { _, _ = io.WriteString(f, redact(s)) }

// Reveal returns the secret itself.
func (s Secret) Reveal() string { return string(s) }

func redact(s Secret) string {
	if s == "" {
		return ""
	}
	return "***"
}

// Config says where the repository lives and how to reach it.
type Config struct {
	// Bucket is the bucket's name. Required.
	Bucket string
	// Prefix is the key prefix under which all objects live, without
	// leading or trailing slash ("" for the bucket's root).
	Prefix string
	// Endpoint is host[:port] of an S3-compatible store; empty means AWS
	// (s3.amazonaws.com, or the regional endpoint once Region is known). A
	// URL with scheme http:// or https:// is accepted and sets Insecure.
	Endpoint string
	// Region is the bucket's region; empty means discover it (AWS) or
	// "us-east-1" (most S3-compatible stores accept any region).
	Region string
	// PathStyle forces path-style requests (endpoint/bucket/key), which most
	// self-hosted stores need; otherwise the client picks (virtual-host
	// style for AWS).
	PathStyle bool
	// Insecure talks plain HTTP instead of HTTPS.
	Insecure bool

	// AccessKeyID and SecretAccessKey are static credentials; leave both
	// empty to use the default credential chain (see the package doc).
	AccessKeyID     string
	SecretAccessKey Secret
	// SessionToken goes with temporary static credentials.
	SessionToken Secret

	// PartSize is the size of each part of a multipart upload, and the
	// object size above which Save uses multipart (default 16 MiB,
	// minimum 5 MiB). Parts are read straight from the caller's
	// io.ReaderAt, so memory does not grow with it.
	PartSize int64
	// Concurrency is how many parts of one object upload at once
	// (default 4).
	Concurrency int
	// ClientRetries is how many attempts minio-go itself makes per HTTP
	// request (default 1: retry policy belongs to package retry).
	ClientRetries int
	// SlowDownDelay is the delay reported through storage.RetryAfter after a
	// SlowDown or 429 response without a Retry-After header (default 1s).
	SlowDownDelay time.Duration
	// Transport replaces the HTTP transport (custom CA, proxy, tests).
	Transport http.RoundTripper

	// Purge makes Remove delete every version of the object in a
	// versioned bucket (as far as Object Lock allows). Off by default:
	// Remove then writes a delete marker (DeleteObject without a version
	// id), so bucket versioning can undo a mistaken or malicious removal
	// until the bucket's lifecycle rules expire the old versions. In an
	// unversioned bucket Remove deletes the object either way. The
	// repository URL parameter purge=true sets it.
	Purge bool
}

// Backend stores objects in an S3 bucket.
type Backend struct {
	client    *minio.Client
	core      minio.Core
	transport http.RoundTripper
	bucket    string
	prefix    string // "" or "some/prefix/" (with the trailing slash)
	endpoint  string // host[:port], for messages
	location  string
	partSize  int64
	threads   int
	slowDown  time.Duration
	versioned bool
	purge     bool
}

var _ storage.Backend = (*Backend)(nil)

// Open connects to the bucket described by cfg and checks that it exists and
// can be listed with the credentials given. A missing bucket, unknown access
// key, wrong secret or denied access is a storage.Permanent error saying what
// to fix; an unreachable endpoint is a transient error naming it.
func Open(ctx context.Context, cfg Config) (*Backend, error) {
	if cfg.Bucket == "" {
		return nil, storage.Permanent(errors.New("open s3 repository: no bucket configured"))
	}
	if err := s3utils.CheckValidBucketName(cfg.Bucket); err != nil {
		return nil, storage.Permanent(fmt.Errorf("open s3 repository: bucket %q: %w", cfg.Bucket, err))
	}
	endpoint, insecure, err := parseEndpoint(cfg.Endpoint)
	if err != nil {
		return nil, storage.Permanent(fmt.Errorf("open s3 repository: %w", err))
	}
	insecure = insecure || cfg.Insecure
	if (cfg.AccessKeyID == "") != (cfg.SecretAccessKey == "") {
		return nil, storage.Permanent(errors.New("open s3 repository: set both the access key id and the secret access key, or neither to use the default credential chain"))
	}
	partSize := cfg.PartSize
	if partSize == 0 {
		partSize = DefaultPartSize
	}
	if partSize < MinPartSize {
		return nil, storage.Permanent(fmt.Errorf("open s3 repository: part size %d is below S3's minimum of %d bytes", partSize, MinPartSize))
	}
	threads := cfg.Concurrency
	if threads <= 0 {
		threads = DefaultConcurrency
	}
	retries := cfg.ClientRetries
	if retries <= 0 {
		retries = 1
	}
	slowDown := cfg.SlowDownDelay
	if slowDown <= 0 {
		slowDown = DefaultSlowDownDelay
	}

	base := cfg.Transport
	if base == nil {
		t, err := minio.DefaultTransport(!insecure)
		if err != nil {
			return nil, fmt.Errorf("open s3 repository: %w", err)
		}
		base = t
	}
	transport := &retryAfterTransport{base: base}

	var creds *credentials.Credentials
	if cfg.AccessKeyID != "" {
		creds = credentials.NewStaticV4(cfg.AccessKeyID, cfg.SecretAccessKey.Reveal(), cfg.SessionToken.Reveal())
	} else {
		creds = credentials.NewChainCredentials([]credentials.Provider{
			&credentials.EnvAWS{},
			&credentials.FileAWSCredentials{},
			// IAM covers web identity (AWS_WEB_IDENTITY_TOKEN_FILE, IRSA),
			// the container endpoint and the EC2 metadata service.
			&credentials.IAM{Client: &http.Client{Transport: base}},
		})
	}

	lookup := minio.BucketLookupAuto
	if cfg.PathStyle {
		lookup = minio.BucketLookupPath
	}
	host := endpoint
	if host == "" {
		host = "s3.amazonaws.com"
	}
	client, err := minio.New(host, &minio.Options{
		Creds:        creds,
		Secure:       !insecure,
		Region:       cfg.Region,
		BucketLookup: lookup,
		Transport:    transport,
		MaxRetries:   retries,
	})
	if err != nil {
		return nil, storage.Permanent(fmt.Errorf("open s3 repository: endpoint %s: %w", host, err))
	}

	prefix := strings.Trim(cfg.Prefix, "/")
	loc := "s3://"
	if endpoint != "" {
		loc += endpoint + "/"
	}
	loc += cfg.Bucket
	if prefix != "" {
		loc += "/" + prefix
		prefix += "/"
	}
	b := &Backend{
		client:    client,
		core:      minio.Core{Client: client},
		transport: transport,
		bucket:    cfg.Bucket,
		prefix:    prefix,
		endpoint:  host,
		location:  loc,
		partSize:  partSize,
		threads:   threads,
		slowDown:  slowDown,
		purge:     cfg.Purge,
	}
	if err := b.checkBucket(ctx); err != nil {
		return nil, err
	}
	return b, nil
}

// parseEndpoint accepts host[:port] or an http(s) URL and returns host[:port]
// and whether the URL asked for plain HTTP.
func parseEndpoint(ep string) (host string, insecure bool, err error) {
	if !strings.Contains(ep, "://") {
		if strings.ContainsAny(ep, "/?#") {
			return "", false, fmt.Errorf("endpoint %q: want host[:port] or an http(s) URL without a path", ep)
		}
		return ep, false, nil
	}
	u, err := url.Parse(ep)
	if err != nil {
		return "", false, fmt.Errorf("endpoint %q: %w", ep, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", false, fmt.Errorf("endpoint %q: scheme must be http or https", ep)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return "", false, fmt.Errorf("endpoint %q: want a URL without a path, query or user", u.Redacted())
	}
	return u.Host, u.Scheme == "http", nil
}

// checkBucket lists at most one key under the prefix: that proves the bucket
// exists and that the credentials are valid and allowed to list it.
func (b *Backend) checkBucket(ctx context.Context) error {
	ra := &retryAfterHolder{}
	lctx, cancel := context.WithCancel(withRetryAfterHolder(ctx, ra))
	defer cancel()
	ch := b.client.ListObjects(lctx, b.bucket, minio.ListObjectsOptions{Prefix: b.prefix, MaxKeys: 1, Recursive: true})
	var err error
	for obj := range ch {
		err = obj.Err
		break
	}
	cancel()
	for range ch {
	}
	if err != nil {
		return b.mapErr(ctx, "open", "", err, ra)
	}
	// A versioned bucket keeps old versions on delete; Remove with Purge
	// must then delete every version. Stores or policies that refuse the
	// query are treated as unversioned.
	if vc, err := b.client.GetBucketVersioning(ctx, b.bucket); err == nil && (vc.Enabled() || vc.Suspended()) {
		b.versioned = true
	}
	return nil
}

// key maps an object name onto the bucket's key space.
func (b *Backend) key(name string) (string, error) {
	if name == "" || strings.HasPrefix(name, "/") || path.Clean(name) != name || strings.Contains(name, "\\") {
		return "", storage.Permanent(fmt.Errorf("invalid object name %q", name))
	}
	return b.prefix + name, nil
}

// Location implements storage.Backend.
func (b *Backend) Location() string { return b.location }

// Save implements storage.Backend. Objects larger than the part size go up as
// a multipart upload, which S3 makes visible only on completion and which is
// aborted on failure.
func (b *Backend) Save(ctx context.Context, name string, r io.ReaderAt, size int64) error {
	key, err := b.key(name)
	if err != nil {
		return err
	}
	if size < 0 {
		return storage.Permanent(fmt.Errorf("save %s: negative size %d", name, size))
	}
	ra := &retryAfterHolder{}
	rctx := withRetryAfterHolder(ctx, ra)
	_, err = b.client.PutObject(rctx, b.bucket, key, io.NewSectionReader(r, 0, size), size, minio.PutObjectOptions{
		ContentType: "application/octet-stream",
		PartSize:    uint64(b.partSize),
		NumThreads:  uint(b.threads),
	})
	if err != nil {
		return b.mapErr(ctx, "save", name, err, ra)
	}
	return nil
}

// maxSinglePut is the largest object S3 takes in one PUT.
const maxSinglePut = 5 << 30

var _ storage.Creator = (*Backend)(nil)

// Create implements storage.Creator with a single PUT carrying
// If-None-Match: *, which S3 (since 2024) and MinIO answer with 412
// Precondition Failed when the key exists; in a versioned bucket a key
// whose latest version is a delete marker counts as free. Concurrent
// conditional PUTs of one key may get 409 ConditionalRequestConflict,
// which is transient: the retry then gets 412 or succeeds. A store that
// ignores the header would overwrite; the suite checks MinIO honours it.
// Objects above 5 GiB (the single-PUT limit) cannot be created
// conditionally.
func (b *Backend) Create(ctx context.Context, name string, r io.ReaderAt, size int64) error {
	key, err := b.key(name)
	if err != nil {
		return err
	}
	if size < 0 || size > maxSinglePut {
		return storage.Permanent(fmt.Errorf("create %s: size %d is outside the 0 to 5 GiB a conditional single PUT takes", name, size))
	}
	opts := minio.PutObjectOptions{ContentType: "application/octet-stream"}
	opts.SetMatchETagExcept("*")
	ra := &retryAfterHolder{}
	_, err = b.core.PutObject(withRetryAfterHolder(ctx, ra), b.bucket, key, io.NewSectionReader(r, 0, size), size, "", "", opts)
	if err == nil {
		return nil
	}
	if ctx.Err() == nil {
		switch resp := minio.ToErrorResponse(err); {
		case resp.Code == "PreconditionFailed" || resp.StatusCode == http.StatusPreconditionFailed:
			return fmt.Errorf("create %s: %w", name, storage.ErrExists)
		case resp.Code == "ConditionalRequestConflict" || resp.StatusCode == http.StatusConflict:
			return fmt.Errorf("create %s: S3 endpoint %s saw a concurrent conditional write (%s); retry: %w", name, b.endpoint, resp.Code, err)
		}
	}
	return b.mapErr(ctx, "create", name, err, ra)
}

// Load implements storage.Backend.
func (b *Backend) Load(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	key, err := b.key(name)
	if err != nil {
		return nil, err
	}
	if offset < 0 || length < 0 {
		return nil, storage.Permanent(fmt.Errorf("load %s: negative offset or length", name))
	}
	opts := minio.GetObjectOptions{}
	if offset > 0 || length > 0 {
		end := int64(0) // to the end
		if length > 0 {
			end = offset + length - 1
		}
		if err := opts.SetRange(offset, end); err != nil {
			return nil, storage.Permanent(fmt.Errorf("load %s: %w", name, err))
		}
	}
	ra := &retryAfterHolder{}
	body, info, header, err := b.core.GetObject(withRetryAfterHolder(ctx, ra), b.bucket, key, opts)
	if err != nil {
		return nil, b.mapErr(ctx, "load", name, err, ra)
	}
	size := int64(-1)
	if cr := header.Get("Content-Range"); cr != "" {
		// "bytes 0-99/1000": the total follows the slash ("*" if unknown).
		if i := strings.LastIndexByte(cr, '/'); i >= 0 {
			if n, err := strconv.ParseInt(cr[i+1:], 10, 64); err == nil {
				size = n
			}
		}
	} else if offset == 0 && length == 0 {
		size = info.Size
	}
	return &bodyReader{rc: body, b: b, ctx: ctx, name: name, size: size}, nil
}

// bodyReader names the object and the endpoint in mid-stream read errors,
// and knows the whole object's size (retry.ObjectSizer).
type bodyReader struct {
	rc   io.ReadCloser
	b    *Backend
	ctx  context.Context
	name string
	size int64
}

// ObjectSize returns the size of the whole object, or -1 if unknown.
func (r *bodyReader) ObjectSize() int64 { return r.size }

func (r *bodyReader) Read(p []byte) (int, error) {
	n, err := r.rc.Read(p)
	if err != nil && err != io.EOF {
		err = r.b.mapErr(r.ctx, "read", r.name, err, nil)
	}
	return n, err
}

func (r *bodyReader) Close() error { return r.rc.Close() }

// Stat implements storage.Backend.
func (b *Backend) Stat(ctx context.Context, name string) (storage.FileInfo, error) {
	key, err := b.key(name)
	if err != nil {
		return storage.FileInfo{}, err
	}
	ra := &retryAfterHolder{}
	info, err := b.client.StatObject(withRetryAfterHolder(ctx, ra), b.bucket, key, minio.StatObjectOptions{})
	if err != nil {
		return storage.FileInfo{}, b.mapErr(ctx, "stat", name, err, ra)
	}
	return storage.FileInfo{Name: name, Size: info.Size, ModTime: info.LastModified}, nil
}

// List implements storage.Backend.
func (b *Backend) List(ctx context.Context, prefix string, fn func(storage.FileInfo) error) error {
	ra := &retryAfterHolder{}
	lctx, cancel := context.WithCancel(withRetryAfterHolder(ctx, ra))
	defer cancel()
	ch := b.client.ListObjects(lctx, b.bucket, minio.ListObjectsOptions{Prefix: b.prefix + prefix, Recursive: true})
	drain := func() {
		cancel()
		for range ch {
		}
	}
	for obj := range ch {
		if obj.Err != nil {
			drain()
			return b.mapErr(ctx, "list", prefix, obj.Err, ra)
		}
		name, ok := strings.CutPrefix(obj.Key, b.prefix)
		if !ok || name == "" || strings.HasSuffix(name, "/") {
			continue // directory markers made by other tools
		}
		if err := fn(storage.FileInfo{Name: name, Size: obj.Size, ModTime: obj.LastModified}); err != nil {
			drain()
			return err
		}
	}
	return ctx.Err()
}

// Remove implements storage.Backend. It deletes the object's key without a
// version id: in a versioned bucket that writes a delete marker and keeps
// every version, so an operator can undo the removal by deleting the marker
// (or restoring a version). With Config.Purge it deletes every version
// instead, so removed data is really gone (Object Lock permitting).
func (b *Backend) Remove(ctx context.Context, name string) error {
	key, err := b.key(name)
	if err != nil {
		return err
	}
	ra := &retryAfterHolder{}
	rctx := withRetryAfterHolder(ctx, ra)
	if b.versioned && b.purge {
		return b.removeVersions(ctx, name, key)
	}
	// DeleteObject succeeds on missing keys; the contract wants ErrNotFound.
	if _, err := b.client.StatObject(rctx, b.bucket, key, minio.StatObjectOptions{}); err != nil {
		return b.mapErr(ctx, "remove", name, err, ra)
	}
	if err := b.client.RemoveObject(rctx, b.bucket, key, minio.RemoveObjectOptions{}); err != nil {
		return b.mapErr(ctx, "remove", name, err, ra)
	}
	return nil
}

func (b *Backend) removeVersions(ctx context.Context, name, key string) error {
	ra := &retryAfterHolder{}
	rctx := withRetryAfterHolder(ctx, ra)
	lctx, cancel := context.WithCancel(rctx)
	defer cancel()
	var versions []minio.ObjectInfo
	live := false
	for obj := range b.client.ListObjects(lctx, b.bucket, minio.ListObjectsOptions{Prefix: key, WithVersions: true}) {
		if obj.Err != nil {
			cancel()
			return b.mapErr(ctx, "remove", name, obj.Err, ra)
		}
		if obj.Key != key {
			continue
		}
		versions = append(versions, obj)
		if obj.IsLatest && !obj.IsDeleteMarker {
			live = true
		}
	}
	if !live {
		return storage.NotFound(name)
	}
	for _, v := range versions {
		if err := b.client.RemoveObject(rctx, b.bucket, key, minio.RemoveObjectOptions{VersionID: v.VersionID}); err != nil {
			return b.mapErr(ctx, "remove", name, err, ra)
		}
	}
	return nil
}

// Close implements storage.Backend.
func (b *Backend) Close() error {
	if t, ok := b.transport.(interface{ CloseIdleConnections() }); ok {
		t.CloseIdleConnections()
	}
	return nil
}
