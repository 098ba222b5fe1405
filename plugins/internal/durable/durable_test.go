package durable

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/amber-backup/amber/conformance/testbed"
)

// pending returns how many of path's pages are dirty and how many are
// being written (testbed.PageCache).
func pending(t *testing.T, path string) (dirty, writeback uint64) {
	t.Helper()
	dirty, writeback, err := testbed.PageCache(path)
	if err != nil {
		t.Fatal(err)
	}
	return dirty, writeback
}

// The test files live on a disk-backed file system (TMPDIR): on one that
// never writes back, such as tmpfs, nothing is ever dirty and the control
// file below fails the test.
func TestWriterAndSync(t *testing.T) {
	dir := t.TempDir()
	block := bytes.Repeat([]byte("amber restores "), 1<<16) // ~1 MiB
	write := func(name string, through bool) []byte {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		var w interface{ Write([]byte) (int, error) } = f
		var dw *Writer
		if through {
			dw = NewWriter(f)
			w = dw
		}
		var all []byte
		for range 20 {
			if _, err := w.Write(block); err != nil {
				t.Fatal(err)
			}
			all = append(all, block...)
		}
		if dw != nil {
			if dw.sent == 0 || dw.n-dw.sent >= every {
				t.Fatalf("write-back started up to %d of %d bytes, want it less than %d behind", dw.sent, dw.n, every)
			}
			dw.End()
			if dw.sent != int64(len(all)) {
				t.Fatalf("after End write-back started up to %d of %d bytes", dw.sent, len(all))
			}
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		return all
	}
	plainWant := write("plain", false)
	viaWant := write("via-writer", true)

	// The plain file's pages wait in the cache; the Writer's are on their
	// way to disk (sync_file_range moves them from dirty to write-back; it
	// may pass over a page the kernel is busy with, so not all of them).
	plain, _ := pending(t, filepath.Join(dir, "plain"))
	if plain == 0 {
		t.Fatalf("the plain file has no dirty page: %s is not on a disk-backed file system", dir)
	}
	if d, _ := pending(t, filepath.Join(dir, "via-writer")); d > plain/2 {
		t.Fatalf("%d pages written through the Writer are still dirty after End (the plain file: %d)", d, plain)
	}

	if err := Sync(dir); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string][]byte{"plain": plainWant, "via-writer": viaWant} {
		p := filepath.Join(dir, name)
		if d, wb := pending(t, p); d != 0 || wb != 0 {
			t.Fatalf("%s after Sync: %d dirty, %d under write-back", name, d, wb)
		}
		if got, err := os.ReadFile(p); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s differs after writing (%v)", name, err)
		}
	}

	missing := filepath.Join(dir, "gone")
	if err := Sync(missing); err == nil || !strings.Contains(err.Error(), missing) {
		t.Fatalf("Sync of a missing directory: %v", err)
	}
}
