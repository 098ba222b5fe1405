package job

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"github.com/amber-backup/amber/plugins/api"
	"github.com/amber-backup/amber/sidecar/repo"
)

// Printable reports whether RestoreStream can print m as it is: a single
// entry, or SQL scripts in order.
func Printable(m *repo.Manifest) bool {
	return len(m.Entries) == 1 || allSQL(m)
}

// ExportStream prints a logical backup that is not printable as it is (a
// MongoDB dump's many entries) in the format of its engine's stock restore
// tool, converted by the plugin: the plugin's LogicalRestore gets the
// backup's entries and api.ExportPathOption naming a named pipe, private
// to this process, whose bytes are copied to out as they come.
func ExportStream(ctx context.Context, r *repo.Repository, eng api.Engine, m *repo.Manifest, out io.Writer, progress Progress) error {
	res, err := engineResult(m)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "amber-export-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	fifo := filepath.Join(dir, "stream")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		return fmt.Errorf("export: make a pipe: %w", err)
	}
	cw := &countWriter{w: out}
	if progress != nil {
		progress(cw.n.Load)
	}
	// The read end opens without waiting for a writer; guard, a writer of
	// this process, keeps it from seeing the end of the stream until the
	// plugin has returned (it closes its own end before it does), whether
	// it wrote everything, failed half-way or never opened the pipe.
	rd, err := os.OpenFile(fifo, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("export: open the pipe: %w", err)
	}
	defer rd.Close()
	guard, err := os.OpenFile(fifo, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("export: open the pipe: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	copied := make(chan error, 1)
	go func() {
		_, err := io.Copy(cw, rd)
		if err != nil {
			// out failed: stop the plugin, and read on so that a write
			// of its never blocks.
			cancel()
			_, _ = io.Copy(io.Discard, rd)
		}
		copied <- err
	}()
	ctx = with(ctx, "backup", m.ID.Short())
	src := &entrySource{r: r, m: m}
	defer src.close()
	_, restoreErr := eng.LogicalRestore(ctx, api.RestoreRequest{Backup: res,
		Options: map[string]string{api.ExportPathOption: fifo}}, src)
	guard.Close()
	copyErr := <-copied
	if copyErr != nil {
		return fmt.Errorf("export %s: %w", m.ID.Short(), copyErr)
	}
	if restoreErr != nil {
		return fmt.Errorf("export %s: %w", m.ID.Short(), restoreErr)
	}
	return nil
}
