package repo

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/amber-backup/amber/plugins/api/clock"
	"log/slog"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/amber-backup/amber/sidecar/repo/chunker"
	"github.com/amber-backup/amber/sidecar/storage"
	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
)

// Version is the repository format version this package reads and writes.
const Version = 1

// Object name prefixes (docs/repository-format.md, "Objects").
const (
	configName    = "config"
	keysDir       = "keys/"
	dataDir       = "data/"
	indexDir      = "index/"
	backupsDir    = "backups/"
	locksDir      = "locks/"
	logDir        = "log/"
	adConfig      = "amber/config"
	adKey         = "amber/key"
	adIndex       = "amber/index"
	adBackup      = "amber/backup"
	adPackHeader  = "amber/pack-header"
	defaultPackMB = 16
)

// ErrWrongPassword means no key slot opens with the given password.
var ErrWrongPassword = errors.New("repository password is wrong: no key slot opens with it; check AMBER_PASSWORD or --password-file")

// ErrNoRepository means the location holds no repository.
var ErrNoRepository = errors.New("no Amber repository here; create one with `amber repo init`")

// ErrExists means init found a repository already there.
var ErrExists = errors.New("a repository already exists here; it was left untouched")

// Config is the repository's encrypted configuration, fixed at init.
type Config struct {
	Version  int       `json:"version"`
	ID       string    `json:"id"`
	Created  time.Time `json:"created"`
	Chunker  Chunker   `json:"chunker"`
	PackSize int       `json:"pack_size"`
}

// Chunker holds the content-defined chunking parameters. The gear table is
// derived from the master key, so chunk boundaries (and sizes) are secret.
type Chunker struct {
	Min int `json:"min"`
	Avg int `json:"avg"`
	Max int `json:"max"`
}

// Repository is an open repository. Its methods are safe for concurrent use.
type Repository struct {
	be      storage.Backend
	key     *MasterKey
	keyName string
	seal    *sealer
	ids     chunkIDer
	gear    *chunker.Table
	cfg     Config
	cache   *Cache
	now     func() time.Time
	opts    Options

	idxMu     sync.Mutex
	idx       *Index // nil until first needed
	idxPruned string // newest locks/pruned- marker seen when idx was loaded
}

// Options tune how a repository is opened.
type Options struct {
	// CacheDir holds the local cache of index files and manifests. Empty
	// means the user's cache directory; "-" disables the cache.
	CacheDir string
	// KDF sets the key-derivation cost for new key slots (zero: DefaultKDF).
	KDF KDFParams
	// Clock replaces the system clock (tests). Only elapsed times and the times
	// recorded in objects come from it: the age of locks and writer
	// markers is judged by the storage server's clock.
	Clock clock.Clock
	// KeySlot, if set, is the only key slot Open tries (its id, with or
	// without "keys/"): opening with a random slot's secret then costs no
	// password stretching at all.
	KeySlot string
	// Logger receives warnings and progress of waits (nil: slog.Default()).
	Logger *slog.Logger
	// LockWait bounds how long a new writer waits for a running prune
	// (zero: DefaultLockWait).
	LockWait time.Duration
	// StaleAfter is how long a writer marker or prune lock may go without
	// a refresh before it is taken for abandoned (zero: DefaultStaleAfter).
	// Writers and prunes of one repository must agree on it; change it in
	// tests only.
	StaleAfter time.Duration
	// Refresh is how often writers and prune refresh their marker or lock
	// (zero: DefaultRefresh).
	Refresh time.Duration
	// Compression is the codec and level of the data this repository's
	// writers store (zero: CompressFastest). Readers need no setting: each
	// blob records its codec.
	Compression Compression
}

// Compression is how a writer compresses backup data: a zstd level, or S2.
type Compression int

const (
	CompressFastest Compression = iota // zstd's fastest (level 1, with a minimum match of 5 in cgo builds: zstd_cgo.go): the default
	CompressDefault                    // zstd's default level (3), as restic's "auto"
	CompressBetter                     // zstd's "better" (about level 7)
	// CompressS2 trades size for speed: S2 (a faster Snappy) at its default
	// level, for users who would pick lz4. Its blobs make index files of
	// version 2 (IndexVersionS2), which older ambers refuse.
	CompressS2
)

// ParseCompression reads a setting by name: fastest, default, better or s2.
func ParseCompression(s string) (Compression, error) {
	switch s {
	case "", "fastest":
		return CompressFastest, nil
	case "default":
		return CompressDefault, nil
	case "better":
		return CompressBetter, nil
	case "s2":
		return CompressS2, nil
	}
	return 0, fmt.Errorf("unknown compression %q: use fastest, default, better or s2", s)
}

// zstdLevel is the compression's zstd level as the zstd format numbers
// them (the C library's and the zstd command's -1, -3, -7).
func (c Compression) zstdLevel() int {
	switch c {
	case CompressDefault:
		return 3
	case CompressBetter:
		return 7
	}
	return 1
}

// blobEncoder compresses data blobs for one writer goroutine: each worker
// has its own (a zstd encoder, or S2's stateless block encoder) and its own
// output buffer, so workers never wait on each other.
type blobEncoder struct {
	codec Codec
	zstd  zstdEncoder // nil for S2
	out   []byte
}

// zstdEncoder compresses one blob at a time into one frame. Two exist:
// the zstd C library's, for levels 1 and 3 where amber is built with cgo
// (1.5 to 2.7 times the bytes per CPU-second of the Go encoder at the same
// level, for about its size, docs/benchmarks.md), and
// github.com/klauspost/compress's otherwise (zstd_cgo.go, zstd_nocgo.go).
// Both write plain RFC 8878 frames that every reader decodes; amber
// decodes with the Go decoder in both builds.
type zstdEncoder interface {
	// encode compresses src into one frame, in dst's storage where it
	// has room (its length is ignored).
	encode(dst, src []byte) []byte
	close()
}

// zstdBound is the largest frame zstd makes of n bytes (the library's
// ZSTD_COMPRESSBOUND): room enough for either encoder to write in place.
func zstdBound(n int) int {
	b := n + n>>8
	if n < 128<<10 {
		b += (128<<10 - n) >> 11
	}
	return b
}

func (c Compression) newEncoder() *blobEncoder {
	if c == CompressS2 {
		return &blobEncoder{codec: CodecS2}
	}
	return &blobEncoder{codec: CodecZstd, zstd: newZstdEncoder(c.zstdLevel())}
}

// encode compresses data into the encoder's buffer, valid until the next call.
func (e *blobEncoder) encode(data []byte) []byte {
	if e.zstd != nil {
		e.out = e.zstd.encode(e.out[:0], data)
		return e.out
	}
	if n := s2.MaxEncodedLen(len(data)); cap(e.out) < n {
		e.out = make([]byte, n)
	}
	e.out = s2.Encode(e.out[:cap(e.out)], data)
	return e.out
}

func (e *blobEncoder) close() {
	if e.zstd != nil {
		e.zstd.close()
	}
}

// Defaults for the Options that govern locks and writer markers.
const (
	DefaultLockWait   = 10 * time.Minute
	DefaultStaleAfter = 10 * time.Minute
	DefaultRefresh    = time.Minute
)

func (o Options) lockWait() time.Duration {
	if o.LockWait > 0 {
		return o.LockWait
	}
	return DefaultLockWait
}

func (o Options) staleAfter() time.Duration {
	if o.StaleAfter > 0 {
		return o.StaleAfter
	}
	return DefaultStaleAfter
}

func (o Options) refresh() time.Duration {
	if o.Refresh > 0 {
		return o.Refresh
	}
	return DefaultRefresh
}

// leaseMargin is how much of StaleAfter a holder keeps in reserve: it stops
// acting on its marker or lock once it has not refreshed it for
// StaleAfter - leaseMargin, so no other client can have judged it stale yet.
func (o Options) leaseMargin() time.Duration { return o.staleAfter() / 5 }

func (o Options) logger() *slog.Logger {
	if o.Logger != nil {
		return o.Logger
	}
	return slog.Default()
}

func (o Options) clock() func() time.Time {
	return clock.Or(o.Clock).Now
}

// Init creates a new repository in be with one key slot for password.
func Init(ctx context.Context, be storage.Backend, password []byte, opts Options) (*Repository, error) {
	if len(password) == 0 {
		return nil, errors.New("an empty password is not allowed; set AMBER_PASSWORD or --password-file")
	}
	if _, err := be.Stat(ctx, configName); err == nil {
		return nil, ErrExists
	} else if !errors.Is(err, storage.ErrNotFound) {
		return nil, fmt.Errorf("check for an existing repository: %w", err)
	}
	key, err := newMasterKey()
	if err != nil {
		return nil, err
	}
	var rid [16]byte
	if _, err := rand.Read(rid[:]); err != nil {
		return nil, err
	}
	now := opts.clock()
	cfg := Config{
		Version:  Version,
		ID:       hex.EncodeToString(rid[:]),
		Created:  now().UTC(),
		Chunker:  Chunker{Min: 64 << 10, Avg: 256 << 10, Max: 2 << 20},
		PackSize: defaultPackMB << 20,
	}
	r, err := newRepository(be, key, cfg, opts)
	if err != nil {
		return nil, err
	}
	// The key slot comes first, the config last: a repository is there
	// only once its config is, and a config is never without a key.
	if r.keyName, err = r.AddKey(ctx, password, opts.KDF); err != nil {
		return nil, err
	}
	plain, _ := json.Marshal(cfg)
	sealed := r.seal.seal(nil, plain, []byte(adConfig))
	if err := be.Save(ctx, configName, bytes.NewReader(sealed), int64(len(sealed))); err != nil {
		return nil, fmt.Errorf("save config: %w", err)
	}
	return r, nil
}

func newRepository(be storage.Backend, key *MasterKey, cfg Config, opts Options) (*Repository, error) {
	s, err := newSealer(key.Encrypt[:])
	if err != nil {
		return nil, err
	}
	r := &Repository{be: be, key: key, seal: s, ids: chunkIDer{key: key.ChunkID}, gear: chunker.NewTable(key.ChunkID[:]),
		cfg: cfg, now: opts.clock(), opts: opts}
	if opts.CacheDir != "-" {
		r.cache = openCache(opts.CacheDir, cfg.ID)
	}
	return r, nil
}

// Open opens the repository in be with password (or the secret of a
// random key slot). Cheap slots are tried first; with Options.KeySlot only
// that slot is.
func Open(ctx context.Context, be storage.Backend, password []byte, opts Options) (*Repository, error) {
	sealedCfg, err := readCapped(ctx, be, configName, maxSmallObject)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, fmt.Errorf("%s: %w", be.Location(), ErrNoRepository)
	}
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	var slots []string
	if opts.KeySlot != "" {
		slots = []string{keysDir + strings.TrimPrefix(opts.KeySlot, keysDir)}
	} else if slots, err = listNames(ctx, be, keysDir); err != nil {
		return nil, fmt.Errorf("list key slots: %w", err)
	}
	var damaged, expired error
	intact := 0
	var loaded []*keySlot
	for _, name := range slots {
		slot, err := loadSlot(ctx, be, name)
		if err != nil {
			if opts.KeySlot != "" {
				return nil, err
			}
			damaged = err // another slot may still open
			continue
		}
		intact++
		loaded = append(loaded, slot)
	}
	sort.SliceStable(loaded, func(i, j int) bool { return loaded[i].cheap() && !loaded[j].cheap() })
	now := opts.clock()()
	for _, slot := range loaded {
		if !slot.Expires.IsZero() && now.After(slot.Expires) {
			expired = fmt.Errorf("key slot %s expired at %s", strings.TrimPrefix(slot.slotName, keysDir), slot.Expires.Format(time.RFC3339))
			continue
		}
		key, err := slot.unwrap(password)
		if errors.Is(err, ErrWrongPassword) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("key slot %s: %w", slot.slotName, err)
		}
		s, err := newSealer(key.Encrypt[:])
		if err != nil {
			return nil, err
		}
		plain, err := s.open(nil, sealedCfg, []byte(adConfig))
		if err != nil {
			return nil, &CorruptError{Object: configName, Err: err}
		}
		var cfg Config
		if err := json.Unmarshal(plain, &cfg); err != nil {
			return nil, &CorruptError{Object: configName, Err: err}
		}
		if cfg.Version != Version {
			return nil, fmt.Errorf("repository format version %d is not supported by this amber (it reads version %d); upgrade amber", cfg.Version, Version)
		}
		if err := checkConfig(cfg); err != nil {
			return nil, &CorruptError{Object: configName, Err: err}
		}
		r, err := newRepository(be, key, cfg, opts)
		if err != nil {
			return nil, err
		}
		r.keyName = slot.slotName
		return r, nil
	}
	if damaged != nil && intact == 0 {
		return nil, fmt.Errorf("%w; no other key slot exists: restore that object from a copy of the repository", damaged)
	}
	if expired != nil && opts.KeySlot != "" {
		return nil, expired
	}
	if damaged != nil {
		return nil, fmt.Errorf("%w; also, %v", ErrWrongPassword, damaged)
	}
	return nil, ErrWrongPassword
}

// Config returns the repository's configuration.
func (r *Repository) Config() Config { return r.cfg }

// Backend returns the storage the repository lives in.
func (r *Repository) Backend() storage.Backend { return r.be }

// Close releases the backend.
func (r *Repository) Close() error { return r.be.Close() }

// listNames lists the names under prefix.
func listNames(ctx context.Context, be storage.Backend, prefix string) ([]string, error) {
	var out []string
	err := be.List(ctx, prefix, func(fi storage.FileInfo) error {
		out = append(out, fi.Name)
		return nil
	})
	return out, err
}

var zenc, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1))

// saveObject compresses, seals and stores a small metadata object in dir,
// named by the hash of its stored bytes. It returns that ID.
func (r *Repository) saveObject(ctx context.Context, dir string, plain []byte, ad string) (ID, int64, error) {
	sealed := r.seal.seal(nil, zenc.EncodeAll(plain, nil), []byte(ad))
	id := hashID(sealed)
	name := dir + id.String()
	if err := r.be.Save(ctx, name, bytes.NewReader(sealed), int64(len(sealed))); err != nil {
		return id, 0, fmt.Errorf("save %s: %w", name, err)
	}
	if r.cache != nil {
		r.cache.put(name, sealed)
	}
	return id, int64(len(sealed)), nil
}

// loadObject reads, checks, opens and decompresses a metadata object.
func (r *Repository) loadObject(ctx context.Context, name, ad string) ([]byte, error) {
	var sealed []byte
	if r.cache != nil {
		sealed = r.cache.get(name)
	}
	fromCache := sealed != nil
	if !fromCache {
		var err error
		if sealed, err = readCapped(ctx, r.be, name, maxMetaStored); err != nil {
			return nil, err
		}
	}
	if id := path.Base(name); hashID(sealed).String() != id {
		if fromCache {
			r.cache.drop(name)
			return r.loadObject(ctx, name, ad)
		}
		return nil, &CorruptError{Object: name, Err: fmt.Errorf("content does not match its name")}
	}
	comp, err := r.seal.open(nil, sealed, []byte(ad))
	if err != nil {
		return nil, &CorruptError{Object: name, Err: err}
	}
	plain, err := zdecMeta.DecodeAll(comp, nil)
	if err != nil {
		return nil, &CorruptError{Object: name, Err: fmt.Errorf("decompress: %w", err)}
	}
	if r.cache != nil && !fromCache {
		r.cache.put(name, sealed)
	}
	return plain, nil
}

// CorruptError names an object whose stored bytes failed a check.
type CorruptError struct {
	Object string
	Err    error
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("object %s is corrupt: %v", e.Object, e.Err)
}

func (e *CorruptError) Unwrap() error { return e.Err }
