package agent

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// readableDir checks that the agent's process can list dir, the database's
// data directory, before a backup that reads it. Engines keep their data
// directory private to the database's user (PostgreSQL: mode 0700), so an
// agent running as another user fails here, with the fix, instead of
// half-way through the plugin's read.
func readableDir(dir string) error {
	f, err := os.Open(dir)
	if err == nil {
		_, err = f.Readdirnames(1)
		f.Close()
		if errors.Is(err, io.EOF) {
			err = nil
		}
	}
	switch {
	case err == nil:
		return nil
	case errors.Is(err, fs.ErrPermission):
		owner := ""
		if st, serr := os.Stat(dir); serr == nil {
			if sys, ok := st.Sys().(*syscall.Stat_t); ok {
				owner = fmt.Sprintf(", owned by uid %d gid %d with mode %#o", sys.Uid, sys.Gid, st.Mode().Perm())
			}
		}
		return fmt.Errorf("the data directory %s is not readable by the sidecar (uid %d, gid %d)%s: run the database container with an explicit "+
			"securityContext.runAsUser (and runAsGroup) of the database's user, which the injected sidecar copies, or run the sidecar "+
			"without a data directory (no --data-dir; on Kubernetes, no amber.dev/data-dir annotation) to back up over the database's replication protocol", dir, os.Getuid(), os.Getgid(), owner)
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("the data directory %s does not exist in the sidecar: check --data-dir (on Kubernetes, the amber.dev/data-dir annotation: the data directory's path in the database container)", dir)
	}
	return fmt.Errorf("read the data directory %s: %w", dir, err)
}
