package testbed

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// MariaDBImageRef is MariaDB from this machine's Debian packages on a
// busybox shell; MariaDBImageUID is its mysql user (and group).
const (
	MariaDBImageRef = "localhost/amber/mariadb:testbed"
	MariaDBImageUID = 999
)

// mariadbImagePrograms are the programs the MariaDB image holds: the
// server, mariadb-install-db and what it runs, and the client programs a
// logical restore and its binlog replay run (mariadb, mariadb-binlog), and
// mariadb-backup, which a clone's physical restore runs to prepare the
// copy.
var mariadbImagePrograms = []string{
	"/usr/sbin/mariadbd",
	"/usr/bin/mariadb-install-db",
	"/usr/bin/my_print_defaults",
	"/usr/bin/resolveip",
	"/usr/bin/mariadb",
	"/usr/bin/mariadb-admin",
	"/usr/bin/mariadb-binlog",
	"/usr/bin/mariadb-backup",
}

// BuildMariaDBImage writes an image tarball (docker-archive) of MariaDB into
// dir: the programs above, /usr/share/mysql (error messages, character
// sets, the system tables' SQL), /usr/lib/mysql/plugin and the shared
// libraries they need, on a busybox-static shell, run as MariaDBImageUID
// with the programs on PATH. Built once per process and dir.
func BuildMariaDBImage(t testing.TB, dir string) (ref, tarballPath string) {
	t.Helper()
	return MariaDBImageRef, cachedImage(t, "mariadb", dir, WriteMariaDBImage)
}

// WriteMariaDBImage is BuildMariaDBImage without a test and without the
// cache: it writes the tarball to out.
func WriteMariaDBImage(out string) error {
	var elfs []string
	for _, p := range mariadbImagePrograms {
		if _, err := os.Stat(p); err != nil {
			return &MissingError{Reason: p + " not installed (Debian packages mariadb-server and mariadb-client)"}
		}
		if isDynamicELF(p) {
			elfs = append(elfs, p)
		}
	}
	const pluginDir = "/usr/lib/mysql/plugin"
	_ = filepath.WalkDir(pluginDir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && isDynamicELF(p) {
			elfs = append(elfs, p)
		}
		return nil
	})
	libs, err := lddLibraries(elfs)
	if err != nil {
		return err
	}
	cfg := v1.Config{
		Env:        []string{"PATH=/usr/sbin:/usr/bin:/bin", "LANG=C", "TZ=UTC"},
		User:       fmt.Sprintf("%d:%d", MariaDBImageUID, MariaDBImageUID),
		Entrypoint: []string{"/bin/sh"},
	}
	return writeImage(out, MariaDBImageRef, cfg, func(l *layerTar) error {
		if err := l.busyboxBase(); err != nil {
			return err
		}
		for _, p := range mariadbImagePrograms {
			if err := l.copyFile(p, p, 0o755); err != nil {
				return err
			}
		}
		for _, tree := range []string{"/usr/share/mysql", pluginDir, "/usr/share/zoneinfo"} {
			if _, err := os.Stat(tree); err != nil {
				continue
			}
			if err := l.copyTree(tree, nil); err != nil {
				return err
			}
		}
		for _, lib := range libs {
			if err := l.copyFile(lib, lib, 0o755); err != nil {
				return err
			}
		}
		if err := l.data("/etc/hosts", []byte("127.0.0.1 localhost\n::1 localhost\n"), 0o644); err != nil {
			return err
		}
		return l.dir("/run/mysqld", 0o1777)
	})
}

// AmberMariaDBImageRef is the amber image with mariadb-backup (this
// machine's, the server's version) added in /usr/bin, with the shared
// libraries it needs: what docs/controller.md ("Images") tells a user to
// build FROM amber's image and give as --sidecar-image for the sidecar's
// physical MySQL/MariaDB backups, which run mariadb-backup in the sidecar's
// container (amber's own image holds no database programs).
const AmberMariaDBImageRef = "localhost/amber/amber-mariadb:testbed"

// BuildAmberMariaDBImage writes the image AmberMariaDBImageRef into dir.
// Built once per process and dir.
func BuildAmberMariaDBImage(t testing.TB, dir string) (ref, tarballPath string) {
	t.Helper()
	return AmberMariaDBImageRef, cachedImage(t, "amber-mariadb", dir, func(out string) error {
		return writeAmberImage(filepath.Join(dir, "amber-bin"), out, AmberMariaDBImageRef, []string{"/usr/bin/mariadb-backup"},
			func(p string) error {
				return &MissingError{Reason: p + " not installed (Debian package mariadb-backup)"}
			})
	})
}

// FerretDBImageRef is ferretdb-testbed (FerretDB with its SQLite handler,
// a MongoDB wire-protocol server, statically linked; built by `make deps`)
// in /usr/local/bin on a busybox shell, run as FerretDBImageUID.
const (
	FerretDBImageRef = "localhost/amber/ferretdb:testbed"
	FerretDBImageUID = 65532
)

// BuildFerretDBImage writes an image tarball of ferretdb-testbed into dir.
// Built once per process and dir.
func BuildFerretDBImage(t testing.TB, dir string) (ref, tarballPath string) {
	t.Helper()
	bin := Tool(t, "ferretdb-testbed")
	return FerretDBImageRef, cachedImage(t, "ferretdb", dir, func(out string) error { return WriteFerretDBImage(bin, out) })
}

// WriteFerretDBImage writes the FerretDB image with the program bin to out.
func WriteFerretDBImage(bin, out string) error {
	if isDynamicELF(bin) {
		return fmt.Errorf("%s is dynamically linked; the image holds no libraries for it", bin)
	}
	cfg := v1.Config{
		Env:        []string{"PATH=/usr/local/bin:/usr/bin:/bin"},
		User:       fmt.Sprintf("%d:%d", FerretDBImageUID, FerretDBImageUID),
		Entrypoint: []string{"/usr/local/bin/ferretdb-testbed"},
	}
	return writeImage(out, FerretDBImageRef, cfg, func(l *layerTar) error {
		if err := l.busyboxBase(); err != nil {
			return err
		}
		return l.copyFile("/usr/local/bin/ferretdb-testbed", bin, 0o755)
	})
}
