package testbed

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// PageCache returns how many of path's pages are dirty and how many are
// being written to disk, as the page cache says (cachestat(2), Linux 6.5).
func PageCache(path string) (dirty, writeback uint64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	var st unix.Cachestat_t
	if err := unix.Cachestat(uint(f.Fd()), &unix.CachestatRange{}, &st, 0); err != nil {
		return 0, 0, fmt.Errorf("cachestat %s: %w", path, err)
	}
	return st.Dirty, st.Writeback, nil
}

// AssertDurable fails the test if a page of a file beneath dir is dirty or
// still being written (PageCache).
func AssertDurable(t *testing.T, dir string) {
	t.Helper()
	files := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		dirty, wb, err := PageCache(p)
		if err != nil {
			return err
		}
		if dirty != 0 || wb != 0 {
			return fmt.Errorf("%s: %d pages dirty, %d under write-back after the restore", p, dirty, wb)
		}
		files++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files == 0 {
		t.Fatalf("no file beneath %s", dir)
	}
}
