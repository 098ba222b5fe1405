//go:build cgo

package repo

import (
	"bytes"
	"os"
	"testing"

	"github.com/DataDog/zstd"
)

// TestZstdCEncoder: in a cgo build the writer compresses with the zstd C
// library at levels 1 and 3 (fastest, default) and with the Go encoder at
// level 7 (better); the C library's frames decode, with the reader's Go
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
