package myengine

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// Secrets for the tools the plugin runs (the connection's password for
// mariadb-backup and the client, the replay server's init file) travel in
// anonymous memory files (memfd): never on a command line, in an
// environment or on disk. The child gets the file as its first extra file
// descriptor and opens it by path, SecretFilePath, as an option or init
// file. The file exists only while a process holds it open, so a plugin or
// tool killed with SIGKILL leaves nothing behind.

// SecretFilePath is where a child finds the secret file passed as its
// first exec.Cmd.ExtraFiles entry.
const SecretFilePath = "/dev/fd/3"

// secretFile returns an anonymous file holding content, mode 0600, owned
// by uid:gid when they are not -1 (a server that drops root must be able
// to open it). The caller closes it once the child has started.
func secretFile(name string, content []byte, uid, gid int) (*os.File, error) {
	fd, err := unix.MemfdCreate("amber-"+name, unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("memory file for %s: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), "amber-"+name)
	// Option files that others can write are ignored by the tools; a
	// memory file starts 0777.
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

// clientOptions is the [client] option group connecting to d.
func clientOptions(d DSN) ([]byte, error) {
	cfg, err := d.Config()
	if err != nil {
		return nil, err
	}
	var b strings.Builder
	b.WriteString("[client]\n")
	b.WriteString("user=" + optQuote(cfg.User) + "\n")
	b.WriteString("password=" + optQuote(cfg.Passwd) + "\n")
	if cfg.Net == "unix" {
		b.WriteString("socket=" + optQuote(cfg.Addr) + "\n")
	} else {
		host, port, ok := strings.Cut(cfg.Addr, ":")
		if !ok {
			port = "3306"
		}
		b.WriteString("host=" + optQuote(host) + "\nport=" + port + "\nprotocol=TCP\n")
	}
	return []byte(b.String()), nil
}
