//go:build cgo

package repo

/*
#include <stddef.h>

// zstd's advanced compression API and its decompression context (zstd.h,
// stable since v1.4.0), from the copy of the C library that
// github.com/DataDog/zstd bundles and links; that package wraps only the
// simple API, which cannot set parameters or reuse a context.
typedef struct ZSTD_CCtx_s ZSTD_CCtx;
typedef struct ZSTD_DCtx_s ZSTD_DCtx;
ZSTD_CCtx* ZSTD_createCCtx(void);
size_t ZSTD_freeCCtx(ZSTD_CCtx* cctx);
size_t ZSTD_CCtx_setParameter(ZSTD_CCtx* cctx, int param, int value);
size_t ZSTD_compress2(ZSTD_CCtx* cctx, void* dst, size_t dstCapacity, const void* src, size_t srcSize);
ZSTD_DCtx* ZSTD_createDCtx(void);
size_t ZSTD_freeDCtx(ZSTD_DCtx* dctx);
size_t ZSTD_decompressDCtx(ZSTD_DCtx* dctx, void* dst, size_t dstCapacity, const void* src, size_t srcSize);
unsigned ZSTD_isError(size_t code);
const char* ZSTD_getErrorName(size_t code);
*/
import "C"

import (
	"errors"
	"runtime"
	"strconv"
	"sync"
	"unsafe"

	_ "github.com/DataDog/zstd" // the C library the declarations above link to
)

// ZSTD_cParameter values (zstd.h).
const (
	zstdCLevel    = 100
	zstdWindowLog = 101
	zstdHashLog   = 102
	zstdChainLog  = 103
	zstdSearchLog = 104
	zstdMinMatch  = 105
	zstdStrategy  = 107

	zstdFast = 1 // ZSTD_strategy ZSTD_fast
)

// fastestParams are level 1's parameters (the library's row for inputs
// above 256 KiB) with a minimum match of 5 bytes instead of 6, set for
// every blob whatever its size. The library would give chunks of 256 KiB
// or less (amber's chunks are 64 KiB to 2 MiB, 256 KiB on average) a
// larger hash table and a smaller window instead. Measured over amber's
// chunk sizes with the C library (docs/benchmarks.md), against plain
// level 1 and in the same CPU time: 3.8% smaller over a PostgreSQL data
// directory, 0.3% over its SQL dump, 0.3% over text files and 1.6% over
// shared libraries. Smaller hash tables gained more on the data directory
// but lost on text and binaries, so they are not used.
var fastestParams = [][2]C.int{
	{zstdStrategy, zstdFast},
	{zstdWindowLog, 19},
	{zstdChainLog, 12},
	{zstdHashLog, 13},
	{zstdSearchLog, 1},
	{zstdMinMatch, 5},
}

// cZstd is the zstd C library's encoder, one compression context per
// writer worker, freed by close (or, if a writer forgets, by the garbage
// collector).
type cZstd struct {
	ctx     *C.ZSTD_CCtx
	cleanup runtime.Cleanup
}

// newZstdEncoder gives levels 1 to 3 (fastest, default) the C library's
// encoder. Level 7 (better) keeps the Go encoder: its SpeedBetterCompression
// made smaller frames than the C library's level 7 at about its speed on a
// SQL dump and on PostgreSQL table files (docs/benchmarks.md).
func newZstdEncoder(level int) zstdEncoder {
	if level > 3 {
		return newGoZstd(level)
	}
	ctx := C.ZSTD_createCCtx()
	if ctx == nil {
		panic("zstd: cannot allocate a compression context: out of memory")
	}
	z := &cZstd{ctx: ctx}
	z.cleanup = runtime.AddCleanup(z, func(ctx *C.ZSTD_CCtx) { C.ZSTD_freeCCtx(ctx) }, ctx)
	z.set(zstdCLevel, C.int(level))
	if level == 1 {
		for _, p := range fastestParams {
			z.set(p[0], p[1])
		}
	}
	return z
}

func (z *cZstd) set(param, value C.int) {
	if r := C.ZSTD_CCtx_setParameter(z.ctx, param, value); C.ZSTD_isError(r) != 0 {
		// Every parameter above is within the bounds of every zstd since
		// v1.4.0: a failure is a programming error.
		panic("zstd: parameter " + strconv.Itoa(int(param)) + ": " + C.GoString(C.ZSTD_getErrorName(r)))
	}
}

func (z *cZstd) encode(dst, src []byte) []byte {
	if n := zstdBound(len(src)); cap(dst) < n {
		dst = make([]byte, n)
	}
	dst = dst[:cap(dst)]
	var in unsafe.Pointer
	if len(src) > 0 {
		in = unsafe.Pointer(&src[0])
	}
	r := C.ZSTD_compress2(z.ctx, unsafe.Pointer(&dst[0]), C.size_t(len(dst)), in, C.size_t(len(src)))
	runtime.KeepAlive(z)
	if C.ZSTD_isError(r) != 0 {
		// Compressing into a buffer of the library's own bound fails only
		// if the library cannot allocate its tables: out of memory.
		panic("zstd: " + C.GoString(C.ZSTD_getErrorName(r)))
	}
	return dst[:r]
}

func (z *cZstd) close() {
	if z.ctx != nil {
		z.cleanup.Stop()
		C.ZSTD_freeCCtx(z.ctx)
		z.ctx = nil
	}
}

// cZstdDecoder is a decompression context of the zstd C library, kept in
// zstdDecoders between blobs and freed by the garbage collector with its
// holder.
type cZstdDecoder struct{ ctx *C.ZSTD_DCtx }

var zstdDecoders = sync.Pool{New: func() any {
	ctx := C.ZSTD_createDCtx()
	if ctx == nil {
		panic("zstd: cannot allocate a decompression context: out of memory")
	}
	d := &cZstdDecoder{ctx: ctx}
	runtime.AddCleanup(d, func(ctx *C.ZSTD_DCtx) { C.ZSTD_freeDCtx(ctx) }, ctx)
	return d
}}

// decodeZstdBlob decodes a blob's zstd frames into dst's capacity, which
// the caller sizes to the blob's length (and more): frames that decode to
// more than that are refused, never grown into. The C library decodes the
// frames of both encoders (they are plain RFC 8878) about 1.3 times as fast
// as the Go decoder over a PostgreSQL table's chunks (docs/benchmarks.md).
// It checks a frame's xxhash64 checksum when there is one (the Go
// encoder's); the payload reaching here is already authenticated and its
// output is checked against the blob's id after, so nothing relies on it.
func decodeZstdBlob(payload, dst []byte) ([]byte, error) {
	if cap(dst) == 0 {
		dst = make([]byte, 0, 1) // the library needs an address even for nothing
	}
	dst = dst[:cap(dst)]
	var src unsafe.Pointer
	if len(payload) > 0 {
		src = unsafe.Pointer(&payload[0])
	}
	d := zstdDecoders.Get().(*cZstdDecoder)
	r := C.ZSTD_decompressDCtx(d.ctx, unsafe.Pointer(&dst[0]), C.size_t(len(dst)), src, C.size_t(len(payload)))
	zstdDecoders.Put(d)
	if C.ZSTD_isError(r) != 0 {
		return nil, errors.New(C.GoString(C.ZSTD_getErrorName(r)))
	}
	return dst[:r], nil
}
