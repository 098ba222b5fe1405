package pgengine

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// patchSink keeps the entries written to it and their file records, and
// builds patched records from the previous backup's as the host does
// (repo.Patch's definition), so an entry reads as what the host stores.
type patchSink struct {
	prev    map[string]map[string][]byte // the previous backup's records
	entries map[string][]byte
	recs    map[string]map[string][]byte
	stamps  map[string]map[string]string
	patched []string
}

func (s *patchSink) Create(_ context.Context, name string) (io.WriteCloser, error) {
	if s.entries == nil {
		s.entries, s.recs, s.stamps = map[string][]byte{}, map[string]map[string][]byte{}, map[string]map[string]string{}
	}
	s.recs[name], s.stamps[name] = map[string][]byte{}, map[string]string{}
	return &patchWriter{s: s, entry: name}, nil
}

type patchWriter struct {
	s          *patchSink
	entry      string
	out        bytes.Buffer
	key, stamp string
	start      int
	patch      *struct {
		base   string
		keep   int64
		length int64
		ranges []Range
		data   bytes.Buffer
	}
}

func (w *patchWriter) Write(p []byte) (int, error) {
	if w.patch != nil {
		return w.patch.data.Write(p)
	}
	return w.out.Write(p)
}

func (w *patchWriter) end() error {
	if p := w.patch; p != nil {
		base, ok := w.s.prev[w.entry][p.base]
		if !ok {
			return fmt.Errorf("no base record %s", p.base)
		}
		rec := make([]byte, p.length)
		copy(rec, base[:min(p.keep, int64(len(base)), p.length)])
		data := p.data.Bytes()
		for _, r := range p.ranges {
			if int64(len(data)) < r.Len {
				return fmt.Errorf("patch %s: short data", w.key)
			}
			copy(rec[r.Off:r.Off+r.Len], data[:r.Len])
			data = data[r.Len:]
		}
		if len(data) != 0 {
			return fmt.Errorf("patch %s: %d bytes of data left", w.key, len(data))
		}
		w.out.Write(rec)
		w.patch = nil
	}
	if w.key != "" {
		w.s.recs[w.entry][w.key] = bytes.Clone(w.out.Bytes()[w.start:])
		w.s.stamps[w.entry][w.key] = w.stamp
	}
	w.key = ""
	return nil
}

func (w *patchWriter) MarkFile(key, stamp string, _ int64, reuse bool) error {
	if reuse {
		return fmt.Errorf("reuse of %s in a BASE_BACKUP", key)
	}
	if err := w.end(); err != nil {
		return err
	}
	w.key, w.stamp, w.start = key, stamp, w.out.Len()
	return nil
}

func (w *patchWriter) MarkPatch(key, stamp string, length int64, base string, keep int64, ranges []Range) error {
	if err := w.MarkFile(key, stamp, 0, false); err != nil {
		return err
	}
	w.s.patched = append(w.s.patched, key)
	w.patch = &struct {
		base   string
		keep   int64
		length int64
		ranges []Range
		data   bytes.Buffer
	}{base: base, keep: keep, length: length, ranges: ranges}
	return nil
}

func (w *patchWriter) Close() error {
	if err := w.end(); err != nil {
		return err
	}
	w.s.entries[w.entry] = w.out.Bytes()
	return nil
}

type member struct {
	name string
	data []byte // nil: a directory
}

func tarOf(t *testing.T, ms []member) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	mt := time.Unix(1700000000, 0)
	for _, m := range ms {
		h := &tar.Header{Typeflag: tar.TypeReg, Name: m.name, Size: int64(len(m.data)), Mode: 0o600, ModTime: mt}
		if m.data == nil {
			h.Typeflag, h.Size, h.Mode = tar.TypeDir, 0, 0o700
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write(m.data)
	}
	tw.Close()
	return b.Bytes()
}

// untar returns the regular files of a tar by name.
func untar(t *testing.T, b []byte) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			out[h.Name], _ = io.ReadAll(tr)
		}
	}
}

// incrementalFile builds INCREMENTAL.<name> content as the server sends it.
func incrementalFile(trunc uint32, blocks []uint32, contents [][]byte) []byte {
	var b bytes.Buffer
	le := binary.LittleEndian
	binary.Write(&b, le, []uint32{incrementalMagic, uint32(len(blocks)), trunc})
	binary.Write(&b, le, blocks)
	if len(blocks) > 0 && b.Len()%blockSize != 0 {
		b.Write(make([]byte, blockSize-b.Len()%blockSize))
	}
	for _, c := range contents {
		b.Write(c)
	}
	return b.Bytes()
}

func manifestOf(files map[string]int) []byte {
	var b strings.Builder
	b.WriteString("{ \"PostgreSQL-Backup-Manifest-Version\": 2,\n\"System-Identifier\": 1,\n\"Files\": [")
	first := true
	for _, name := range []string{"backup_label", "base/5/16384", "base/5/INCREMENTAL.16384", "base/5/INCREMENTAL.16390", "base/5/16390", "base/5/INCREMENTAL.16400", "base/5/PG_VERSION"} {
		size, ok := files[name]
		if !ok {
			continue
		}
		if !first {
			b.WriteString(",")
		}
		first = false
		fmt.Fprintf(&b, "\n{ \"Path\": %q, \"Size\": %d, \"Last-Modified\": \"2026-11-29 04:00:00 GMT\", \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"0badf00d\" }", name, size)
	}
	b.WriteString("\n],\n\"WAL-Ranges\": [\n{ \"Timeline\": 1, \"Start-LSN\": \"0/2000028\", \"End-LSN\": \"0/2000100\" }\n],\n")
	sum := sha256.Sum256([]byte(b.String()))
	fmt.Fprintf(&b, "\"Manifest-Checksum\": \"%s\"}\n", hex.EncodeToString(sum[:]))
	return []byte(b.String())
}

func blocksOf(seed uint64, n int) []byte {
	b := make([]byte, n*blockSize)
	rng := rand.New(rand.NewPCG(seed, 1))
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// TestRecordSinkIncremental: archives written with records are the same
// files; an incremental archive's INCREMENTAL files become patches that
// rebuild each whole file exactly as pg_combinebackup would (changed
// blocks replaced, the file extended with sent blocks, cut to the
// truncation length, blocks between the old end and the truncation length
// zero), backup_label loses its INCREMENTAL lines, and backup_manifest
// lists the whole files with a valid checksum.
func TestRecordSinkIncremental(t *testing.T) {
	ctx := context.Background()
	grow, shrink, same := blocksOf(1, 10), blocksOf(2, 20), blocksOf(8, 3)
	labelFull := "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nLABEL: amber\n"
	full := tarOf(t, []member{{name: "base", data: nil}, {name: "base/5", data: nil}, {name: "base/5/PG_VERSION", data: []byte("17\n")},
		{name: "base/5/16384", data: grow}, {name: "base/5/16390", data: shrink}, {name: "base/5/16400", data: same}, {name: "backup_label", data: []byte(labelFull)}})
	s1 := &patchSink{}
	rs := &recordSink{es: s1}
	if err := rs.Entry(ctx, BaseTar, bytes.NewReader(full)); err != nil {
		t.Fatal(err)
	}
	if got := untar(t, s1.entries[BaseTar]); !bytes.Equal(got["base/5/16384"], grow) || len(got) != 5 {
		t.Fatalf("full archive rewritten wrong: %d files", len(got))
	}
	if len(s1.recs[BaseTar]) != 5 || rs.whole != 5 {
		t.Fatalf("records %d, whole %d; want 5", len(s1.recs[BaseTar]), rs.whole)
	}

	// 16384: block 3 changed, blocks 10 and 11 added, truncation length 10.
	// 16390: cut to 12 blocks, block 0 changed; then extended to 14 with
	// block 13 sent: block 12 is zero (not sent, past the truncation
	// length).
	b3, b10, b11, s0, s13 := blocksOf(3, 1), blocksOf(4, 1), blocksOf(5, 1), blocksOf(6, 1), blocksOf(7, 1)
	wantGrow := append(append(bytes.Clone(grow), b10...), b11...)
	copy(wantGrow[3*blockSize:], b3)
	wantShrink := append(append(bytes.Clone(shrink[:12*blockSize]), make([]byte, blockSize)...), s13...)
	copy(wantShrink, s0)
	inc1 := incrementalFile(10, []uint32{3, 10, 11}, [][]byte{b3, b10, b11})
	inc2 := incrementalFile(12, []uint32{0, 13}, [][]byte{s0, s13})
	inc3 := incrementalFile(3, nil, nil) // unchanged: the same header too, so no byte is sent
	labelInc := "START WAL LOCATION: 0/5000028 (file 000000010000000000000005)\nINCREMENTAL FROM LSN: 0/2000028\nINCREMENTAL FROM TLI: 1\nLABEL: amber\n"
	incTar := tarOf(t, []member{{name: "base", data: nil}, {name: "base/5", data: nil}, {name: "base/5/PG_VERSION", data: []byte("17\n")},
		{name: "base/5/INCREMENTAL.16384", data: inc1}, {name: "base/5/INCREMENTAL.16390", data: inc2},
		{name: "base/5/INCREMENTAL.16400", data: inc3}, {name: "backup_label", data: []byte(labelInc)}})
	manifest := manifestOf(map[string]int{"backup_label": len(labelInc), "base/5/INCREMENTAL.16384": len(inc1),
		"base/5/INCREMENTAL.16390": len(inc2), "base/5/INCREMENTAL.16400": len(inc3), "base/5/PG_VERSION": 3})

	s2 := &patchSink{prev: s1.recs}
	prev := map[string]map[string]PreviousRecord{BaseTar: {}}
	for k, v := range s1.recs[BaseTar] {
		prev[BaseTar][k] = PreviousRecord{Stamp: s1.stamps[BaseTar][k], Length: int64(len(v))}
	}
	rs2 := &recordSink{es: s2, inc: &IncrementalBase{SystemID: "1", Manifest: []byte("{}"), Records: prev}}
	if err := rs2.Entry(ctx, BaseTar, bytes.NewReader(incTar)); err != nil {
		t.Fatal(err)
	}
	if err := rs2.Entry(ctx, ManifestEntry, bytes.NewReader(manifest)); err != nil {
		t.Fatal(err)
	}
	got := untar(t, s2.entries[BaseTar])
	if !bytes.Equal(got["base/5/16384"], wantGrow) {
		t.Errorf("16384 rebuilt with %d bytes, want %d (or different bytes)", len(got["base/5/16384"]), len(wantGrow))
	}
	if !bytes.Equal(got["base/5/16390"], wantShrink) {
		t.Errorf("16390 rebuilt with %d bytes, want %d (or different bytes)", len(got["base/5/16390"]), len(wantShrink))
	}
	if !bytes.Equal(got["base/5/16400"], same) {
		t.Errorf("16400 rebuilt with %d bytes, want %d (or different bytes)", len(got["base/5/16400"]), len(same))
	}
	if _, ok := got["base/5/INCREMENTAL.16384"]; ok || len(got) != 5 {
		t.Errorf("incremental files stored: %d files", len(got))
	}
	wantLabel := "START WAL LOCATION: 0/5000028 (file 000000010000000000000005)\nLABEL: amber\n"
	if string(got["backup_label"]) != wantLabel {
		t.Errorf("backup_label %q", got["backup_label"])
	}
	if len(s2.patched) != 3 || rs2.patched != 3 || rs2.whole != 2 {
		t.Errorf("patched %v (%d), whole %d", s2.patched, rs2.patched, rs2.whole)
	}

	m := string(s2.entries[ManifestEntry])
	for _, want := range []string{
		fmt.Sprintf(`{ "Path": "base/5/16384", "Size": %d, "Last-Modified": "2026-11-29 04:00:00 GMT" },`, len(wantGrow)),
		fmt.Sprintf(`{ "Path": "base/5/16390", "Size": %d, "Last-Modified": "2026-11-29 04:00:00 GMT" },`, len(wantShrink)),
		fmt.Sprintf(`{ "Path": "backup_label", "Size": %d, "Last-Modified": "2026-11-29 04:00:00 GMT" },`, len(wantLabel)),
		`"Path": "base/5/PG_VERSION", "Size": 3, "Last-Modified": "2026-11-29 04:00:00 GMT", "Checksum-Algorithm": "CRC32C"`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("manifest lacks %s:\n%s", want, m)
		}
	}
	i := strings.LastIndex(m, `"Manifest-Checksum": "`)
	sum := sha256.Sum256([]byte(m[:i]))
	if !strings.HasSuffix(m, hex.EncodeToString(sum[:])+"\"}\n") {
		t.Errorf("manifest checksum not recomputed:\n%s", m[i:])
	}

	// A full backup's archive must hold no incremental file, and a patch
	// needs the previous backup's record.
	if err := (&recordSink{es: &patchSink{}}).Entry(ctx, BaseTar, bytes.NewReader(incTar)); err == nil || !strings.Contains(err.Error(), "full backup") {
		t.Errorf("incremental file in a full backup: %v", err)
	}
	delete(prev[BaseTar], "base/5/16390")
	err := (&recordSink{es: &patchSink{prev: s1.recs}, inc: rs2.inc}).Entry(ctx, BaseTar, bytes.NewReader(incTar))
	if err == nil || !strings.Contains(err.Error(), "no record of base/5/16390") {
		t.Errorf("patch without a base: %v", err)
	}
}

// FuzzIncrementalHeader: any bytes the server sends as an incremental file
// are refused or read as a header whose blocks fit the file's size.
func FuzzIncrementalHeader(f *testing.F) {
	f.Add(incrementalFile(10, []uint32{3, 10}, [][]byte{make([]byte, blockSize), make([]byte, blockSize)}), int64(3*blockSize))
	f.Add(incrementalFile(3, nil, nil), int64(12))
	f.Add([]byte{0x0d, 0x1f, 0xae, 0xd3, 0xff, 0xff, 0xff, 0xff}, int64(8))
	f.Fuzz(func(t *testing.T, b []byte, size int64) {
		h, err := readIncrementalHeader(bytes.NewReader(b), size)
		if err != nil {
			return
		}
		if len(h.blocks) > relSegBlocks || h.truncation > relSegBlocks || size < int64(len(h.blocks))*blockSize {
			t.Fatalf("header %d blocks, truncation %d accepted for %d bytes", len(h.blocks), h.truncation, size)
		}
	})
}

// FuzzRecordStamp: a stamp read back from the repository parses or is
// refused, never with a header length below one.
func FuzzRecordStamp(f *testing.F) {
	f.Add(recordStamp(make([]byte, 512), 8192))
	f.Add("bb:0:1:x")
	f.Fuzz(func(t *testing.T, s string) {
		if h, n, _, ok := parseRecordStamp(s); ok && (h <= 0 || n < 0) {
			t.Fatalf("%q parsed as header %d, size %d", s, h, n)
		}
	})
}
