package storage_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"syscall"
	"testing"

	"github.com/amber-backup/amber/sidecar/storage"
)

// TestIsPermanent: what a retry cannot fix is permanent, among them a local
// directory the process may not read (seen: a repository made by root,
// used by another user, retried for two minutes before failing).
func TestIsPermanent(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("load config: %w", &fs.PathError{Op: "open", Path: "/repo/config", Err: syscall.EACCES}), true},
		{&fs.PathError{Op: "open", Path: "/repo/config", Err: syscall.EPERM}, true},
		{fmt.Errorf("stat: %w", storage.ErrNotFound), true},
		{storage.Permanent(errors.New("bad request")), true},
		{context.Canceled, true},
		{&fs.PathError{Op: "write", Path: "/repo/data/x", Err: syscall.EIO}, false},
		{errors.New("connection reset by peer"), false},
	} {
		if got := storage.IsPermanent(tc.err); got != tc.want {
			t.Errorf("IsPermanent(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
