package repo

import (
	"bytes"
	"context"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/amber-backup/amber/sidecar/storage"
	"github.com/zeebo/blake3"
)

// Key slot kinds and their key derivations (docs/repository-format.md, "Key slots").
const (
	kindPassword = ""       // stored without a kind field
	kindRandom   = "random" // unlocked by a high-entropy secret
	kdfArgon2id  = "argon2id"
	kdfHKDF      = "hkdf-sha256"
	hkdfInfo     = "amber key slot"
)

// keySlot is the plaintext JSON of an object in keys/. The order of the
// fields is part of the format: check covers their compact JSON.
type keySlot struct {
	Version  int       `json:"version"`
	Created  time.Time `json:"created"`
	Host     string    `json:"host,omitempty"`
	Kind     string    `json:"kind,omitempty"`
	Label    string    `json:"label,omitempty"`
	Expires  time.Time `json:"expires,omitzero"`
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

// cheap reports whether unwrapping costs no password stretching.
func (s *keySlot) cheap() bool { return s.KDF == kdfHKDF }

// parseSlot decodes and checks a key slot; nothing is derived here, so a
// planted slot with absurd parameters costs nothing.
func parseSlot(name string, b []byte) (*keySlot, error) {
	var s keySlot
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, &CorruptError{Object: name, Err: err}
	}
	if s.Version != 1 {
		return nil, fmt.Errorf("key slot %s has format version %d, but this amber reads version 1 only; upgrade amber", name, s.Version)
	}
	if !bytes.Equal(s.Check, s.checksum()) {
		return nil, &CorruptError{Object: name, Err: errors.New("key slot checksum mismatch")}
	}
	if len(s.Salt) < 16 || len(s.Salt) > maxSlotSalt || len(s.Wrapped) > maxSlotWrapped {
		return nil, &CorruptError{Object: name, Err: errors.New("salt or wrapped key has an impossible length")}
	}
	switch {
	case s.Kind == kindPassword && s.KDF == kdfArgon2id:
		if err := s.Params.check(); err != nil {
			return nil, &CorruptError{Object: name, Err: err}
		}
	case s.Kind == kindRandom && s.KDF == kdfHKDF:
		if s.Params != (KDFParams{}) {
			return nil, &CorruptError{Object: name, Err: errors.New("hkdf-sha256 takes no kdf_params")}
		}
	default:
		return nil, &CorruptError{Object: name, Err: fmt.Errorf("unsupported key slot kind %q with key derivation %q", s.Kind, s.KDF)}
	}
	s.slotName = name
	return &s, nil
}

func loadSlot(ctx context.Context, be storage.Backend, name string) (*keySlot, error) {
	b, err := readCapped(ctx, be, name, maxSmallObject)
	if err != nil {
		return nil, fmt.Errorf("read key slot %s: %w", name, err)
	}
	return parseSlot(name, b)
}

func (s *keySlot) kek(secret []byte) ([]byte, error) {
	if s.KDF == kdfHKDF {
		return hkdf.Key(sha256.New, secret, s.Salt, hkdfInfo, 32)
	}
	return deriveKEK(secret, s.Salt, s.Params), nil
}

func (s *keySlot) unwrap(secret []byte) (*MasterKey, error) {
	kek, err := s.kek(secret)
	if err != nil {
		return nil, err
	}
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

// writeSlot wraps the master key under secret in a new slot and stores it.
func (r *Repository) writeSlot(ctx context.Context, slot keySlot, secret []byte) (string, error) {
	slot.Version = 1
	slot.Created = r.now().UTC()
	slot.Host, _ = os.Hostname()
	slot.Salt = make([]byte, 32)
	if _, err := rand.Read(slot.Salt); err != nil {
		return "", err
	}
	kek, err := slot.kek(secret)
	if err != nil {
		return "", err
	}
	sl, err := newSealer(kek)
	if err != nil {
		return "", err
	}
	plain, _ := json.Marshal(r.key)
	slot.Wrapped = sl.seal(nil, plain, []byte(adKey))
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

// AddKey writes a new key slot that wraps the master key with password and
// returns its object name. Data is never rewritten.
func (r *Repository) AddKey(ctx context.Context, password []byte, p KDFParams) (string, error) {
	if len(password) == 0 {
		return "", errors.New("an empty password is not allowed")
	}
	if p.Time == 0 {
		p = DefaultKDF
	}
	if err := p.check(); err != nil {
		return "", err
	}
	return r.writeSlot(ctx, keySlot{KDF: kdfArgon2id, Params: p}, password)
}

// AddRandomKey writes a key slot unlocked by a new random secret (32 bytes
// from the system's random source, returned base64url-encoded: use it as
// the password, with Options.KeySlot set to slotID). The secret has full
// entropy, so the slot uses HKDF-SHA256 and opening costs microseconds. A
// non-zero expires is recorded in the slot: Open refuses the slot after
// it, and prune removes it. label says what the slot is for.
func (r *Repository) AddRandomKey(ctx context.Context, label string, expires time.Time) (slotID string, secret []byte, err error) {
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", nil, err
	}
	secret = []byte(base64.RawURLEncoding.EncodeToString(raw[:]))
	slot := keySlot{Kind: kindRandom, Label: label, KDF: kdfHKDF}
	if !expires.IsZero() {
		slot.Expires = expires.UTC()
	}
	name, err := r.writeSlot(ctx, slot, secret)
	if err != nil {
		return "", nil, err
	}
	return strings.TrimPrefix(name, keysDir), secret, nil
}

// KeyInfo describes a key slot.
type KeyInfo struct {
	ID      string    `json:"id"`
	Created time.Time `json:"created"`
	Host    string    `json:"host,omitempty"`
	Kind    string    `json:"kind"` // "password" or "random"
	Label   string    `json:"label,omitempty"`
	Expires time.Time `json:"expires,omitzero"`
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
		kind := s.Kind
		if kind == kindPassword {
			kind = "password"
		}
		out = append(out, KeyInfo{ID: strings.TrimPrefix(n, keysDir), Created: s.Created, Host: s.Host, Kind: kind,
			Label: s.Label, Expires: s.Expires, Current: n == r.keyName})
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

// removeExpiredKeys deletes random key slots whose expiry is before now
// (the storage server's time, as prune judges it). Damaged slots are left
// for verify to report.
func (r *Repository) removeExpiredKeys(ctx context.Context, now time.Time) (int, error) {
	names, err := listNames(ctx, r.be, keysDir)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, name := range names {
		s, err := loadSlot(ctx, r.be, name)
		if err != nil || s.Kind != kindRandom || s.Expires.IsZero() || !now.After(s.Expires) || name == r.keyName {
			continue
		}
		if err := r.be.Remove(ctx, name); err != nil && !errors.Is(err, storage.ErrNotFound) {
			return n, fmt.Errorf("remove expired key slot %s: %w", name, err)
		}
		n++
	}
	return n, nil
}

// RemoveOwnRandomKey removes the random key slot this repository was
// opened with, as a restore's credential is revoked once its recovery has
// ended; after it the secret opens nothing. Password slots are never removed
// this way.
func (r *Repository) RemoveOwnRandomKey(ctx context.Context) error {
	keys, err := r.Keys(ctx)
	if err != nil {
		return err
	}
	for _, k := range keys {
		if !k.Current {
			continue
		}
		if k.Kind != kindRandom {
			return errors.New("the repository was opened with a password, not a random key slot; nothing to revoke")
		}
		return r.be.Remove(ctx, keysDir+k.ID)
	}
	return errors.New("the key slot this repository was opened with is gone")
}
