//go:build !cgo

package repo

// newZstdEncoder gives builds without cgo the Go encoder (zstd_go.go).
func newZstdEncoder(level int) zstdEncoder { return newGoZstd(level) }

var zdecBlob = newGoBlobDecoder()

// decodeZstdBlob decodes a blob's zstd frames with the Go decoder; frames
// that decode to more than dst's capacity are decoded into new memory, and
// the caller's length check refuses them.
func decodeZstdBlob(payload, dst []byte) ([]byte, error) { return zdecBlob.DecodeAll(payload, dst[:0]) }
