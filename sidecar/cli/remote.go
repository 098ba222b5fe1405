package cli

import (
	"context"

	"github.com/amber-backup/amber/sidecar/storage"
)

// openRemote opens a bucket backend.
func openRemote(ctx context.Context, loc location) (storage.Backend, error) {
	return nil, usagef("%s:// repositories are not supported by this build", loc.scheme)
}

func wrapRetry(be storage.Backend, e *env) storage.Backend { return be }
