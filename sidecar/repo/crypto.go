package repo

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime"

	"github.com/zeebo/blake3"
	"golang.org/x/crypto/argon2"
)

// ID names a blob or an object: 32 bytes, shown as 64 hex digits.
type ID [32]byte

func (id ID) String() string { return hex.EncodeToString(id[:]) }

// Short is the 12-digit prefix used in listings.
func (id ID) Short() string { return id.String()[:12] }

// ParseID parses 64 hex digits.
func ParseID(s string) (ID, error) {
	var id ID
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(id) {
		return id, fmt.Errorf("invalid id %q: want 64 hex digits", s)
	}
	copy(id[:], b)
	return id, nil
}

// MarshalText implements encoding.TextMarshaler.
func (id ID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (id *ID) UnmarshalText(b []byte) error {
	v, err := ParseID(string(b))
	*id = v
	return err
}

// hashID names stored objects: the unkeyed BLAKE3-256 of their stored
// (encrypted) bytes, so a name reveals nothing and a flipped byte is caught
// before any decryption.
func hashID(stored []byte) ID { return blake3.Sum256(stored) }

// MasterKey is the repository's random key material. It never leaves the
// process unwrapped.
type MasterKey struct {
	Encrypt [32]byte `json:"encrypt"`  // AES-256-GCM key for every blob and object
	ChunkID [32]byte `json:"chunk_id"` // BLAKE3 key that names chunks by their plaintext
}

func newMasterKey() (*MasterKey, error) {
	k := new(MasterKey)
	if _, err := rand.Read(k.Encrypt[:]); err != nil {
		return nil, err
	}
	if _, err := rand.Read(k.ChunkID[:]); err != nil {
		return nil, err
	}
	return k, nil
}

// String keeps key material out of logs and error messages.
func (k *MasterKey) String() string { return "***" }

// GoString keeps key material out of %#v.
func (k *MasterKey) GoString() string { return "***" }

// ErrAuth is returned (wrapped) when authenticated decryption fails: the data
// was changed, truncated, moved, or encrypted under another key.
var ErrAuth = errors.New("authentication failed: data is corrupt or was not written by this repository's key")

const nonceSize = 12
const overhead = nonceSize + 16 // nonce + GCM tag

// sealer encrypts and authenticates with AES-256-GCM. Layout of a sealed
// message: nonce (12 random bytes) || ciphertext || tag (16 bytes).
type sealer struct{ aead cipher.AEAD }

func newSealer(key []byte) (*sealer, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &sealer{aead: aead}, nil
}

// seal appends the sealed form of plain, bound to ad, to dst.
func (s *sealer) seal(dst, plain, ad []byte) []byte {
	var nonce [nonceSize]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	dst = append(dst, nonce[:]...)
	return s.aead.Seal(dst, nonce[:], plain, ad)
}

// open authenticates and decrypts sealed, appending the plaintext to dst.
func (s *sealer) open(dst, sealed, ad []byte) ([]byte, error) {
	if len(sealed) < overhead {
		return nil, fmt.Errorf("%w (too short: %d bytes)", ErrAuth, len(sealed))
	}
	out, err := s.aead.Open(dst, sealed[:nonceSize], sealed[nonceSize:], ad)
	if err != nil {
		return nil, ErrAuth
	}
	return out, nil
}

// openInPlace is open writing the plaintext over sealed's ciphertext, and
// returns it as a slice of sealed. sealed's bytes are lost either way.
func (s *sealer) openInPlace(sealed, ad []byte) ([]byte, error) {
	if len(sealed) < overhead {
		return nil, fmt.Errorf("%w (too short: %d bytes)", ErrAuth, len(sealed))
	}
	out, err := s.aead.Open(sealed[nonceSize:nonceSize], sealed[:nonceSize], sealed[nonceSize:], ad)
	if err != nil {
		return nil, ErrAuth
	}
	return out, nil
}

// chunkIDer names chunks by keyed BLAKE3 of their plaintext: equal chunks get
// equal names inside one repository, and names say nothing to anyone without
// the key.
type chunkIDer struct{ key [32]byte }

func (c chunkIDer) id(data []byte) ID { return c.hasher().id(data) }

// hasher returns a chunkHasher for one goroutine.
func (c chunkIDer) hasher() *chunkHasher {
	h, _ := blake3.NewKeyed(c.key[:])
	return &chunkHasher{h: h}
}

// chunkHasher names chunks as chunkIDer does, reusing one keyed state
// (a few KiB) instead of allocating it for every chunk.
type chunkHasher struct{ h *blake3.Hasher }

func (c *chunkHasher) id(data []byte) ID {
	c.h.Reset()
	c.h.Write(data)
	var id ID
	c.h.Sum(id[:0])
	return id
}

// KDFParams are the Argon2id parameters of a key slot.
type KDFParams struct {
	Time    uint32 `json:"time"`
	Memory  uint32 `json:"memory_kib"`
	Threads uint8  `json:"threads"`
}

// DefaultKDF is Argon2id with 64 MiB, three passes, four lanes: the second
// of RFC 9106's recommended settings (section 4), at or above restic's cost.
// Each key slot records its own parameters. Slots unlocked by a random
// secret (AddRandomKey) need no stretching and skip it.
var DefaultKDF = KDFParams{Time: 3, Memory: 64 * 1024, Threads: 4}

// check refuses parameters outside the format's caps, before anything is
// derived with them.
func (p KDFParams) check() error {
	switch {
	case p.Time == 0 || p.Time > maxArgonTime:
		return fmt.Errorf("argon2id time %d is outside 1..%d", p.Time, maxArgonTime)
	case p.Threads == 0:
		return errors.New("argon2id threads must be at least 1")
	case p.Memory < minArgonMemory*uint32(p.Threads) || p.Memory > maxArgonMemory:
		return fmt.Errorf("argon2id memory %d KiB is outside %d..%d KiB", p.Memory, minArgonMemory*uint32(p.Threads), maxArgonMemory)
	}
	return nil
}

func deriveKEK(password []byte, salt []byte, p KDFParams) []byte {
	prefault(int(p.Memory) << 10)
	return argon2.IDKey(password, salt, p.Time, p.Memory, p.Threads, 32)
}

// prefault has the heap hold n bytes of pages that are mapped writable,
// for the allocation that follows. x/crypto/argon2 XORs into the blocks it
// has just allocated, so on fresh memory each page is first read, which
// maps the kernel's shared zero page, and then written, which replaces it
// and flushes the TLB of every CPU the process ran on. On a 2-CPU virtual
// machine that made a 64 MiB derivation 244 ms, about 60% of it those
// flushes. Writing a buffer of the size and freeing it hands the pages to
// the next allocation of that size, which the allocator clears by writing:
// 90 ms in all, the 25 ms of writing included.
func prefault(n int) {
	b := make([]byte, n)
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1
	}
	runtime.KeepAlive(b)
	runtime.GC()
}
