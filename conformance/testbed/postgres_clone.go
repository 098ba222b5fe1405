package testbed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// cloneByCopy makes dataDir a standby of primary without pg_basebackup: a
// physical slot reserving WAL from now, a non-exclusive backup held by one
// session while the data directory is copied file by file, then the
// backup_label pg_backup_stop returns, standby.signal, and primary_conninfo
// with primary_slot_name in postgresql.auto.conf.
func cloneByCopy(t testing.TB, primary *Postgres, dataDir string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, primary.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	slot := fmt.Sprintf("standby_%d", FreePort(t))
	if _, err := conn.Exec(ctx, `SELECT pg_create_physical_replication_slot($1, true)`, slot); err != nil {
		t.Fatalf("create slot: %v", err)
	}
	start, stop := `SELECT pg_backup_start('clone', true)`, `SELECT labelfile, spcmapfile FROM pg_backup_stop(true)`
	if primary.before15() {
		start, stop = `SELECT pg_start_backup('clone', true, false)`, `SELECT labelfile, spcmapfile FROM pg_stop_backup(false, true)`
	}
	if _, err := conn.Exec(ctx, start); err != nil {
		t.Fatalf("%s: %v", start, err)
	}
	if err := copyDataDir(primary.DataDir, dataDir); err != nil {
		t.Fatalf("copy %s: %v", primary.DataDir, err)
	}
	var label, spcmap string
	if err := conn.QueryRow(ctx, stop).Scan(&label, &spcmap); err != nil {
		t.Fatalf("%s: %v", stop, err)
	}
	write := func(name, content string, flag int) {
		t.Helper()
		f, err := os.OpenFile(filepath.Join(dataDir, name), os.O_CREATE|os.O_WRONLY|flag, 0o600)
		if err == nil {
			_, err = f.WriteString(content)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	write("backup_label", label, os.O_TRUNC)
	if spcmap != "" {
		write("tablespace_map", spcmap, os.O_TRUNC)
	}
	write("standby.signal", "", os.O_TRUNC)
	write("postgresql.auto.conf", fmt.Sprintf("\nprimary_conninfo = 'host=127.0.0.1 port=%d user=%s password=%s application_name=standby'\nprimary_slot_name = '%s'\n",
		primary.Port, PostgresReplUser, postgresReplPassword, slot), os.O_APPEND)
	if err := ChownPostgres(dataDir); err != nil {
		t.Fatal(err)
	}
}

// copyDataDir copies a running server's data directory, leaving out what
// a base backup leaves out: WAL, slots, the postmaster's own files and
// temporary statistics. Files that vanish while it runs are skipped.
func copyDataDir(src, dst string) error {
	emptied := map[string]bool{"pg_wal": true, "pg_replslot": true, "pg_stat_tmp": true, "pg_dynshmem": true,
		"pg_notify": true, "pg_serial": true, "pg_snapshots": true, "pg_subtrans": true}
	skip := map[string]bool{"postmaster.pid": true, "postmaster.opts": true, "backup_label": true,
		"tablespace_map": true, "standby.signal": true, "recovery.signal": true}
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		rel, _ := filepath.Rel(src, path)
		target := filepath.Join(dst, rel)
		parent, _, _ := strings.Cut(rel, string(filepath.Separator))
		if rel != parent && emptied[parent] {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if skip[rel] {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		switch {
		case d.IsDir():
			if err := os.MkdirAll(target, info.Mode().Perm()); err != nil {
				return err
			}
			if rel == "pg_wal" {
				return os.MkdirAll(filepath.Join(target, "archive_status"), 0o700)
			}
			return nil
		case info.Mode()&fs.ModeSymlink != 0:
			link, err := os.Readlink(path)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		case info.Mode().IsRegular():
			return copyFile(path, target, info.Mode().Perm())
		}
		return nil
	})
}

func copyFile(src, dst string, perm fs.FileMode) error {
	in, err := os.Open(src)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
