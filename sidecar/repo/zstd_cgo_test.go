//go:build cgo

package repo

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/DataDog/zstd"
)

// TestZstdCEncoder: in a cgo build the writer compresses with the zstd C
// library at levels 1 and 3 (fastest, default) and with the Go encoder at
// level 7 (better); the C library's frames decode, with the reader's
// decoder, to exactly the input, and are about the size of the Go
// encoder's at the same level (so the speed it buys costs no size; compared on a binary,
// real files, as text of random hex digits is a case where zstd's levels
// rank differently in each). A buffer too small for the frame is grown, and
// an empty input gives a valid empty frame.
func TestZstdCEncoder(t *testing.T) {
	exe, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	exe = exe[:min(len(exe), 3<<20)]
	if _, ok := CompressBetter.newEncoder().zstd.(goZstd); !ok {
		t.Fatal("level 7 (better) should keep the Go encoder")
	}
	for _, c := range []Compression{CompressFastest, CompressDefault} {
		enc := c.newEncoder()
		if _, ok := enc.zstd.(*cZstd); !ok {
			t.Fatalf("%v: the cgo build's encoder is %T, not the C library's", c, enc.zstd)
		}
		goEnc := newGoZstd(c.zstdLevel())
		for _, in := range [][]byte{exe, dumpLike(7, 1<<20), exe[:1000], nil} {
			frame := enc.encode(in)
			plain, err := decompressBlob(BlobInfo{Codec: CodecZstd, RawLength: uint32(len(in))}, frame)
			if err != nil || !bytes.Equal(plain, in) {
				t.Fatalf("level %d, %d bytes: decoded %d bytes, err %v", c.zstdLevel(), len(in), len(plain), err)
			}
			if len(in) != len(exe) {
				continue
			}
			goSize := len(goEnc.encode(nil, in))
			if r := float64(len(frame)) / float64(goSize); r > 1.1 {
				t.Errorf("level %d: the C frame is %d bytes, %.2fx the Go encoder's %d", c.zstdLevel(), len(frame), r, goSize)
			} else {
				t.Logf("level %d: C %d bytes, Go %d (%.3fx)", c.zstdLevel(), len(frame), goSize, r)
			}
		}
		enc.close()
		goEnc.close()
	}

	// Level 1 has its own parameters (fastestParams): in 256 KiB chunks,
	// amber's average, of a SQL dump and of a binary they make frames no
	// larger than the library's plain level 1.
	enc := CompressFastest.newEncoder()
	defer enc.close()
	for name, in := range map[string][]byte{"executable": exe, "dump": dumpLike(8, 3<<20)} {
		var ours, plain int
		for off := 0; off < len(in); off += 256 << 10 {
			chunk := in[off:min(off+256<<10, len(in))]
			ours += len(enc.encode(chunk))
			frame, err := zstd.CompressLevel(nil, chunk, 1)
			if err != nil {
				t.Fatal(err)
			}
			plain += len(frame)
		}
		t.Logf("%s: fastest %d bytes, the library's level 1 %d (%.3fx)", name, ours, plain, float64(ours)/float64(plain))
		if ours > plain {
			t.Errorf("%s: fastest made %d bytes, more than the library's level 1 (%d)", name, ours, plain)
		}
	}
}

// TestZstdBound: zstdBound is the C library's bound, so a frame written
// into that much room is never moved.
func TestZstdBound(t *testing.T) {
	for _, n := range []int{0, 1, 1000, 128<<10 - 1, 128 << 10, 16 << 20} {
		if got, want := zstdBound(n), zstd.CompressBound(n); got != want {
			t.Errorf("zstdBound(%d) = %d, the library says %d", n, got, want)
		}
	}
}

// TestZstdCDecoder: in a cgo build blobs are decoded by the zstd C library.
// It gives back exactly what either encoder compressed (the Go encoder's
// frames carry a checksum, the C encoder's do not), including an empty
// input; it refuses a frame that decodes to more than the blob's length,
// one whose checksum does not match, and one cut short, naming the cause;
// and it never writes past the room it is given.
func TestZstdCDecoder(t *testing.T) {
	exe, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	exe = exe[:min(len(exe), 2<<20)]
	dump := dumpLike(9, 1<<20)
	goEnc := newGoZstd(1)
	defer goEnc.close()
	cEnc := CompressFastest.newEncoder()
	defer cEnc.close()
	for _, in := range [][]byte{exe, dump, dump[:100], nil} {
		for name, frame := range map[string][]byte{"go": goEnc.encode(nil, in), "c": cEnc.encode(in)} {
			b := BlobInfo{Codec: CodecZstd, RawLength: uint32(len(in))}
			plain, err := decompressBlob(b, frame)
			if err != nil || !bytes.Equal(plain, in) {
				t.Fatalf("%s frame of %d bytes: decoded %d bytes, err %v", name, len(in), len(plain), err)
			}
			if len(in) == 0 {
				continue
			}
			// Room for one byte less than the frame holds: refused.
			guard := bytes.Repeat([]byte{0xa5}, len(in)+64)
			if _, err := decodeZstdBlob(frame, guard[:0:len(in)-1]); err == nil || !strings.Contains(err.Error(), "too small") {
				t.Errorf("%s frame of %d bytes into %d bytes of room: err %v, want the destination too small", name, len(in), len(in)-1, err)
			}
			for i, c := range guard[len(in)-1:] {
				if c != 0xa5 {
					t.Fatalf("%s frame: the decoder wrote byte %d, past its room", name, len(in)-1+i)
				}
			}
			if _, err := decompressBlob(b, frame[:len(frame)-3]); err == nil {
				t.Errorf("%s frame of %d bytes cut short: decoded without error", name, len(in))
			}
		}
	}
	frame := goEnc.encode(nil, dump)
	frame[len(frame)-1] ^= 1 // the last byte of the frame's checksum
	if _, err := decompressBlob(BlobInfo{Codec: CodecZstd, RawLength: uint32(len(dump))}, frame); err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Errorf("a frame with a wrong checksum: err %v, want a checksum error", err)
	}
}

// BenchmarkZstdDecode decodes 256 KiB chunks, amber's average, compressed
// at `fastest` by the C library's decoder and by the Go decoder of builds
// without cgo. The chunks are cut from the file AMBER_ZSTD_CORPUS (say a
// PostgreSQL table's file) or, without it, from a dump-like text.
func BenchmarkZstdDecode(b *testing.B) {
	in := dumpLike(10, 64<<20)
	if p := os.Getenv("AMBER_ZSTD_CORPUS"); p != "" {
		var err error
		if in, err = os.ReadFile(p); err != nil {
			b.Fatal(err)
		}
	}
	enc := CompressFastest.newEncoder()
	var frames [][]byte
	for off := 0; off+256<<10 <= len(in); off += 256 << 10 {
		frames = append(frames, bytes.Clone(enc.encode(in[off:off+256<<10])))
	}
	enc.close()
	dst := make([]byte, 0, 256<<10+decodeSlack)
	goDec := newGoBlobDecoder()
	defer goDec.Close()
	for _, dec := range []struct {
		name string
		fn   func(frame []byte) ([]byte, error)
	}{
		{"c", func(f []byte) ([]byte, error) { return decodeZstdBlob(f, dst) }},
		{"go", func(f []byte) ([]byte, error) { return goDec.DecodeAll(f, dst[:0]) }},
	} {
		b.Run(dec.name, func(b *testing.B) {
			b.SetBytes(int64(len(frames)) << 18)
			for b.Loop() {
				for _, f := range frames {
					if out, err := dec.fn(f); err != nil || len(out) != 256<<10 {
						b.Fatal(len(out), err)
					}
				}
			}
		})
	}
}
