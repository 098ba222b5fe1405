//go:build !cgo

package repo

// newZstdEncoder gives builds without cgo the Go encoder (zstd_go.go).
func newZstdEncoder(level int) zstdEncoder { return newGoZstd(level) }
