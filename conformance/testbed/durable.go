package testbed

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// AssertDurable fails the test if a page of a file beneath dir is dirty or
// still being written, as the page cache says (cachestat(2), Linux 6.5).
func AssertDurable(t *testing.T, dir string) {
	t.Helper()
	files := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		var st unix.Cachestat_t
		if err := unix.Cachestat(uint(f.Fd()), &unix.CachestatRange{}, &st, 0); err != nil {
			return fmt.Errorf("cachestat %s: %w", p, err)
		}
		if st.Dirty != 0 || st.Writeback != 0 {
			return fmt.Errorf("%s: %d pages dirty, %d under write-back after the restore", p, st.Dirty, st.Writeback)
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
