// Package secretfile hands secrets to the tools a plugin runs (a
// connection's password for pg_dump or mariadb-backup, a replay server's
// init file) in anonymous memory files (memfd): never on a command line,
// in an environment or on disk. The child gets the file as its first extra
// file descriptor and opens it by path, Path, as an option, password or
// init file. The file exists only while a process holds it open, so a
// plugin or tool killed with SIGKILL leaves nothing behind.
package secretfile

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Path is where a child finds the secret file passed as its first
// exec.Cmd.ExtraFiles entry.
const Path = "/dev/fd/3"

// New returns an anonymous file holding content, mode 0600, owned by
// uid:gid when they are not -1 (a server that drops root must be able to
// open it). The caller closes it once the child has started.
func New(name string, content []byte, uid, gid int) (*os.File, error) {
	fd, err := unix.MemfdCreate("amber-"+name, unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("memory file for %s: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), "amber-"+name)
	// Tools ignore option and password files that others can read or
	// write; a memory file starts 0777.
	if err := unix.Fchmod(fd, 0o600); err != nil {
		f.Close()
		return nil, fmt.Errorf("memory file for %s: %w", name, err)
	}
	if uid != -1 || gid != -1 {
		if err := unix.Fchown(fd, uid, gid); err != nil {
			f.Close()
			return nil, fmt.Errorf("memory file for %s: %w", name, err)
		}
	}
	if _, err := f.Write(content); err != nil {
		f.Close()
		return nil, fmt.Errorf("memory file for %s: %w", name, err)
	}
	return f, nil
}
