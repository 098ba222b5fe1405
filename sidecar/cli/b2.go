package cli

import (
	"context"

	"github.com/amber-backup/amber/sidecar/storage"
)

func openB2(ctx context.Context, loc location) (storage.Backend, error) {
	return nil, usagef("b2:// repositories are not supported by this build yet")
}
