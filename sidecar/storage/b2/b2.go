package b2

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/amber-backup/amber/plugins/api/clock"
	"hash"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/Backblaze/blazer/base"

	"github.com/amber-backup/amber/sidecar/storage"
)

// Defaults for Config fields left zero.
const (
	DefaultLargeFileThreshold = 100_000_000 // B2's recommended part size
	DefaultPartSize           = 100_000_000
	DefaultConcurrency        = 4
	// MinPartSize is B2's absoluteMinimumPartSize: every part of a large file
	// but the last must be at least this big.
	MinPartSize = 5_000_000
	maxParts    = 10_000
	contentType = "application/octet-stream"
	listBatch   = 1000
)

// Config says which bucket and prefix to use and how to reach them.
type Config struct {
	Bucket string // required
	// Prefix, if set, is prepended (with a "/") to every object name, so that
	// several repositories can share a bucket.
	Prefix string
	KeyID  string // application key ID (B2_APPLICATION_KEY_ID); not secret
	Key    Secret // application key (B2_APPLICATION_KEY)

	// APIBase replaces https://api.backblazeb2.com, for tests.
	APIBase string
	// Transport, if set, carries the HTTP requests (for tests and proxies).
	Transport http.RoundTripper

	// LargeFileThreshold: objects of this size or more go through B2's
	// large-file API in parts of PartSize bytes, uploaded Concurrency at a
	// time. Defaults: 100 MB, 100 MB, 4. PartSize must be at least MinPartSize.
	LargeFileThreshold int64
	PartSize           int64
	Concurrency        int

	// LockDays, when positive, puts every uploaded object (except the
	// exempt names below) under Object Lock retention for that many days
	// in mode LockMode (default Governance). The bucket must have Object
	// Lock enabled and the key the writeFileRetentions capability.
	//
	// What Object Lock protects: a locked version cannot be deleted (nor
	// its retention shortened, in governance mode without
	// bypassGovernance) before its retain-until date, so the bytes of every
	// backup stay in the bucket for LockDays whatever a key holder does.
	// What it does not: B2 versions are per name, and anyone with the key
	// can still upload a newer version of a locked name or hide it
	// (b2_hide_file, which is what Remove does by default). Amber reads
	// only the latest version of a name, so such a change takes effect for
	// amber at once; an operator undoes it by deleting the newer version or
	// the hide marker (b2_delete_file_version, which Object Lock does not
	// prevent on them), which brings the locked version back.
	LockDays int
	LockMode RetentionMode
	// LockExemptPrefixes and LockExemptSuffixes name objects that get no
	// retention even with LockDays: objects amber itself removes routinely,
	// which a lock would make undeletable for LockDays (a prune, even a dry
	// run, would leave its lock behind). Nil means the defaults,
	// DefaultLockExemptPrefixes and DefaultLockExemptSuffixes; an empty,
	// non-nil slice exempts nothing. Names are object names, without Prefix.
	LockExemptPrefixes []string
	LockExemptSuffixes []string

	// Purge makes Remove delete every version of the name (hide markers
	// and unfinished large files included), as far as Object Lock allows.
	// Off by default: Remove then hides the name (b2_hide_file), and every
	// version stays until the bucket's lifecycle rules delete it, so a
	// mistaken or malicious removal can be undone. The repository URL
	// parameter purge=true sets it.
	Purge bool

	// Clock is what retention dates are computed from; clock.Real if nil.
	Clock clock.Clock
}

// Default exemptions from Object Lock retention (see Config.LockExemptPrefixes):
// prune and writer locks, and log segments stored before they were complete,
// which the complete segment replaces.
var (
	DefaultLockExemptPrefixes = []string{"locks/", "writers/"}
	DefaultLockExemptSuffixes = []string{".partial"}
)

// Backend stores objects in a B2 bucket.
type Backend struct {
	cfg   Config
	root  string // Prefix + "/" or ""
	opts  []base.AuthOption
	owned *http.Transport // closed by Close when we made it

	mu   sync.Mutex
	sess *session
}

var _ storage.Backend = (*Backend)(nil)

// session is one account authorisation and what hangs off it.
type session struct {
	auth   *base.B2
	bucket *base.Bucket

	mu   sync.Mutex
	urls []*base.URL // idle upload URLs; B2 wants one upload at a time per URL
}

// Open authorises the key and finds the bucket. Wrong credentials and a
// bucket the key cannot see are permanent errors whose message says what to
// check.
func Open(ctx context.Context, cfg Config) (*Backend, error) {
	if cfg.Bucket == "" {
		return nil, storage.Permanent(errors.New("open B2 backend: no bucket given; set the repository's B2 bucket name"))
	}
	if cfg.KeyID == "" || cfg.Key == "" {
		return nil, storage.Permanent(fmt.Errorf("open b2://%s: no application key given; set B2_APPLICATION_KEY_ID and B2_APPLICATION_KEY", cfg.Bucket))
	}
	if cfg.LargeFileThreshold == 0 {
		cfg.LargeFileThreshold = DefaultLargeFileThreshold
	}
	if cfg.PartSize == 0 {
		cfg.PartSize = DefaultPartSize
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.PartSize < MinPartSize {
		return nil, storage.Permanent(fmt.Errorf("open b2://%s: part size %d is below B2's minimum of %d bytes", cfg.Bucket, cfg.PartSize, MinPartSize))
	}
	if cfg.LargeFileThreshold < 1 || cfg.LargeFileThreshold > 5_000_000_000 {
		return nil, storage.Permanent(fmt.Errorf("open b2://%s: large-file threshold %d must be between 1 byte and 5 GB", cfg.Bucket, cfg.LargeFileThreshold))
	}
	if cfg.LockDays < 0 {
		return nil, storage.Permanent(fmt.Errorf("open b2://%s: negative Object Lock days %d", cfg.Bucket, cfg.LockDays))
	}
	if cfg.LockMode == "" {
		cfg.LockMode = Governance
	}
	if cfg.LockMode != Governance && cfg.LockMode != Compliance {
		return nil, storage.Permanent(fmt.Errorf("open b2://%s: Object Lock mode %q is neither governance nor compliance", cfg.Bucket, cfg.LockMode))
	}
	cfg.Clock = clock.Or(cfg.Clock)
	if cfg.LockExemptPrefixes == nil {
		cfg.LockExemptPrefixes = DefaultLockExemptPrefixes
	}
	if cfg.LockExemptSuffixes == nil {
		cfg.LockExemptSuffixes = DefaultLockExemptSuffixes
	}
	b := &Backend{cfg: cfg}
	if p := strings.Trim(cfg.Prefix, "/"); p != "" {
		b.root = p + "/"
	}
	rt := cfg.Transport
	if rt == nil {
		b.owned = http.DefaultTransport.(*http.Transport).Clone()
		rt = b.owned
	}
	b.opts = []base.AuthOption{base.Transport(&lockTransport{next: rt}), base.UserAgent("amber")}
	if cfg.APIBase != "" {
		b.opts = append(b.opts, base.SetAPIBase(strings.TrimRight(cfg.APIBase, "/")))
	}
	if _, err := b.session(ctx); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// Location implements storage.Backend.
func (b *Backend) Location() string {
	return "b2://" + b.cfg.Bucket + "/" + strings.TrimSuffix(b.root, "/")
}

// Close implements storage.Backend.
func (b *Backend) Close() error {
	if b.owned != nil {
		b.owned.CloseIdleConnections()
	}
	return nil
}

func (b *Backend) where(name string) string { return "b2://" + b.cfg.Bucket + "/" + b.root + name }

// session returns the current authorisation, making one if there is none.
func (b *Backend) session(ctx context.Context) (*session, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.sess != nil {
		return b.sess, nil
	}
	auth, err := base.AuthorizeAccount(ctx, b.cfg.KeyID, string(b.cfg.Key), b.opts...)
	if err != nil {
		return nil, b.authErr(ctx, err)
	}
	buckets, err := auth.ListBuckets(ctx, b.cfg.Bucket)
	if err != nil {
		return nil, b.mapErr(ctx, "find bucket", "b2://"+b.cfg.Bucket, err)
	}
	for _, bk := range buckets {
		if bk.Name == b.cfg.Bucket {
			b.sess = &session{auth: auth, bucket: bk}
			return b.sess, nil
		}
	}
	return nil, storage.Permanent(b.noBucket())
}

func (b *Backend) noBucket() error {
	return fmt.Errorf("B2 bucket %s does not exist or the key cannot see it; check the bucket name, and that B2_APPLICATION_KEY_ID (%s) names a key with access to that bucket",
		b.cfg.Bucket, b.cfg.KeyID)
}

// drop forgets s so that the next call authorises again.
func (b *Backend) drop(s *session) {
	b.mu.Lock()
	if b.sess == s {
		b.sess = nil
	}
	b.mu.Unlock()
}

// do runs fn with the current session. If B2 says the account token expired
// or is no longer valid, it authorises again and runs fn once more; that is
// credential refresh, not retry policy, which belongs to storage/retry.
func (b *Backend) do(ctx context.Context, fn func(*session) error) error {
	s, err := b.session(ctx)
	if err != nil {
		return err
	}
	err = fn(s)
	if !tokenRejected(err) {
		return err
	}
	b.drop(s)
	if s, err = b.session(ctx); err != nil {
		return err
	}
	return fn(s)
}

func (b *Backend) full(name string) (string, error) {
	if name == "" || strings.HasPrefix(name, "/") || strings.HasSuffix(name, "/") || strings.Contains(name, "//") {
		return "", storage.Permanent(fmt.Errorf("invalid object name %q", name))
	}
	return b.root + name, nil
}

// Save implements storage.Backend.
func (b *Backend) Save(ctx context.Context, name string, r io.ReaderAt, size int64) error {
	_, err := b.save(ctx, "save", name, r, size)
	return err
}

// lockExempt reports whether name gets no Object Lock retention.
func (b *Backend) lockExempt(name string) bool {
	for _, p := range b.cfg.LockExemptPrefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	for _, sfx := range b.cfg.LockExemptSuffixes {
		if strings.HasSuffix(name, sfx) {
			return true
		}
	}
	return false
}

// save uploads a new version of name and returns its file ID.
func (b *Backend) save(ctx context.Context, op, name string, r io.ReaderAt, size int64) (string, error) {
	full, err := b.full(name)
	if err != nil {
		return "", err
	}
	if size < 0 {
		return "", storage.Permanent(fmt.Errorf("%s %s: negative size %d", op, b.where(name), size))
	}
	if b.cfg.LockDays > 0 && !b.lockExempt(name) {
		ctx = withRetention(ctx, retention{mode: b.cfg.LockMode, until: b.cfg.Clock.Now().Add(time.Duration(b.cfg.LockDays) * 24 * time.Hour)})
	}
	if size >= b.cfg.LargeFileThreshold {
		return b.saveLarge(ctx, op, name, full, r, size)
	}
	sum, err := hashSection(r, 0, size, nil)
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", op, b.where(name), err)
	}
	var id string
	err = b.do(ctx, func(s *session) error {
		u, err := s.uploadURL(ctx)
		if err != nil {
			return err
		}
		f, err := u.UploadFile(ctx, io.NewSectionReader(r, 0, size), int(size), full, contentType, sum, nil)
		if err != nil {
			return err // a failed URL is not reused: B2 wants a new one
		}
		id = f.ID
		s.putURL(u)
		return nil
	})
	return id, b.mapErr(ctx, op, b.where(name), err)
}

func (s *session) uploadURL(ctx context.Context) (*base.URL, error) {
	s.mu.Lock()
	if n := len(s.urls); n > 0 {
		u := s.urls[n-1]
		s.urls = s.urls[:n-1]
		s.mu.Unlock()
		return u, nil
	}
	s.mu.Unlock()
	return s.bucket.GetUploadURL(ctx)
}

func (s *session) putURL(u *base.URL) {
	s.mu.Lock()
	if len(s.urls) < 16 {
		s.urls = append(s.urls, u)
	}
	s.mu.Unlock()
}

// hashSection returns the hex SHA1 of n bytes of r from off, also feeding
// them to also if it is not nil. A source shorter than n is an error.
func hashSection(r io.ReaderAt, off, n int64, also hash.Hash) (string, error) {
	h := sha1.New()
	w := io.Writer(h)
	if also != nil {
		w = io.MultiWriter(h, also)
	}
	got, err := io.Copy(w, io.NewSectionReader(r, off, n))
	if err != nil {
		return "", fmt.Errorf("read source: %w", err)
	}
	if got != n {
		return "", fmt.Errorf("short source: %d of %d bytes", off+got, off+n)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

type partJob struct {
	num       int
	off, size int64
	sha1      string
}

// saveLarge uploads through b2_start_large_file, parallel b2_upload_part and
// b2_finish_large_file. The object is visible only once finished; on failure
// the unfinished file is cancelled so it leaves nothing behind.
func (b *Backend) saveLarge(ctx context.Context, op, name, full string, r io.ReaderAt, size int64) (string, error) {
	partSize := b.cfg.PartSize
	if (size+partSize-1)/partSize > maxParts {
		partSize = (size + maxParts - 1) / maxParts
	}
	// One sequential pass hashes every part and the whole object.
	whole := sha1.New()
	var jobs []partJob
	for off, num := int64(0), 1; off < size || num == 1; off, num = off+partSize, num+1 {
		n := min(partSize, size-off)
		sum, err := hashSection(r, off, n, whole)
		if err != nil {
			return "", fmt.Errorf("%s %s: %w", op, b.where(name), err)
		}
		jobs = append(jobs, partJob{num: num, off: off, size: n, sha1: sum})
	}
	info := map[string]string{"large_file_sha1": hex.EncodeToString(whole.Sum(nil))}

	var id string
	err := b.do(ctx, func(s *session) error {
		lf, err := s.bucket.StartLargeFile(ctx, full, contentType, info)
		if err != nil {
			return err
		}
		if err := b.uploadParts(ctx, lf, r, jobs); err != nil {
			cancelLarge(ctx, lf)
			return err
		}
		f, err := lf.FinishLargeFile(ctx)
		if err != nil {
			cancelLarge(ctx, lf)
			return err
		}
		id = f.ID
		return nil
	})
	return id, b.mapErr(ctx, op, b.where(name), err)
}

// cancelLarge drops an unfinished large file, even if ctx is already done.
// Its error is ignored: an unfinished file is invisible to Load, Stat and
// List, and Remove of the name deletes it too.
func cancelLarge(ctx context.Context, lf *base.LargeFile) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	lf.CancelLargeFile(cctx)
}

// uploadParts sends the parts with up to Concurrency uploads in flight, each
// worker on its own part upload URL, and returns the first error.
func (b *Backend) uploadParts(ctx context.Context, lf *base.LargeFile, r io.ReaderAt, jobs []partJob) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		once     sync.Once
		firstErr error
		wg       sync.WaitGroup
	)
	fail := func(err error) {
		once.Do(func() { firstErr = err; cancel() })
	}
	queue := make(chan partJob)
	workers := min(b.cfg.Concurrency, len(jobs))
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var fc *base.FileChunk
			for j := range queue {
				if ctx.Err() != nil {
					continue
				}
				if fc == nil {
					var err error
					if fc, err = lf.GetUploadPartURL(ctx); err != nil {
						fail(err)
						continue
					}
				}
				if _, err := fc.UploadPart(ctx, io.NewSectionReader(r, j.off, j.size), j.sha1, int(j.size), j.num); err != nil {
					fail(fmt.Errorf("part %d: %w", j.num, err))
					fc = nil
				}
			}
		}()
	}
feed:
	for _, j := range jobs {
		select {
		case queue <- j:
		case <-ctx.Done():
			break feed
		}
	}
	close(queue)
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}

// Load implements storage.Backend.
func (b *Backend) Load(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	full, err := b.full(name)
	if err != nil {
		return nil, err
	}
	if offset < 0 || length < 0 {
		return nil, storage.Permanent(fmt.Errorf("load %s: negative offset or length", b.where(name)))
	}
	var fr *base.FileReader
	err = b.do(ctx, func(s *session) error {
		var err error
		fr, err = s.bucket.DownloadFileByName(ctx, full, offset, length, false)
		return err
	})
	if err != nil {
		return nil, b.mapErr(ctx, "load", b.where(name), err)
	}
	if offset == 0 && length == 0 && len(fr.SHA1) == 40 {
		// A whole object can be checked against the SHA1 that B2 stored
		// (for large files, the large_file_sha1 given at start).
		return &verifyReader{rc: fr, h: sha1.New(), want: strings.ToLower(fr.SHA1), where: b.where(name)}, nil
	}
	return fr, nil
}

// verifyReader checks the SHA1 of a whole download when it reaches EOF.
type verifyReader struct {
	rc    io.ReadCloser
	h     hash.Hash
	want  string
	where string
}

func (v *verifyReader) Read(p []byte) (int, error) {
	n, err := v.rc.Read(p)
	v.h.Write(p[:n])
	if err == io.EOF {
		if got := hex.EncodeToString(v.h.Sum(nil)); got != v.want {
			return n, fmt.Errorf("load %s: downloaded data has SHA1 %s, B2 stored %s (corrupted in transit?)", v.where, got, v.want)
		}
	}
	return n, err
}

func (v *verifyReader) Close() error { return v.rc.Close() }

// Stat implements storage.Backend.
func (b *Backend) Stat(ctx context.Context, name string) (storage.FileInfo, error) {
	full, err := b.full(name)
	if err != nil {
		return storage.FileInfo{}, err
	}
	var files []*base.File
	err = b.do(ctx, func(s *session) error {
		var err error
		files, _, err = s.bucket.ListFileNames(ctx, 1, full, full, "")
		return err
	})
	if err != nil {
		return storage.FileInfo{}, b.mapErr(ctx, "stat", b.where(name), err)
	}
	if len(files) == 0 || files[0].Name != full || files[0].Status != "upload" {
		return storage.FileInfo{}, fmt.Errorf("stat %s: %w", b.where(name), storage.ErrNotFound)
	}
	return storage.FileInfo{Name: name, Size: files[0].Size, ModTime: files[0].Timestamp}, nil
}

// List implements storage.Backend. B2's b2_list_file_names gives only the
// latest version of each name and leaves out hidden names and unfinished
// large files.
func (b *Backend) List(ctx context.Context, prefix string, fn func(storage.FileInfo) error) error {
	full := b.root + prefix
	next := ""
	for {
		var files []*base.File
		err := b.do(ctx, func(s *session) error {
			var err error
			files, next, err = s.bucket.ListFileNames(ctx, listBatch, next, full, "")
			return err
		})
		if err != nil {
			return b.mapErr(ctx, "list", b.where(prefix)+"*", err)
		}
		for _, f := range files {
			if f.Status != "upload" || !strings.HasPrefix(f.Name, full) {
				continue
			}
			if err := fn(storage.FileInfo{Name: strings.TrimPrefix(f.Name, b.root), Size: f.Size, ModTime: f.Timestamp}); err != nil {
				return err
			}
		}
		if next == "" || len(files) == 0 {
			return nil
		}
	}
}

// versions lists every version of the name full (hide markers and
// unfinished large files included), newest first, as B2 orders them.
func (s *session) versions(ctx context.Context, full string) ([]*base.File, error) {
	var versions []*base.File
	startName, startID := full, ""
	for {
		files, nextName, nextID, err := s.bucket.ListFileVersions(ctx, listBatch, startName, startID, full, "")
		if err != nil {
			return nil, err
		}
		done := nextName == ""
		for _, f := range files {
			if f.Name != full {
				done = true
				break
			}
			versions = append(versions, f)
		}
		if done || len(files) == 0 {
			return versions, nil
		}
		startName, startID = nextName, nextID
	}
}

// live reports whether the newest finished version among versions is an
// upload, i.e. the name is visible.
func live(versions []*base.File) bool {
	for _, v := range versions {
		switch v.Status {
		case "upload":
			return true
		case "hide":
			return false
		}
	}
	return false
}

// Remove implements storage.Backend. By default it hides the name
// (b2_hide_file): Load, Stat and List no longer see it, and every version
// stays, so deleting the hide marker undoes the removal; a locked name can
// be hidden too. With Config.Purge it deletes every version of the name,
// hide markers and unfinished large files included, oldest first, so the
// newest content stays readable until the last delete; a version under
// Object Lock stops it with a permanent error. A name that is not visible
// gives ErrNotFound, except that a purge removes whatever versions it
// finds and gives ErrNotFound only when there are none.
func (b *Backend) Remove(ctx context.Context, name string) error {
	full, err := b.full(name)
	if err != nil {
		return err
	}
	err = b.do(ctx, func(s *session) error {
		versions, err := s.versions(ctx, full)
		if err != nil {
			return err
		}
		if !b.cfg.Purge {
			if !live(versions) {
				return storage.ErrNotFound
			}
			_, err := s.bucket.HideFile(ctx, full)
			if ae, ok := b2Error(err); ok && (ae.code == "already_hidden" || ae.code == "no_such_file" || ae.code == "file_not_present") {
				return storage.ErrNotFound // hidden or deleted meanwhile
			}
			return err
		}
		if len(versions) == 0 {
			return storage.ErrNotFound
		}
		for i := len(versions) - 1; i >= 0; i-- {
			v := versions[i]
			err := s.bucket.File(v.ID, v.Name).DeleteFileVersion(ctx)
			if ae, ok := b2Error(err); ok && ae.code == "file_not_present" {
				continue // deleted meanwhile
			}
			if err != nil {
				return &deleteError{id: v.ID, err: err}
			}
		}
		return nil
	})
	if errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("remove %s: %w", b.where(name), storage.ErrNotFound)
	}
	var de *deleteError
	if errors.As(err, &de) {
		if ae, ok := b2Error(de.err); ok && ae.code == "access_denied" {
			return storage.Permanent(fmt.Errorf("remove %s: B2 refused to delete version %s (%s); the object is under Object Lock retention and can be removed only after its retain-until date (or, in governance mode, by a key with bypassGovernance)",
				b.where(name), de.id, ae.msg))
		}
		err = de.err
	}
	return b.mapErr(ctx, "remove", b.where(name), err)
}

var _ storage.Creator = (*Backend)(nil)

// Create implements storage.Creator. B2 has no conditional upload, so
// Create checks, uploads, and checks again:
//
//  1. If the name is visible (its newest version is an upload), ErrExists
//     without uploading.
//  2. Upload a new version, as Save does.
//  3. List the name's versions. If a version older than ours is visible
//     (the newest older one is an upload, not a hide marker), another
//     writer got there first: delete our version and return ErrExists.
//
// Of concurrent Creates the one whose upload B2 ordered first wins: every
// later one sees it in step 3 and withdraws. Residual races: between our
// upload and its withdrawal, readers of the name see our content (the
// newest version); and a withdrawal that fails (the network, or Object Lock
// retention on our version when the name is not exempt) leaves our version
// as the newest, so readers see our content although Create reported
// ErrExists; that error then says so. A Remove (hide) racing with step 3
// can make both the earlier and our version invisible.
func (b *Backend) Create(ctx context.Context, name string, r io.ReaderAt, size int64) error {
	full, err := b.full(name)
	if err != nil {
		return err
	}
	exists := func() error { return fmt.Errorf("create %s: %w", b.where(name), storage.ErrExists) }
	var taken bool
	err = b.do(ctx, func(s *session) error {
		versions, err := s.versions(ctx, full)
		taken = err == nil && live(versions)
		return err
	})
	if err != nil {
		return b.mapErr(ctx, "create", b.where(name), err)
	}
	if taken {
		return exists()
	}
	id, err := b.save(ctx, "create", name, r, size)
	if err != nil {
		return err
	}
	var withdraw error
	err = b.do(ctx, func(s *session) error {
		versions, err := s.versions(ctx, full)
		if err != nil {
			return err
		}
		for i, v := range versions {
			if v.ID != id {
				continue
			}
			if !live(versions[i+1:]) {
				return nil // ours is the oldest visible version: we won
			}
			taken = true
			withdraw = s.bucket.File(id, full).DeleteFileVersion(ctx)
			return nil
		}
		// Our version is gone: someone purged the name meanwhile.
		return storage.Permanent(fmt.Errorf("the version just uploaded (%s) is no longer listed; the name was removed meanwhile", id))
	})
	if err != nil {
		return b.mapErr(ctx, "create", b.where(name), err)
	}
	if !taken {
		return nil
	}
	if withdraw != nil {
		return fmt.Errorf("create %s: %w; and withdrawing this upload (version %s) failed (%v), so it is now the newest version of the name: delete that version",
			b.where(name), storage.ErrExists, id, withdraw)
	}
	return exists()
}

type deleteError struct {
	id  string
	err error
}

func (e *deleteError) Error() string { return e.err.Error() }
func (e *deleteError) Unwrap() error { return e.err }
