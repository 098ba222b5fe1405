package repo

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/amber-backup/amber/sidecar/storage"
	"github.com/amber-backup/amber/sidecar/storage/file"
	"github.com/klauspost/compress/s2"
)

// benchStreamSize is the length of the stream every benchmark backs up.
const benchStreamSize = 256 << 20

var benchStream = sync.OnceValue(func() []byte { return dumpLike(1, benchStreamSize) })

// dumpLike returns n bytes shaped like the rows of a plain pg_dump: numbers,
// timestamps, e-mail addresses and random hex digits. Like a real dump it
// compresses about 2-3x, unlike pure noise (incompressible) or repeated
// filler (which flatters every compressor).
func dumpLike(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	const hexdigits = "0123456789abcdef"
	b := make([]byte, 0, n+256)
	ts := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	for id := int64(1); len(b) < n; id++ {
		b = strconv.AppendInt(b, id, 10)
		b = append(b, '\t')
		b = ts.Add(time.Duration(id%5000000)*7*time.Second).AppendFormat(b, "2006-01-02 15:04:05+00")
		b = append(b, '\t')
		cents := rng.IntN(10000000)
		b = strconv.AppendInt(b, int64(cents/100), 10)
		b = append(b, '.', byte('0'+cents/10%10), byte('0'+cents%10))
		b = append(b, "\tuser"...)
		b = strconv.AppendInt(b, int64(rng.IntN(1000000)), 10)
		b = append(b, "@example.com\t"...)
		for k, extra := 0, 33+rng.IntN(32); k < 32+extra; k++ {
			if k == 32 {
				b = append(b, ' ')
				continue
			}
			b = append(b, hexdigits[rng.IntN(16)])
		}
		b = append(b, '\n')
	}
	return b[:n]
}

// benchRepo creates a repository in a fresh directory under b.TempDir()
// and returns it with that directory.
func benchRepo(b *testing.B) (*Repository, string) {
	b.Helper()
	return benchRepoWith(b, Compression(0))
}

// benchRepoWith is benchRepo whose writers store data compressed with c.
func benchRepoWith(b *testing.B, c Compression) (*Repository, string) {
	b.Helper()
	dir, err := os.MkdirTemp(b.TempDir(), "repo")
	if err != nil {
		b.Fatal(err)
	}
	be, err := file.Open(dir, false)
	if err != nil {
		b.Fatal(err)
	}
	r, err := Init(context.Background(), be, []byte("secret"), Options{KDF: KDFParams{Time: 1, Memory: 1024, Threads: 1}, CacheDir: "-", Compression: c})
	if err != nil {
		b.Fatal(err)
	}
	return r, dir
}

// benchBackup backs data up as one stream and commits it.
func benchBackup(b *testing.B, r *Repository, data []byte) *Manifest {
	b.Helper()
	ctx := context.Background()
	w, err := r.NewWriter(ctx)
	if err != nil {
		b.Fatal(err)
	}
	e, err := w.WriteStream(ctx, "stdin", bytes.NewReader(data))
	if err != nil {
		b.Fatal(err)
	}
	m := &Manifest{Name: "bench", Start: time.Now(), Entries: []Entry{e}}
	if _, err := w.Commit(ctx, m); err != nil {
		b.Fatal(err)
	}
	return m
}

// BenchmarkBackupNew backs up a stream the repository has never seen: every
// chunk is hashed, compressed, encrypted and written.
func BenchmarkBackupNew(b *testing.B) {
	data := benchStream()
	b.SetBytes(int64(len(data)))
	var added int64
	for b.Loop() {
		b.StopTimer()
		r, dir := benchRepo(b)
		b.StartTimer()
		m := benchBackup(b, r, data)
		b.StopTimer()
		added = m.BytesAdded
		r.Close()
		os.RemoveAll(dir)
		b.StartTimer()
	}
	b.ReportMetric(float64(added)/float64(len(data)), "stored/in")
}

// BenchmarkBackupUnchanged backs up again a stream already in the
// repository: every chunk is still read, chunked and hashed, none stored.
func BenchmarkBackupUnchanged(b *testing.B) {
	data := benchStream()
	r, _ := benchRepo(b)
	defer r.Close()
	benchBackup(b, r, data)
	b.SetBytes(int64(len(data)))
	var added int64
	for b.Loop() {
		added = benchBackup(b, r, data).BytesAdded
	}
	b.ReportMetric(float64(added), "bytes-added")
}

// BenchmarkRestore writes a backed-up stream back out: every chunk is read,
// authenticated, decrypted and decompressed in order.
func BenchmarkRestore(b *testing.B) {
	data := benchStream()
	r, _ := benchRepo(b)
	defer r.Close()
	m := benchBackup(b, r, data)
	h := sha256.New()
	if err := r.WriteEntry(context.Background(), m.Entries[0], h); err != nil {
		b.Fatal(err)
	}
	if want := sha256.Sum256(data); !bytes.Equal(h.Sum(nil), want[:]) {
		b.Fatal("restored stream differs from the one backed up")
	}
	loads := &countLoads{Backend: r.be}
	r.be = loads
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if err := r.WriteEntry(context.Background(), m.Entries[0], io.Discard); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(loads.n.Load())/float64(b.N), "loads/op")
}

// countLoads counts the reads a restore makes: on object storage each is a
// request, with its latency and its price.
type countLoads struct {
	storage.Backend
	n atomic.Int64
}

func (c *countLoads) Load(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	c.n.Add(1)
	return c.Backend.Load(ctx, name, offset, length)
}

// BenchmarkRestoreToFile restores a backed-up stream as a data-directory
// restore moves it: WriteEntry into a pipe, read 1 MiB at a time (as the
// plugin protocol frames it) and written to a file. It reports MB of the
// stream per CPU-second of the whole process.
func BenchmarkRestoreToFile(b *testing.B) {
	data := benchStream()
	r, dir := benchRepo(b)
	defer r.Close()
	m := benchBackup(b, r, data)
	f, err := os.Create(dir + "/restored")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	restore := func() {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			b.Fatal(err)
		}
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(r.WriteEntry(context.Background(), m.Entries[0], pw)) }()
		for {
			n, err := io.ReadFull(pr, buf)
			if _, werr := f.Write(buf[:n]); werr != nil {
				b.Fatal(werr)
			}
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	restore()
	got, err := os.ReadFile(f.Name())
	if err != nil {
		b.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		b.Fatal("restored file differs from the stream backed up")
	}
	b.SetBytes(int64(len(data)))
	began := cpuTime(b)
	for b.Loop() {
		restore()
	}
	b.ReportMetric(float64(len(data))*float64(b.N)/1e6/(cpuTime(b)-began).Seconds(), "MB/cpu-s")
}

// cpuTime is the CPU time (user and system) the process has used so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkCompression backs up the dump-like stream into a new repository
// and restores it, once per compression setting, and reports what a user
// choosing between them weighs: MB (10^6 bytes) of input per CPU-second of
// the whole process (wall time on shared cores says little), and stored
// bytes per input byte.
func BenchmarkCompression(b *testing.B) {
	data := benchStream()
	for _, c := range []struct {
		name string
		c    Compression
	}{{"zstd-fastest", CompressFastest}, {"s2", CompressS2}} {
		b.Run("backup/"+c.name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			var added int64
			var cpu time.Duration
			for b.Loop() {
				b.StopTimer()
				r, dir := benchRepoWith(b, c.c)
				began := cpuTime(b)
				b.StartTimer()
				m := benchBackup(b, r, data)
				b.StopTimer()
				cpu += cpuTime(b) - began
				added = m.BytesAdded
				r.Close()
				os.RemoveAll(dir)
				b.StartTimer()
			}
			b.ReportMetric(float64(len(data))*float64(b.N)/1e6/cpu.Seconds(), "MB/cpu-s")
			b.ReportMetric(float64(added)/float64(len(data)), "stored/in")
		})
		b.Run("restore/"+c.name, func(b *testing.B) {
			r, _ := benchRepoWith(b, c.c)
			defer r.Close()
			m := benchBackup(b, r, data)
			b.SetBytes(int64(len(data)))
			began := cpuTime(b)
			for b.Loop() {
				if err := r.WriteEntry(context.Background(), m.Entries[0], io.Discard); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(data))*float64(b.N)/1e6/(cpuTime(b)-began).Seconds(), "MB/cpu-s")
		})
	}
}

// BenchmarkCodecs compresses the dump-like stream in 256 KiB pieces (the
// average chunk) with each codec amber could use for data blobs, on one
// core: the codec's cost alone, without chunking, hashing or encryption.
// S2's better level is here to show why `s2` uses S2's default level.
func BenchmarkCodecs(b *testing.B) {
	data := benchStream()[:32<<20]
	const piece = 256 << 10
	zenc := CompressFastest.newEncoder()
	defer zenc.close()
	for _, c := range []struct {
		name string
		enc  func(dst, src []byte) []byte
	}{
		{"zstd-fastest", func(_, src []byte) []byte { return zenc.encode(src) }},
		{"s2", s2.Encode},
		{"s2-better", s2.EncodeBetter},
	} {
		b.Run(c.name, func(b *testing.B) {
			dst := make([]byte, s2.MaxEncodedLen(piece))
			b.SetBytes(int64(len(data)))
			var out int
			for b.Loop() {
				out = 0
				for i := 0; i < len(data); i += piece {
					out += len(c.enc(dst, data[i:min(i+piece, len(data))]))
				}
			}
			b.ReportMetric(float64(out)/float64(len(data)), "stored/in")
		})
	}
}

// BenchmarkBackupManyStreams backs up 32 MiB of the dump-like stream as
// 512 streams of 64 KiB, as a logical backup stores many small tables:
// what a stream costs beyond its bytes.
func BenchmarkBackupManyStreams(b *testing.B) {
	data := benchStream()[:32<<20]
	const streams = 512
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		b.StopTimer()
		r, dir := benchRepo(b)
		b.StartTimer()
		ctx := context.Background()
		w, err := r.NewWriter(ctx)
		if err != nil {
			b.Fatal(err)
		}
		m := &Manifest{Name: "bench", Start: time.Now()}
		size := len(data) / streams
		for i := range streams {
			e, err := w.WriteStream(ctx, "t"+strconv.Itoa(i), bytes.NewReader(data[i*size:(i+1)*size]))
			if err != nil {
				b.Fatal(err)
			}
			m.Entries = append(m.Entries, e)
		}
		if _, err := w.Commit(ctx, m); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		r.Close()
		os.RemoveAll(dir)
		b.StartTimer()
	}
}
