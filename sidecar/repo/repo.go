package repo

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/amber-backup/amber/sidecar/repo/chunker"
	"github.com/amber-backup/amber/sidecar/storage"
	"github.com/klauspost/compress/zstd"
	"github.com/zeebo/blake3"
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

	idxMu sync.Mutex
	idx   *Index // nil until first needed
}

// Options tune how a repository is opened.
type Options struct {
	// CacheDir holds the local cache of index files and manifests. Empty
	// means the user's cache directory; "-" disables the cache.
	CacheDir string
	// KDF sets the key-derivation cost for new key slots (zero: DefaultKDF).
	KDF KDFParams
	// Now replaces the clock (tests).
	Now func() time.Time
}

func (o Options) kdf() KDFParams {
	if o.KDF.Time == 0 {
		return DefaultKDF
	}
	return o.KDF
}

func (o Options) clock() func() time.Time {
	if o.Now != nil {
		return o.Now
	}
	return time.Now
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
		cfg: cfg, now: opts.clock()}
	if opts.CacheDir != "-" {
		r.cache = openCache(opts.CacheDir, cfg.ID)
	}
	return r, nil
}

// Open opens the repository in be with password.
func Open(ctx context.Context, be storage.Backend, password []byte, opts Options) (*Repository, error) {
	sealedCfg, err := storage.ReadAll(ctx, be, configName)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, fmt.Errorf("%s: %w", be.Location(), ErrNoRepository)
	}
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	slots, err := listNames(ctx, be, keysDir)
	if err != nil {
		return nil, fmt.Errorf("list key slots: %w", err)
	}
	var damaged error
	intact := 0
	for _, name := range slots {
		slot, err := loadSlot(ctx, be, name)
		if err != nil {
			damaged = err // another slot may still open
			continue
		}
		intact++
		key, err := slot.unwrap(password)
		if errors.Is(err, ErrWrongPassword) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("key slot %s: %w", name, err)
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
		r, err := newRepository(be, key, cfg, opts)
		if err != nil {
			return nil, err
		}
		r.keyName = name
		return r, nil
	}
	if damaged != nil && intact == 0 {
		return nil, fmt.Errorf("%w; no other key slot exists: restore that object from a copy of the repository", damaged)
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

var (
	zenc, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1))
	zdec, _ = zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(1<<30))
)

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
		if sealed, err = storage.ReadAll(ctx, r.be, name); err != nil {
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
	plain, err := zdec.DecodeAll(comp, nil)
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

// keySlot is the plaintext JSON of an object in keys/.
type keySlot struct {
	Version  int       `json:"version"`
	Created  time.Time `json:"created"`
	Host     string    `json:"host,omitempty"`
	KDF      string    `json:"kdf"`
	Params   KDFParams `json:"kdf_params"`
	Salt     []byte    `json:"salt"`
	Wrapped  []byte    `json:"master_key"`
	Check    []byte    `json:"check"` // BLAKE3 of the fields above: tells damage from a wrong password
	slotName string
}

// checksum covers every field of the slot (its compact JSON without the
// checksum), so a damaged slot is reported as damaged rather than as a
// wrong password.
func (s *keySlot) checksum() []byte {
	c := *s
	c.Check = nil
	b, _ := json.Marshal(c)
	sum := blake3.Sum256(b)
	return sum[:]
}

func loadSlot(ctx context.Context, be storage.Backend, name string) (*keySlot, error) {
	b, err := storage.ReadAll(ctx, be, name)
	if err != nil {
		return nil, fmt.Errorf("read key slot %s: %w", name, err)
	}
	var s keySlot
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, &CorruptError{Object: name, Err: err}
	}
	if s.KDF != "argon2id" || s.Params.Time == 0 || s.Params.Threads == 0 || len(s.Salt) < 16 {
		return nil, &CorruptError{Object: name, Err: fmt.Errorf("unsupported key derivation %q", s.KDF)}
	}
	if !bytes.Equal(s.Check, s.checksum()) {
		return nil, &CorruptError{Object: name, Err: errors.New("key slot checksum mismatch")}
	}
	s.slotName = name
	return &s, nil
}

func (s *keySlot) unwrap(password []byte) (*MasterKey, error) {
	kek := deriveKEK(password, s.Salt, s.Params)
	sl, err := newSealer(kek)
	if err != nil {
		return nil, err
	}
	plain, err := sl.open(nil, s.Wrapped, []byte(adKey))
	if err != nil {
		return nil, ErrWrongPassword
	}
	var k MasterKey
	if err := json.Unmarshal(plain, &k); err != nil {
		return nil, fmt.Errorf("decode master key: %w", err)
	}
	return &k, nil
}

// AddKey writes a new key slot that wraps the master key with password and
// returns its object name. Data is never rewritten.
func (r *Repository) AddKey(ctx context.Context, password []byte, p KDFParams) (string, error) {
	if len(password) == 0 {
		return "", errors.New("an empty password is not allowed")
	}
	if p.Time == 0 {
		p = DefaultKDF
	}
	salt := make([]byte, 32)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	sl, err := newSealer(deriveKEK(password, salt, p))
	if err != nil {
		return "", err
	}
	plain, _ := json.Marshal(r.key)
	host, _ := os.Hostname()
	slot := keySlot{Version: 1, Created: r.now().UTC(), Host: host, KDF: "argon2id", Params: p, Salt: salt,
		Wrapped: sl.seal(nil, plain, []byte(adKey))}
	slot.Check = slot.checksum()
	b, _ := json.MarshalIndent(slot, "", "  ")
	var rnd [32]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return "", err
	}
	name := keysDir + hex.EncodeToString(rnd[:])
	if err := r.be.Save(ctx, name, bytes.NewReader(b), int64(len(b))); err != nil {
		return "", fmt.Errorf("save key slot: %w", err)
	}
	return name, nil
}

// KeyInfo describes a key slot.
type KeyInfo struct {
	ID      string    `json:"id"`
	Created time.Time `json:"created"`
	Host    string    `json:"host,omitempty"`
	Current bool      `json:"current"`
}

// Keys lists the key slots.
func (r *Repository) Keys(ctx context.Context) ([]KeyInfo, error) {
	names, err := listNames(ctx, r.be, keysDir)
	if err != nil {
		return nil, err
	}
	var out []KeyInfo
	for _, n := range names {
		s, err := loadSlot(ctx, r.be, n)
		if err != nil {
			return nil, err
		}
		out = append(out, KeyInfo{ID: strings.TrimPrefix(n, keysDir), Created: s.Created, Host: s.Host, Current: n == r.keyName})
	}
	return out, nil
}

// RemoveKey removes the key slot whose id starts with prefix. The slot in
// use and the last slot cannot be removed.
func (r *Repository) RemoveKey(ctx context.Context, prefix string) error {
	keys, err := r.Keys(ctx)
	if err != nil {
		return err
	}
	var match []KeyInfo
	for _, k := range keys {
		if strings.HasPrefix(k.ID, prefix) {
			match = append(match, k)
		}
	}
	switch {
	case prefix == "" || len(match) == 0:
		return fmt.Errorf("no key slot %q; list them with `amber key list`", prefix)
	case len(match) > 1:
		return fmt.Errorf("key id %q is ambiguous (%d slots); give more digits", prefix, len(match))
	case match[0].Current:
		return errors.New("refusing to remove the key slot this password opened; open the repository with another key to remove it")
	}
	return r.be.Remove(ctx, keysDir+match[0].ID)
}
