// Package durable makes what a physical restore wrote durable before the
// restore says it is done, and keeps the disk busy while it writes.
//
// A restore that returned while the data directory still sat in the page
// cache could, after a crash, leave files cut short or missing behind a
// directory the host had already marked restored, and a database started
// on it trusts every page its log does not rewrite. So a plugin writes
// each restored file through a Writer, which has the kernel start writing
// it out as it goes, and calls Sync on every directory it restored into
// before it returns; the final sync then waits for little.
package durable

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// every is how many bytes of a file are written between requests to
// start writing them to disk.
const every = 8 << 20

// Writer writes a restored file and has the kernel start writing it to
// disk every 8 MiB and at End (sync_file_range with SYNC_FILE_RANGE_WRITE,
// which does not wait for the disk). It is only a head start: Sync still
// waits for everything.
type Writer struct {
	f       *os.File
	fd      uintptr
	n, sent int64 // bytes written; up to where write-back was started
}

// NewWriter returns a Writer for f.
func NewWriter(f *os.File) *Writer { return &Writer{f: f, fd: f.Fd()} }

func (w *Writer) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.n += int64(n)
	if w.n-w.sent >= every {
		w.End()
	}
	return n, err
}

// End starts the write-back of what was written since the last start;
// call it once the file is whole.
func (w *Writer) End() {
	if w.n > w.sent {
		// An error changes nothing: Sync waits for the data either way.
		_ = unix.SyncFileRange(int(w.fd), w.sent, w.n-w.sent, unix.SYNC_FILE_RANGE_WRITE)
		w.sent = w.n
	}
}

// Sync makes everything written beneath dir durable with one syncfs(2) of
// its file system (data and metadata of every file on it, as PostgreSQL's
// recovery_init_sync_method=syncfs does), and reports a write-back error
// of any of them (Linux 5.8 and later).
func Sync(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer unix.Close(fd)
	if err := unix.Syncfs(fd); err != nil {
		return fmt.Errorf("sync %s to disk: %w", dir, err)
	}
	return nil
}
