package file_test

import (
	"testing"

	"github.com/amber-backup/amber/sidecar/storage"
	"github.com/amber-backup/amber/sidecar/storage/file"
	"github.com/amber-backup/amber/sidecar/storage/storagetest"
)

func TestSuite(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Backend {
		b, err := file.Open(t.TempDir(), false)
		if err != nil {
			t.Fatal(err)
		}
		return b
	})
}
