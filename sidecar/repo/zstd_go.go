package repo

import "github.com/klauspost/compress/zstd"

// goZstd is github.com/klauspost/compress's encoder: every level's in
// builds without cgo (zstd_nocgo.go), level 7's (better) in builds with it
// (zstd_cgo.go), and what zstd_cgo_test.go checks the C library's against.
type goZstd struct{ enc *zstd.Encoder }

func newGoZstd(level int) goZstd {
	enc, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(level)),
		zstd.WithEncoderConcurrency(1), zstd.WithLowerEncoderMem(true))
	return goZstd{enc}
}

func (z goZstd) encode(dst, src []byte) []byte { return z.enc.EncodeAll(src, dst[:0]) }
func (z goZstd) close()                        { z.enc.Close() }

// newGoBlobDecoder is the Go decoder of data blobs: the reader's in builds
// without cgo (zstd_nocgo.go), and what zstd_cgo_test.go measures the C
// library's against. It skips the frames' xxhash64 checksums: a blob's
// payload is authenticated (AES-GCM) before it is decoded and its content
// checked against its keyed BLAKE3 id after, so the checksum adds only work.
func newGoBlobDecoder() *zstd.Decoder {
	d, _ := zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(maxBlobPlain),
		zstd.WithDecoderMaxWindow(maxBlobPlain), zstd.IgnoreChecksum(true))
	return d
}
