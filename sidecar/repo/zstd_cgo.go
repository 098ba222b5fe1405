//go:build cgo

package repo

import "github.com/DataDog/zstd"

// cZstd is the zstd C library's encoder (github.com/DataDog/zstd, which
// bundles the library's source), one compression context per writer
// worker. The context's memory is the C library's, freed with the context
// by a finalizer.
type cZstd struct {
	ctx   zstd.Ctx
	level int
}

// newZstdEncoder gives levels 1 to 3 (fastest, default) the C library's
// encoder. Level 7 (better) keeps the Go encoder: its SpeedBetterCompression
// made smaller frames than the C library's level 7 at about its speed on a
// SQL dump and on PostgreSQL table files (docs/benchmarks.md).
func newZstdEncoder(level int) zstdEncoder {
	if level > 3 {
		return newGoZstd(level)
	}
	return &cZstd{ctx: zstd.NewCtx(), level: level}
}

func (z *cZstd) encode(dst, src []byte) []byte {
	out, err := z.ctx.CompressLevel(dst[:cap(dst)], src, z.level)
	if err != nil {
		// Compressing into a buffer of the library's own bound fails only
		// if the library cannot allocate its context: out of memory.
		panic("zstd: " + err.Error())
	}
	return out
}

func (z *cZstd) close() {}
