package pgengine

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// frames reads r at most 1 MiB at a time, as a restore's entry arrives
// from the plugin protocol.
type frames struct{ r io.Reader }

func (f frames) Read(p []byte) (int, error) { return f.r.Read(p[:min(len(p), 1<<20)]) }

// BenchmarkExtractBase extracts a 264 MiB base.tar shaped like a data
// directory (eight 1 GiB-segment-like files of 32 MiB, 1024 files of 8 KiB)
// into a fresh directory: MB of the tar per CPU-second of the process.
func BenchmarkExtractBase(b *testing.B) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(name string, body []byte) {
		if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o600, Size: int64(len(body)), ModTime: time.Unix(1e9, 0)}); err != nil {
			b.Fatal(err)
		}
		if _, err := tw.Write(body); err != nil {
			b.Fatal(err)
		}
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 2<<20)
	small := bytes.Repeat([]byte("pg"), 4<<10)
	add("PG_VERSION", []byte("15\n"))
	for i := range 8 {
		add(fmt.Sprintf("base/5/%d", 16384+i), big)
	}
	for i := range 1024 {
		add(fmt.Sprintf("base/5/%d", 20000+i), small)
	}
	if err := tw.Close(); err != nil {
		b.Fatal(err)
	}
	data := buf.Bytes()
	parent := b.TempDir()
	cpu := func() time.Duration {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			b.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	b.SetBytes(int64(len(data)))
	var used time.Duration
	i := 0
	for b.Loop() {
		dir := filepath.Join(parent, fmt.Sprint(i))
		i++
		began := cpu()
		if err := ExtractBase(context.Background(), dir, frames{bytes.NewReader(data)}); err != nil {
			b.Fatal(err)
		}
		used += cpu() - began
		b.StopTimer()
		if got, err := os.ReadFile(filepath.Join(dir, "base/5/16391")); err != nil || !bytes.Equal(got, big) {
			b.Fatalf("extracted file differs: %v", err)
		}
		os.RemoveAll(dir)
		b.StartTimer()
	}
	b.ReportMetric(float64(len(data))*float64(b.N)/1e6/used.Seconds(), "MB/cpu-s")
}
