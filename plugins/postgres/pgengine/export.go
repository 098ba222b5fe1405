package pgengine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
)

// ExportSQL writes a dump's entries to w as one SQL script that psql
// loads: each pg_dump custom-format entry converted by pg_restore --file=-
// (no server involved), SQL entries as they are, in order. The data entry
// of the rest is spooled to a 0600 file in spoolDir to leave out the large
// object definitions pre-data already holds.
func ExportSQL(ctx context.Context, next NextDumpEntry, w io.Writer, binDir, spoolDir string, create bool) error {
	var pgRestore string
	for {
		e, r, err := next(ctx)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if e.Kind == "sql" {
			if _, err := io.Copy(w, r); err != nil {
				return fmt.Errorf("export %s: %w", e.Name, err)
			}
			continue
		}
		if pgRestore == "" {
			if pgRestore, err = anyTool("pg_restore", binDir); err != nil {
				return err
			}
		}
		convert := func(path string) error {
			args := []string{"--file=-"}
			if create && e.Section == SectionPreData {
				// CREATE DATABASE and \connect to it: the entries of
				// this database that follow load there.
				args = append(args, "--create")
			}
			if path == "" {
				return runTool(ctx, pgRestore, args, r, w)
			}
			list, err := withoutBlobDefs(ctx, pgRestore, path)
			if err != nil {
				return err
			}
			if list != "" {
				defer os.Remove(list)
				args = append(args, "--use-list="+list)
			}
			return runTool(ctx, pgRestore, append(args, path), nil, w)
		}
		if e.Section == SectionData && e.Table == "" {
			// The entry of the rest may hold large objects, defined by
			// pre-data already: pg_restore --list needs a file.
			err = withSpool(ctx, spoolDir, r, convert)
		} else {
			err = convert("")
		}
		if err != nil {
			return fmt.Errorf("export %s: %w", e.Name, err)
		}
	}
}

// anyTool finds the newest installed client tool (pg_restore of any major
// reads dumps of its own and older majors).
func anyTool(name, binDir string) (string, error) {
	if binDir != "" {
		return findTool(name, binDir, 0)
	}
	matches, _ := filepath.Glob(filepath.Join("/usr/lib/postgresql", "*", "bin", name))
	best, bestMajor := "", -1
	for _, m := range matches {
		major, err := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(m))))
		if err == nil && major > bestMajor {
			best, bestMajor = m, major
		}
	}
	if best != "" {
		return best, nil
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("%s not found in /usr/lib/postgresql/*/bin or on PATH; install the PostgreSQL client", name)
}
