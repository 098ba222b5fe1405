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

const flagCompressed = 1

// BlobInfo locates one blob inside a pack.
type BlobInfo struct {
	ID         ID       `json:"id"`
	Type       BlobType `json:"type"`
	Offset     uint32   `json:"offset"`
	Length     uint32   `json:"length"`     // stored (sealed) length
	RawLength  uint32   `json:"raw_length"` // plaintext length
	Compressed bool     `json:"compressed"`
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
		flags := byte(0)
		if b.Compressed {
			flags |= flagCompressed
		}
		hdr = append(hdr, byte(b.Type), flags)
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
	if len(pack) < 4 {
		return nil, fmt.Errorf("pack too short (%d bytes)", len(pack))
	}
	hlen := int(binary.LittleEndian.Uint32(pack[len(pack)-4:]))
	if hlen < overhead || hlen > len(pack)-4 {
		return nil, fmt.Errorf("bad header length %d", hlen)
	}
	start := len(pack) - 4 - hlen
	hdr, err := s.open(nil, pack[start:len(pack)-4], []byte(adPackHeader))
	if err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	if len(hdr)%headerEntrySize != 0 {
		return nil, fmt.Errorf("header size %d is not a multiple of %d", len(hdr), headerEntrySize)
	}
	var out []BlobInfo
	off := uint32(0)
	for i := 0; i < len(hdr); i += headerEntrySize {
		e := hdr[i : i+headerEntrySize]
		b := BlobInfo{
			Type:       BlobType(e[0]),
			Compressed: e[1]&flagCompressed != 0,
			Offset:     off,
			Length:     binary.LittleEndian.Uint32(e[2:]),
			RawLength:  binary.LittleEndian.Uint32(e[6:]),
		}
		copy(b.ID[:], e[10:42])
		off += b.Length
		if int(off) > start {
			return nil, fmt.Errorf("header lists blobs past the end of the data")
		}
		out = append(out, b)
	}
	if int(off) != start {
		return nil, fmt.Errorf("header covers %d of %d data bytes", off, start)
	}
	return out, nil
}

func packName(id ID) string {
	s := id.String()
	return dataDir + s[:2] + "/" + s
}
