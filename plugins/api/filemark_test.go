package api_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/amber-backup/amber/plugins/api"
)

// markEngine writes entries with file marks, as a plugin with file records.
type markEngine struct {
	api.Unsupported
	got api.BackupRequest
}

func (m *markEngine) Info(context.Context) (api.Info, error) {
	return api.Info{Engine: "mark", Capabilities: []api.Capability{api.PhysicalBackup, api.FileRecords}}, nil
}

func (m *markEngine) Probe(context.Context, api.Target) (api.Probe, error) { return api.Probe{}, nil }

var bigPart = bytes.Repeat([]byte("0123456789abcdef"), 200000) // 3.2 MB: several frames

func (m *markEngine) PhysicalBackup(ctx context.Context, req api.BackupRequest, sink api.EntrySink) (api.BackupResult, error) {
	m.got = req
	w, err := sink.Create(ctx, api.Entry{Name: "e", Kind: "tar"})
	if err != nil {
		return api.BackupResult{}, err
	}
	fm, ok := w.(api.FileMarker)
	if !ok {
		return api.BackupResult{}, errors.New("the entry writer is no FileMarker")
	}
	steps := []func() error{
		func() error { _, err := w.Write([]byte("head")); return err },
		func() error { return fm.MarkFile(api.FileMark{Key: "a", Stamp: "sa"}) },
		func() error { _, err := w.Write(bigPart); return err },
		func() error { return fm.MarkFile(api.FileMark{Key: "b", Stamp: "sb", Length: 77, Reuse: true}) },
		func() error { return fm.MarkFile(api.FileMark{Key: "c", Stamp: "sc"}) },
		func() error { _, err := w.Write([]byte("cc")); return err },
		func() error { return fm.MarkFile(patchMark) },
		func() error { _, err := w.Write([]byte("xyzPQ")); return err },
		func() error { return fm.MarkFile(api.FileMark{}) },
		func() error { _, err := w.Write([]byte("tail")); return err },
		w.Close,
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return api.BackupResult{}, err
		}
	}
	return api.BackupResult{SystemID: "1"}, nil
}

var patchMark = api.FileMark{Key: "d", Stamp: "sd", Length: 20, Base: "b", Keep: 10,
	Ranges: []api.ByteRange{{Offset: 2, Length: 3}, {Offset: 10, Length: 2}}}

type part struct {
	mark api.FileMark
	data string
}

// partSink is a host's FileSink that keeps every part.
type partSink struct{ parts []part }

func (s *partSink) Entry(_ context.Context, _ api.Entry, r io.Reader) error {
	_, err := io.Copy(io.Discard, r)
	return err
}

func (s *partSink) Create(context.Context, api.Entry) (io.WriteCloser, error) {
	return nil, errors.New("an entry without file records")
}

func (s *partSink) FileEntry(ctx context.Context, e api.Entry, src api.PartSource) error {
	for {
		m, r, err := src.Next(ctx)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		p := part{mark: m}
		if r != nil {
			b, err := io.ReadAll(r)
			if err != nil {
				return err
			}
			p.data = string(b)
		}
		s.parts = append(s.parts, p)
	}
}

// TestBackupFileMarks: file marks and reused records travel between data
// frames in order, the previous backup's records reach the plugin, and a
// plugin cannot mark files unless the host asked for file records.
func TestBackupFileMarks(t *testing.T) {
	eng := &markEngine{}
	c := connect(t, eng)
	ctx := context.Background()
	var sink partSink
	prev := &api.PreviousFiles{Backup: "b1", Result: api.BackupResult{SystemID: "1", Metadata: map[string]string{"k": "v"}},
		Files:   []api.PreviousFile{{Entry: "e", Key: "b", Stamp: "sb", Length: 77}},
		Entries: map[string][]byte{"manifest": []byte("{}")}}
	if _, err := c.PhysicalBackup(ctx, api.BackupRequest{FileRecords: true, Previous: prev}, &sink); err != nil {
		t.Fatal(err)
	}
	if p := eng.got.Previous; !eng.got.FileRecords || p == nil || p.Backup != "b1" || p.Result.Metadata["k"] != "v" ||
		len(p.Files) != 1 || p.Files[0] != prev.Files[0] || string(p.Entries["manifest"]) != "{}" {
		t.Fatalf("the plugin got %+v", eng.got)
	}
	want := []part{{data: "head"}, {mark: api.FileMark{Key: "a", Stamp: "sa"}, data: string(bigPart)},
		{mark: api.FileMark{Key: "b", Stamp: "sb", Length: 77, Reuse: true}}, {mark: api.FileMark{Key: "c", Stamp: "sc"}, data: "cc"},
		{mark: patchMark, data: "xyzPQ"}, {data: "tail"}}
	if len(sink.parts) != len(want) {
		t.Fatalf("%d parts, want %d", len(sink.parts), len(want))
	}
	for i := range want {
		if !reflect.DeepEqual(sink.parts[i].mark, want[i].mark) || sink.parts[i].data != want[i].data {
			t.Fatalf("part %d: mark %+v with %d bytes, want %+v with %d", i, sink.parts[i].mark, len(sink.parts[i].data),
				want[i].mark, len(want[i].data))
		}
	}

	// Without file records the plugin's writer refuses marks.
	if _, err := c.PhysicalBackup(ctx, api.BackupRequest{}, &sink); err == nil || !strings.Contains(err.Error(), "did not ask for file records") {
		t.Fatalf("marks without file records: %v", err)
	}
}

// TestPatchMarkChecks: a patch mark whose ranges are out of order, overlap
// or pass its length is refused by the plugin's writer.
func TestPatchMarkChecks(t *testing.T) {
	for _, tc := range []struct {
		name   string
		ranges []api.ByteRange
		length int64
		want   int64
	}{
		{"ok", []api.ByteRange{{Offset: 0, Length: 2}, {Offset: 2, Length: 3}}, 5, 5},
		{"none", nil, 0, 0},
		{"overlap", []api.ByteRange{{Offset: 0, Length: 3}, {Offset: 2, Length: 1}}, 5, -1},
		{"past the end", []api.ByteRange{{Offset: 4, Length: 2}}, 5, -1},
		{"empty", []api.ByteRange{{Offset: 1, Length: 0}}, 5, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := api.PatchSize(tc.ranges, tc.length); got != tc.want {
				t.Fatalf("PatchSize = %d, want %d", got, tc.want)
			}
		})
	}
}

// sendEngine writes an entry with file records whose files it passes to
// the host (api.FileSender) rather than writing their bytes; sendable
// reports whether its writer offered that.
type sendEngine struct {
	markEngine
	files    [3]string // a large file, one shorter than sent, one longer
	sendable bool
}

func (m *sendEngine) PhysicalBackup(ctx context.Context, req api.BackupRequest, sink api.EntrySink) (api.BackupResult, error) {
	w, err := sink.Create(ctx, api.Entry{Name: "e", Kind: "tar"})
	if err != nil {
		return api.BackupResult{}, err
	}
	fm, _ := w.(api.FileMarker)
	fs, ok := w.(api.FileSender)
	m.sendable = ok
	send := func(name string, off, n int64) error {
		if !ok { // the bytes the host would read
			_, err := w.Write(sendBytes(name, off, n))
			return err
		}
		f, err := os.Open(name)
		if err != nil {
			return err
		}
		defer f.Close() // at once: the host holds its own descriptor
		return fs.SendFile(f, off, n)
	}
	steps := []func() error{
		func() error { _, err := w.Write([]byte("head")); return err },
		func() error { return fm.MarkFile(api.FileMark{Key: "a", Stamp: "sa"}) },
		func() error { return send(m.files[0], 0, int64(len(bigPart))) },
		func() error { _, err := w.Write([]byte("pad")); return err },
		func() error { return fm.MarkFile(api.FileMark{Key: "b", Stamp: "sb"}) },
		func() error { return send(m.files[1], 5, 100) },
		func() error { return send(m.files[0], 7, 3) },
		func() error { return fm.MarkFile(api.FileMark{Key: "c", Stamp: "sc"}) },
		func() error { return send(m.files[2], 0, 10) },
		func() error { return fm.MarkFile(api.FileMark{}) },
		func() error { _, err := w.Write([]byte("tail")); return err },
		w.Close,
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return api.BackupResult{}, err
		}
	}
	return api.BackupResult{SystemID: "1"}, nil
}

// sendBytes is what the host reads for SendFile(name, off, n): the file's
// bytes from off, zeros past its end, n in all.
func sendBytes(name string, off, n int64) []byte {
	b, err := os.ReadFile(name)
	if err != nil {
		panic(err)
	}
	out := make([]byte, n)
	if off < int64(len(b)) {
		copy(out, b[off:])
	}
	return out
}

// TestBackupSendFile: files a plugin passes with FileSender reach the
// host's parts exactly where it sent them, between data frames and marks;
// a span past a file's end reads as zeros, one shorter than the file stops
// at its length; the plugin's descriptor may be closed at once. Without
// the pipe socket, or without file records, the writer offers no
// FileSender and the same backup goes as data.
func TestBackupSendFile(t *testing.T) {
	dir := t.TempDir()
	eng := &sendEngine{}
	for i, b := range [][]byte{bigPart, []byte(strings.Repeat("b", 50)), bytes.Repeat([]byte("c"), 1000)} {
		eng.files[i] = filepath.Join(dir, fmt.Sprint(i))
		if err := os.WriteFile(eng.files[i], b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	want := []part{{data: "head"}, {mark: api.FileMark{Key: "a", Stamp: "sa"}, data: string(bigPart) + "pad"},
		{mark: api.FileMark{Key: "b", Stamp: "sb"}, data: strings.Repeat("b", 45) + strings.Repeat("\x00", 55) + "789"},
		{mark: api.FileMark{Key: "c", Stamp: "sc"}, data: strings.Repeat("c", 10)}, {data: "tail"}}
	for _, tc := range []struct {
		name     string
		connect  func(testing.TB, api.Engine) *api.Client
		sendable bool
	}{
		{"pipes", connect, true},
		{"stream", connectStream, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.connect(t, eng)
			var sink partSink
			if _, err := c.PhysicalBackup(context.Background(), api.BackupRequest{FileRecords: true}, &sink); err != nil {
				t.Fatal(err)
			}
			if eng.sendable != tc.sendable {
				t.Fatalf("the entry's writer offers FileSender: %v, want %v", eng.sendable, tc.sendable)
			}
			if len(sink.parts) != len(want) {
				t.Fatalf("%d parts, want %d", len(sink.parts), len(want))
			}
			for i := range want {
				if !reflect.DeepEqual(sink.parts[i].mark, want[i].mark) || sink.parts[i].data != want[i].data {
					t.Fatalf("part %d: mark %+v with %q…, want %+v with %q…", i, sink.parts[i].mark, head(sink.parts[i].data),
						want[i].mark, head(want[i].data))
				}
			}
		})
	}
}

func head(s string) string { return s[:min(len(s), 64)] }
