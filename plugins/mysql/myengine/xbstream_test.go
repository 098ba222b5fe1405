package myengine

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// xbWriter builds xbstreams as mariadb-backup writes them.
type xbWriter struct{ bytes.Buffer }

func (w *xbWriter) header(typ byte, path string) {
	w.WriteString(xbMagic)
	w.WriteByte(0)
	w.WriteByte(typ)
	binary.Write(&w.Buffer, binary.LittleEndian, uint32(len(path)))
	w.WriteString(path)
}

func (w *xbWriter) payload(path string, offset int64, data []byte) {
	w.header(xbPayload, path)
	binary.Write(&w.Buffer, binary.LittleEndian, uint64(len(data)))
	binary.Write(&w.Buffer, binary.LittleEndian, uint64(offset))
	binary.Write(&w.Buffer, binary.LittleEndian, crc32.ChecksumIEEE(data))
	w.Write(data)
}

func (w *xbWriter) eof(path string) { w.header(xbEOF, path) }

// sampleStream: two files whose chunks interleave (--parallel), an empty
// file, and a file in a subdirectory.
func sampleStream() (*xbWriter, map[string]string) {
	var w xbWriter
	w.payload("ibdata1", 0, []byte("first "))
	w.payload("app/t.ibd", 0, []byte("table "))
	w.payload("ibdata1", 6, []byte("second"))
	w.eof("mysql/general_log.CSM")
	w.payload("app/t.ibd", 6, []byte("rows"))
	w.eof("ibdata1")
	w.eof("app/t.ibd")
	w.payload("./xtrabackup_binlog_info", 0, []byte("mysql-bin.000003\t1532\t0-1-42\n"))
	w.eof("./xtrabackup_binlog_info")
	return &w, map[string]string{
		"ibdata1": "first second", "app/t.ibd": "table rows", "mysql/general_log.CSM": "",
		"xtrabackup_binlog_info": "mysql-bin.000003\t1532\t0-1-42\n",
	}
}

func readTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	got := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(dir, p)
		got[filepath.ToSlash(rel)] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestExtractXBStream(t *testing.T) {
	w, want := sampleStream()
	dir := filepath.Join(t.TempDir(), "data")
	files, n, err := ExtractXBStream(context.Background(), dir, bytes.NewReader(w.Bytes()), ExtractOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := readTree(t, dir)
	if files != 4 || n != 51 || len(got) != len(want) {
		t.Fatalf("extracted %d files, %d bytes: %q", files, n, got)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	// The backup stream reader keeps the metadata files as they pass.
	res := &PhysicalResult{Meta: map[string][]byte{}}
	var copied bytes.Buffer
	if err := readBackupStream(bytes.NewReader(w.Bytes()), &copied, res); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(copied.Bytes(), w.Bytes()) {
		t.Error("the backup stream was not passed through byte for byte")
	}
	pos, err := ParseBinlogInfo(res.Meta[BinlogInfoFile])
	if err != nil || pos.Text() != "mysql-bin.000003:1532 (0-1-42)" || res.ConsistentTime.IsZero() {
		t.Errorf("binlog info %q: %v %v, time %v", res.Meta[BinlogInfoFile], pos.Text(), err, res.ConsistentTime)
	}
	if _, _, err := ExtractXBStream(context.Background(), dir, bytes.NewReader(w.Bytes()), ExtractOptions{}); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("extract into a non-empty directory: %v", err)
	}
}

func TestParseBinlogInfo(t *testing.T) {
	for in, want := range map[string]string{
		"mysql-bin.000001\t392699\t0-1-5\n": "mysql-bin.000001:392699 (0-1-5)",
		"mysql-bin.000002\t4\t\n":           "mysql-bin.000002:4",
		"binlog.000003\t157\t3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5,\n3e11fa47-71ca-11e1-9e33-c80aa9429563:1-2\n": "binlog.000003:157 (3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5,3e11fa47-71ca-11e1-9e33-c80aa9429563:1-2)",
	} {
		p, err := ParseBinlogInfo([]byte(in))
		if err != nil || p.Text() != want || p.Epoch != 1 {
			t.Errorf("%q: %q %v, want %q", in, p.Text(), err, want)
		}
	}
	for _, bad := range []string{"", "mysql-bin.000001", "mysql-bin\t12\t", "mysql-bin.000001\tx\t"} {
		if _, err := ParseBinlogInfo([]byte(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

// TestExtractXBStreamRefuses: damaged or hostile streams fail, naming the
// problem, and never write outside the data directory.
func TestExtractXBStreamRefuses(t *testing.T) {
	good, _ := sampleStream()
	flipped := bytes.Clone(good.Bytes())
	flipped[bytes.Index(flipped, []byte("second"))] ^= 1
	cases := map[string]struct {
		stream []byte
		want   string
	}{
		"checksum":  {flipped, "checksum of ibdata1"},
		"truncated": {good.Bytes()[:len(good.Bytes())-40], "ends inside"},
		"no eof":    {good.Bytes()[:bytes.LastIndex(good.Bytes(), []byte(xbMagic))], "ends inside xtrabackup_binlog_info"},
		"magic":     {append([]byte("XBSTCK02"), good.Bytes()[8:]...), "no chunk magic"},
	}
	for _, p := range []string{"../escape", "/abs/file", "a/../../escape", "a//b", ""} {
		var w xbWriter
		w.payload(p, 0, []byte("x"))
		w.eof(p)
		cases["path "+p] = struct {
			stream []byte
			want   string
		}{w.Bytes(), "path"}
	}
	var gap xbWriter
	gap.payload("f", 0, []byte("abc"))
	gap.payload("f", 10, []byte("def"))
	cases["offset gap"] = struct {
		stream []byte
		want   string
	}{gap.Bytes(), "expected 3"}
	var unknown xbWriter
	unknown.header('S', "f")
	cases["unknown type"] = struct {
		stream []byte
		want   string
	}{unknown.Bytes(), "unknown"}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			parent := t.TempDir()
			_, _, err := ExtractXBStream(context.Background(), filepath.Join(parent, "data"), bytes.NewReader(c.stream), ExtractOptions{})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want one mentioning %q", err, c.want)
			}
			if !errors.Is(err, errXB) {
				t.Errorf("err %v does not say the stream is malformed", err)
			}
			assertOnlyData(t, parent)
		})
	}
}

func assertOnlyData(t *testing.T, parent string) {
	t.Helper()
	ents, _ := os.ReadDir(parent)
	for _, e := range ents {
		if e.Name() != "data" {
			t.Errorf("the extraction wrote %s outside the data directory", e.Name())
		}
	}
}

// FuzzExtractXBStream: whatever the bytes, extraction returns (no panic,
// no unbounded allocation) and writes only beneath the data directory.
func FuzzExtractXBStream(f *testing.F) {
	w, _ := sampleStream()
	f.Add(w.Bytes())
	var evil xbWriter
	evil.payload("../x", 0, []byte("x"))
	f.Add(evil.Bytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		parent := t.TempDir()
		ExtractXBStream(context.Background(), filepath.Join(parent, "data"), bytes.NewReader(b), ExtractOptions{MaxOpen: 8})
		assertOnlyData(t, parent)
		res := &PhysicalResult{Meta: map[string][]byte{}}
		var sink bytes.Buffer
		if err := readBackupStream(bytes.NewReader(b), &sink, res); err == nil && !bytes.Equal(sink.Bytes(), b) {
			t.Fatal("a stream read without error was not passed through whole")
		}
	})
}

// BenchmarkBackupStream: what a physical backup costs the plugin per byte
// of the tool's stream (parsing it, checking every chunk's CRC-32 and
// passing the bytes on), here 64 MiB in 10 MiB chunks as mariadb-backup
// writes them.
func BenchmarkBackupStream(b *testing.B) {
	var w xbWriter
	data := bytes.Repeat([]byte("0123456789abcdef"), 10<<20/16)
	for off := int64(0); off < 60<<20; off += int64(len(data)) {
		w.payload("ibdata1", off, data)
	}
	w.payload(BinlogInfoFile, 0, []byte("mysql-bin.000001\t4\t0-1-1\n"))
	w.eof("ibdata1")
	stream := w.Bytes()
	b.SetBytes(int64(len(stream)))
	for b.Loop() {
		res := &PhysicalResult{Meta: map[string][]byte{}}
		var out countWriter
		if err := readBackupStream(bytes.NewReader(stream), &out, res); err != nil {
			b.Fatal(err)
		}
		if out.n != int64(len(stream)) {
			b.Fatalf("passed on %d bytes of %d", out.n, len(stream))
		}
	}
}

type countWriter struct{ n int64 }

func (w *countWriter) Write(p []byte) (int, error) { w.n += int64(len(p)); return len(p), nil }
