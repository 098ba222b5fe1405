package pgengine

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type tarEntry struct {
	name, link string
	typ        byte
	body       string
}

func craftTar(t *testing.T, entries ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: 0o600, Size: int64(len(e.body))}
		if e.typ == tar.TypeDir {
			hdr.Mode = 0o700
		}
		if e.typ != tar.TypeReg {
			hdr.Size = 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if e.typ == tar.TypeReg {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestExtractConfined feeds ExtractBase crafted tar streams that try to
// write outside the data directory. Each must fail, or be confined to the
// data directory; nothing may appear outside it.
func TestExtractConfined(t *testing.T) {
	for _, tc := range []struct {
		name    string
		entries func(outside string) []tarEntry
		mustErr bool
	}{
		{"symlink pg_wal then file through it", func(out string) []tarEntry {
			return []tarEntry{
				{name: "PG_VERSION", typ: tar.TypeReg, body: "15\n"},
				{name: "pg_wal", link: out, typ: tar.TypeSymlink},
				{name: "pg_wal/evil", typ: tar.TypeReg, body: "pwned"},
			}
		}, false},
		{"symlink tablespace then file through it", func(out string) []tarEntry {
			return []tarEntry{
				{name: "pg_tblspc/", typ: tar.TypeDir},
				{name: "pg_tblspc/16384", link: out, typ: tar.TypeSymlink},
				{name: "pg_tblspc/16384/evil", typ: tar.TypeReg, body: "pwned"},
			}
		}, false},
		{"relative symlink to parent then file", func(out string) []tarEntry {
			return []tarEntry{
				{name: "pg_wal", link: "../outside", typ: tar.TypeSymlink},
				{name: "pg_wal/evil", typ: tar.TypeReg, body: "pwned"},
			}
		}, false},
		{"other symlink", func(out string) []tarEntry {
			return []tarEntry{{name: "global", link: out, typ: tar.TypeSymlink}, {name: "global/evil", typ: tar.TypeReg, body: "pwned"}}
		}, true},
		{"dot-dot name", func(out string) []tarEntry {
			return []tarEntry{{name: "../outside/evil", typ: tar.TypeReg, body: "pwned"}}
		}, true},
		{"dot-dot inside name", func(out string) []tarEntry {
			return []tarEntry{{name: "base/../../outside/evil", typ: tar.TypeReg, body: "pwned"}}
		}, true},
		{"absolute name", func(out string) []tarEntry {
			return []tarEntry{{name: filepath.Join(out, "evil"), typ: tar.TypeReg, body: "pwned"}}
		}, true},
		{"hard link escaping", func(out string) []tarEntry {
			return []tarEntry{
				{name: "hl", link: filepath.Join(out, "victim"), typ: tar.TypeLink},
				{name: "hl", typ: tar.TypeReg, body: "pwned"},
			}
		}, true},
		{"hard link by dot-dot", func(out string) []tarEntry {
			return []tarEntry{
				{name: "hl", link: "../outside/victim", typ: tar.TypeLink},
				{name: "hl", typ: tar.TypeReg, body: "pwned"},
			}
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			top := t.TempDir()
			outside := filepath.Join(top, "outside")
			if err := os.Mkdir(outside, 0o700); err != nil {
				t.Fatal(err)
			}
			victim := filepath.Join(outside, "victim")
			if err := os.WriteFile(victim, []byte("original"), 0o600); err != nil {
				t.Fatal(err)
			}
			data := filepath.Join(top, "data")
			err := ExtractBase(context.Background(), data, bytes.NewReader(craftTar(t, tc.entries(outside)...)))
			if tc.mustErr && err == nil {
				t.Errorf("extract succeeded, want an error")
			}
			t.Logf("extract: %v", err)
			ents, _ := os.ReadDir(outside)
			if len(ents) != 1 || ents[0].Name() != "victim" {
				var names []string
				for _, e := range ents {
					names = append(names, e.Name())
				}
				t.Errorf("outside directory now holds %v", names)
			}
			if b, _ := os.ReadFile(victim); string(b) != "original" {
				t.Errorf("file outside the data directory overwritten: %q", b)
			}
			// Whatever was written stays beneath the data directory, and
			// no symlink there leads out.
			filepath.Walk(data, func(p string, fi os.FileInfo, err error) error {
				if err == nil && fi.Mode()&os.ModeSymlink != 0 {
					dst, _ := os.Readlink(p)
					if !strings.HasPrefix(filepath.Clean(filepath.Join(filepath.Dir(p), dst)), data+"/") {
						t.Errorf("symlink %s -> %s leads out of the data directory", p, dst)
					}
				}
				return nil
			})
		})
	}
}

// TestTreeRefusesSymlinks plants symlinks in the target directory directly
// (as a concurrent writer could) and checks that writes never pass through
// them.
func TestTreeRefusesSymlinks(t *testing.T) {
	top := t.TempDir()
	outside := filepath.Join(top, "outside")
	data := filepath.Join(top, "data")
	for _, d := range []string{outside, data} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(outside, "victim"), []byte("original"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(data, "dirlink")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "victim"), filepath.Join(data, "filelink")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(outside, "victim"), filepath.Join(data, "hardlink")); err != nil {
		t.Fatal(err)
	}
	tr, err := openTree(data)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	for _, name := range []string{"dirlink/new", "dirlink/victim", "filelink", "hardlink"} {
		if f, err := tr.Create(name, 0o600); err == nil {
			f.Close()
			t.Errorf("create %s through a link succeeded", name)
		}
	}
	if err := tr.Mkdir("dirlink/sub", 0o700); err == nil {
		t.Errorf("mkdir through a symlink succeeded")
	}
	ents, _ := os.ReadDir(outside)
	if b, _ := os.ReadFile(filepath.Join(outside, "victim")); len(ents) != 1 || string(b) != "original" {
		t.Errorf("outside changed: %d entries, victim %q", len(ents), b)
	}
}
