package repo

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"

	"github.com/amber-backup/amber/sidecar/storage"
	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
)

// Size limits of the format (docs/repository-format.md, "Limits"). Every
// read of a storage object is capped by them, so a planted or damaged object
// cannot make a reader allocate without bound.
const (
	maxSmallObject = 64 << 10 // config, key slots, locks, writer markers
	maxMetaStored  = 1 << 30  // one index file or manifest as stored
	maxMetaPlain   = 4 << 30  // ... and decompressed
	maxBlobPlain   = 8 << 20  // a chunk or list blob's plaintext (chunker max ≤ this)
	maxPackSize    = 1 << 30  // config pack_size
	maxSegment     = 1 << 30  // a log segment's plaintext
	maxIndexBlobs  = 1 << 20  // blobs one index file names (writers split above it)
	maxPackHeader  = 4 << 20  // plaintext of one pack header
	maxSlotSalt    = 1024     // bytes
	maxSlotWrapped = 4096     // bytes
	maxArgonMemory = 1 << 20  // KiB: 1 GiB
	maxArgonTime   = 100      // passes
	minArgonMemory = 8        // KiB per lane, as RFC 9106 requires
	maxSegmentRead = maxSegment + 16<<20
)

var (
	zdecMeta, _ = zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(maxMetaPlain))
	zdecSeg, _  = zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(maxSegment))
)

// decompressBlob decodes a compressed blob's payload. The output is bounded
// by b.RawLength (itself at most maxBlobPlain): an S2 block whose length
// header says otherwise is refused before anything is allocated for it.
func decompressBlob(b BlobInfo, payload []byte) ([]byte, error) {
	return decompressBlobTo(b, payload, nil)
}

// decodeSlack is the room a zstd frame's output needs past its end for the
// decoder's fast copies, which write in 16-byte blocks; without it the
// decoder takes its bounds-exact copies for the frame's last block.
const decodeSlack = 16

// decompressBlobTo is decompressBlob decoding into dst's spare capacity
// when it holds b.RawLength (plus decodeSlack for zstd) bytes; nil dst
// allocates. A frame that decodes to more than b.RawLength is refused
// (by the decoder or by the caller's length check).
func decompressBlobTo(b BlobInfo, payload, dst []byte) ([]byte, error) {
	if b.Codec != CodecS2 {
		if cap(dst) < int(b.RawLength)+decodeSlack {
			dst = make([]byte, 0, int(b.RawLength)+decodeSlack)
		}
		return decodeZstdBlob(payload, dst)
	}
	n, err := s2.DecodedLen(payload)
	if err != nil {
		return nil, err
	}
	if n != int(b.RawLength) {
		return nil, fmt.Errorf("block decodes to %d bytes, but the index says %d", n, b.RawLength)
	}
	if cap(dst) < n {
		dst = make([]byte, n)
	}
	return s2.Decode(dst[:n], payload)
}

// maxPackObject is the largest pack a reader accepts: a writer closes a
// pack once it reaches pack_size, so it overshoots by at most one blob and
// the header.
func (r *Repository) maxPackObject() int64 {
	return 2*int64(r.cfg.PackSize) + 2*maxBlobPlain + maxPackHeader
}

// readCapped loads a whole object, refusing one larger than limit.
func readCapped(ctx context.Context, be storage.Backend, name string, limit int64) ([]byte, error) {
	rd, err := be.Load(ctx, name, 0, 0)
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	b, err := io.ReadAll(io.LimitReader(rd, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, &CorruptError{Object: name, Err: fmt.Errorf("larger than the %d bytes the format allows", limit)}
	}
	return b, nil
}

// checkConfig refuses parameters outside the format's limits.
func checkConfig(cfg Config) error {
	c := cfg.Chunker
	if c.Min <= 0 || c.Min > c.Avg || c.Avg > c.Max || c.Max > maxBlobPlain {
		return fmt.Errorf("chunker parameters %+v are outside the format's limits (max %d)", c, maxBlobPlain)
	}
	if cfg.PackSize <= 0 || cfg.PackSize > maxPackSize {
		return fmt.Errorf("pack size %d is outside the format's limits (max %d)", cfg.PackSize, maxPackSize)
	}
	return nil
}

// versionError reports a stored object of a format version this code does not read.
func versionError(what, object string, v int) error {
	return fmt.Errorf("%s %s has format version %d, but this amber reads version %d only; upgrade amber", what, object, v, Version)
}

// parseHeaderEntries decodes the plaintext of a pack header, for a pack
// whose blobs take dataLen bytes before the header. Offsets are computed
// in 64 bits and every blob must lie inside the data.
func parseHeaderEntries(hdr []byte, dataLen int64) ([]BlobInfo, error) {
	if len(hdr)%headerEntrySize != 0 {
		return nil, fmt.Errorf("header size %d is not a multiple of %d", len(hdr), headerEntrySize)
	}
	if dataLen < 0 || dataLen > math.MaxUint32 {
		return nil, fmt.Errorf("pack data of %d bytes is outside the format's limits", dataLen)
	}
	out := make([]BlobInfo, 0, len(hdr)/headerEntrySize)
	var off int64
	for i := 0; i < len(hdr); i += headerEntrySize {
		e := hdr[i : i+headerEntrySize]
		b := BlobInfo{
			Type:      BlobType(e[0]),
			Offset:    uint32(off),
			Length:    binary.LittleEndian.Uint32(e[2:]),
			RawLength: binary.LittleEndian.Uint32(e[6:]),
		}
		copy(b.ID[:], e[10:42])
		if err := b.setHeaderFlags(e[1]); err != nil {
			return nil, fmt.Errorf("header entry %d: %w", i/headerEntrySize, err)
		}
		if err := checkBlobInfo(b); err != nil {
			return nil, fmt.Errorf("header entry %d: %w", i/headerEntrySize, err)
		}
		off += int64(b.Length)
		if off > dataLen {
			return nil, fmt.Errorf("header lists blobs past the end of the data")
		}
		out = append(out, b)
	}
	if off != dataLen {
		return nil, fmt.Errorf("header covers %d of %d data bytes", off, dataLen)
	}
	return out, nil
}

func checkBlobInfo(b BlobInfo) error {
	switch {
	case b.Type != DataBlob && b.Type != ListBlob:
		return fmt.Errorf("blob %s has unknown type %d", b.ID.Short(), b.Type)
	case b.Length < overhead:
		return fmt.Errorf("blob %s is %d bytes, shorter than its encryption overhead", b.ID.Short(), b.Length)
	case b.RawLength > maxBlobPlain:
		return fmt.Errorf("blob %s claims %d bytes, more than the format allows", b.ID.Short(), b.RawLength)
	case !b.Compressed && b.Length != b.RawLength+overhead:
		return fmt.Errorf("blob %s: stored length %d does not fit plaintext length %d", b.ID.Short(), b.Length, b.RawLength)
	case !b.Compressed && b.Codec != CodecZstd:
		return fmt.Errorf("blob %s names codec %s but is not compressed", b.ID.Short(), b.Codec)
	case b.Codec > CodecS2:
		return fmt.Errorf("blob %s has unknown codec %d; upgrade amber", b.ID.Short(), b.Codec)
	}
	return nil
}

// parseIndexFile decodes and checks the plaintext of an index file.
func parseIndexFile(name string, plain []byte) (*indexFile, error) {
	var f indexFile
	if err := json.Unmarshal(plain, &f); err != nil {
		return nil, &CorruptError{Object: name, Err: err}
	}
	if f.Version != Version && f.Version != IndexVersionS2 {
		return nil, fmt.Errorf("index file %s has format version %d, but this amber reads versions %d and %d only; upgrade amber",
			name, f.Version, Version, IndexVersionS2)
	}
	for _, p := range f.Packs {
		if p.Size < 0 || p.Size > math.MaxUint32 {
			return nil, &CorruptError{Object: name, Err: fmt.Errorf("pack %s has size %d", p.ID.Short(), p.Size)}
		}
		for _, b := range p.Blobs {
			if err := checkBlobInfo(b); err != nil {
				return nil, &CorruptError{Object: name, Err: fmt.Errorf("pack %s: %w", p.ID.Short(), err)}
			}
			if b.Codec != CodecZstd && f.Version < IndexVersionS2 {
				return nil, &CorruptError{Object: name, Err: fmt.Errorf("pack %s: blob %s uses codec %s in a version %d index file", p.ID.Short(), b.ID.Short(), b.Codec, f.Version)}
			}
			if end := int64(b.Offset) + int64(b.Length); p.Size > 0 && end > p.Size {
				return nil, &CorruptError{Object: name, Err: fmt.Errorf("pack %s: blob %s ends at %d, past the pack's %d bytes", p.ID.Short(), b.ID.Short(), end, p.Size)}
			}
		}
	}
	return &f, nil
}

// parseManifest decodes and checks the plaintext of a manifest.
func parseManifest(name string, plain []byte) (*Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(plain, &m); err != nil {
		return nil, &CorruptError{Object: name, Err: err}
	}
	if m.Version != Version && m.Version != ManifestVersionFiles {
		return nil, fmt.Errorf("backup manifest %s has format version %d, but this amber reads versions %d and %d only; upgrade amber",
			name, m.Version, Version, ManifestVersionFiles)
	}
	for _, e := range m.Entries {
		if e.Size < 0 || len(e.Lists) == 0 {
			return nil, &CorruptError{Object: name, Err: fmt.Errorf("entry %q has no content", e.Name)}
		}
		if e.Files != nil && (m.Version != ManifestVersionFiles || len(e.Files.Lists) == 0 || e.Files.Size < 0 || e.Files.Count < 0) {
			return nil, &CorruptError{Object: name, Err: fmt.Errorf("entry %q has a bad file index", e.Name)}
		}
	}
	return &m, nil
}
