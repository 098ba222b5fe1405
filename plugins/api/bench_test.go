package api_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"syscall"
	"testing"
	"time"

	"github.com/amber-backup/amber/plugins/api"
	"github.com/amber-backup/amber/plugins/api/apitest"
)

// discardRestore is the fake engine whose physical restore reads every
// entry and keeps nothing: what is left of a restore's cost is the
// protocol's.
type discardRestore struct{ *apitest.Fake }

func (discardRestore) PhysicalRestore(ctx context.Context, _ api.RestoreRequest, src api.EntrySource) (api.RestoreResult, error) {
	buf := make([]byte, 1<<20)
	for {
		_, r, err := src.Next(ctx)
		if errors.Is(err, io.EOF) {
			return api.RestoreResult{}, nil
		}
		if err != nil {
			return api.RestoreResult{}, err
		}
		if _, err := io.CopyBuffer(io.Discard, onlyReader{r}, buf); err != nil {
			return api.RestoreResult{}, err
		}
	}
}

func (d discardRestore) Info(ctx context.Context) (api.Info, error) {
	in, err := d.Fake.Info(ctx)
	in.Capabilities = append(in.Capabilities, api.PhysicalRestore)
	return in, err
}

// bytesSource yields one entry of the given bytes.
type bytesSource struct {
	data []byte
	done bool
}

func (s *bytesSource) Next(context.Context) (api.Entry, io.Reader, error) {
	if s.done {
		return api.Entry{}, nil, io.EOF
	}
	s.done = true
	return api.Entry{Name: "base.tar", Size: int64(len(s.data))}, bytes.NewReader(s.data), nil
}

func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkPhysicalRestoreStream sends a 256 MiB entry from the host to a
// plugin's physical restore, in-process over gRPC (bufconn), as a
// data-directory restore hands the repository's bytes on: MB of the entry
// per CPU-second of both ends.
func BenchmarkPhysicalRestoreStream(b *testing.B) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 16<<20)
	c := connect(b, discardRestore{apitest.NewFake()})
	b.SetBytes(int64(len(data)))
	began := cpuTime(b)
	for b.Loop() {
		if _, err := c.PhysicalRestore(context.Background(), api.RestoreRequest{}, &bytesSource{data: data}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(data))*float64(b.N)/1e6/(cpuTime(b)-began).Seconds(), "MB/cpu-s")
}
