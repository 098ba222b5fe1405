package repo

import (
	"encoding/binary"
	"fmt"
)

// BlobType tells data chunks from the lists that order them.
type BlobType uint8

const (
	// DataBlob holds a chunk of a backed-up stream.
	DataBlob BlobType = 0
	// ListBlob holds an ordered list of (chunk id, length) pairs.
	ListBlob BlobType = 1
)

func (t BlobType) String() string {
	if t == ListBlob {
		return "list"
	}
	return "data"
}

// headerEntrySize is the size of one blob's entry in a pack header:
// type (1) | flags (1) | stored length (4) | raw length (4) | id (32).
const headerEntrySize = 42

// Flags of a header entry: at most one is set, and it names the codec of
// the payload. An S2 blob gets a bit of its own (not bit 0 plus a codec
// bit), so an amber that knows only zstd refuses its header (the stored
// length does not fit an uncompressed blob) instead of misreading it.
const (
	flagCompressed = 1 << 0 // zstd frame
	flagS2         = 1 << 1 // S2 block
)

// Codec says how a compressed blob's payload is encoded. The zero value is
// zstd, the only codec before S2, so index files that do not name one read
// as they always did.
type Codec uint8

const (
	CodecZstd Codec = iota // a zstd frame (RFC 8878)
	CodecS2                // an S2 block (github.com/klauspost/compress/s2)
)

func (c Codec) String() string {
	if c == CodecS2 {
		return "s2"
	}
	return "zstd"
}

// MarshalText writes the codec's name, as index files store it.
func (c Codec) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

// UnmarshalText reads a codec name; an unknown one is an error, so a
// reader never guesses how to decode a blob.
func (c *Codec) UnmarshalText(b []byte) error {
	switch string(b) {
	case "zstd":
		*c = CodecZstd
	case "s2":
		*c = CodecS2
	default:
		return fmt.Errorf("unknown codec %q; upgrade amber", b)
	}
	return nil
}

// BlobInfo locates one blob inside a pack.
type BlobInfo struct {
	ID         ID       `json:"id"`
	Type       BlobType `json:"type"`
	Offset     uint32   `json:"offset"`
	Length     uint32   `json:"length"`     // stored (sealed) length
	RawLength  uint32   `json:"raw_length"` // plaintext length
	Compressed bool     `json:"compressed"`
	// Codec of a compressed blob; written only when not zstd.
	Codec Codec `json:"codec,omitempty"`
}

// headerFlags encodes how b's payload is stored.
func (b BlobInfo) headerFlags() byte {
	switch {
	case !b.Compressed:
		return 0
	case b.Codec == CodecS2:
		return flagS2
	}
	return flagCompressed
}

// setHeaderFlags decodes a header entry's flags into b.
func (b *BlobInfo) setHeaderFlags(f byte) error {
	switch f {
	case 0:
	case flagCompressed:
		b.Compressed = true
	case flagS2:
		b.Compressed, b.Codec = true, CodecS2
	default:
		return fmt.Errorf("blob %s has unknown flags %#x; upgrade amber", b.ID.Short(), f)
	}
	return nil
}

// blobAD binds a sealed blob to its id and type.
func blobAD(id ID, t BlobType) []byte {
	ad := make([]byte, 33)
	copy(ad, id[:])
	ad[32] = byte(t)
	return ad
}

// packBuilder accumulates sealed blobs for one pack.
type packBuilder struct {
	buf   []byte
	blobs []BlobInfo
}

func (p *packBuilder) add(b BlobInfo, sealed []byte) {
	b.Offset = uint32(len(p.buf))
	b.Length = uint32(len(sealed))
	p.buf = append(p.buf, sealed...)
	p.blobs = append(p.blobs, b)
}

// sealInto seals plain straight into the pack buffer (no copy).
func (p *packBuilder) sealInto(s *sealer, b BlobInfo, plain []byte) {
	off := len(p.buf)
	p.buf = s.seal(p.buf, plain, blobAD(b.ID, b.Type))
	b.Offset = uint32(off)
	b.Length = uint32(len(p.buf) - off)
	p.blobs = append(p.blobs, b)
}

// finish appends the sealed header and its length and returns the pack's
// bytes, its id and the blobs it holds.
func (p *packBuilder) finish(s *sealer) ([]byte, ID, []BlobInfo) {
	hdr := make([]byte, 0, len(p.blobs)*headerEntrySize)
	for _, b := range p.blobs {
		hdr = append(hdr, byte(b.Type), b.headerFlags())
		hdr = binary.LittleEndian.AppendUint32(hdr, b.Length)
		hdr = binary.LittleEndian.AppendUint32(hdr, b.RawLength)
		hdr = append(hdr, b.ID[:]...)
	}
	n := len(p.buf)
	p.buf = s.seal(p.buf, hdr, []byte(adPackHeader))
	p.buf = binary.LittleEndian.AppendUint32(p.buf, uint32(len(p.buf)-n))
	return p.buf, hashID(p.buf), p.blobs
}

// parsePackHeader reads the blob list from a whole pack's bytes.
func parsePackHeader(s *sealer, pack []byte) ([]BlobInfo, error) {
	hlen, err := packHeaderLen(pack, int64(len(pack)))
	if err != nil {
		return nil, err
	}
	start := int64(len(pack)) - 4 - hlen
	hdr, err := openPackHeader(s, pack[start:len(pack)-4])
	if err != nil {
		return nil, err
	}
	return parseHeaderEntries(hdr, start)
}

// packHeaderLen reads the sealed header's length from the last 4 bytes of
// a pack of packSize bytes (tail ends where the pack does).
func packHeaderLen(tail []byte, packSize int64) (int64, error) {
	if len(tail) < 4 || packSize < 4 {
		return 0, fmt.Errorf("pack too short (%d bytes)", packSize)
	}
	hlen := int64(binary.LittleEndian.Uint32(tail[len(tail)-4:]))
	if hlen < overhead || hlen > packSize-4 || hlen > maxPackHeader+overhead {
		return 0, fmt.Errorf("bad header length %d", hlen)
	}
	return hlen, nil
}

func openPackHeader(s *sealer, sealed []byte) ([]byte, error) {
	hdr, err := s.open(nil, sealed, []byte(adPackHeader))
	if err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	return hdr, nil
}

func packName(id ID) string {
	s := id.String()
	return dataDir + s[:2] + "/" + s
}
