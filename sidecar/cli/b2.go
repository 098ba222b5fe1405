package cli

import (
	"context"
	"os"
	"strconv"

	"github.com/amber-backup/amber/sidecar/storage"
	"github.com/amber-backup/amber/sidecar/storage/b2"
)

// openB2: b2://bucket/prefix[?lock-days=N&lock-mode=governance|compliance&purge=true].
// Keys come from B2_APPLICATION_KEY_ID and B2_APPLICATION_KEY. With
// lock-days, every object (but locks and partial log segments) is written
// under B2 Object Lock for that many days, so no one holding the key (or
// ransomware using it) can delete a backup's stored versions before then. A
// key holder can still upload newer versions or hide names, and amber reads
// only the latest version: an operator undoes that by deleting the newer
// version or hide marker (see b2.Config.LockDays). Remove hides names;
// purge=true deletes every version instead. AMBER_B2_API_URL points the
// client at another B2-API server (tests).
func openB2(ctx context.Context, loc location) (storage.Backend, error) {
	keyID, key := os.Getenv("B2_APPLICATION_KEY_ID"), os.Getenv("B2_APPLICATION_KEY")
	if keyID == "" || key == "" {
		return nil, usagef("b2:// repositories need B2_APPLICATION_KEY_ID and B2_APPLICATION_KEY in the environment")
	}
	cfg := b2.Config{Bucket: loc.bucket, Prefix: loc.path, KeyID: keyID, Key: b2.Secret(key),
		APIBase: os.Getenv("AMBER_B2_API_URL")}
	if v := loc.query.Get("lock-days"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return nil, usagef("repository URL parameter lock-days=%q is not a positive number of days", v)
		}
		cfg.LockDays = n
		switch mode := loc.query.Get("lock-mode"); mode {
		case "", "governance":
			cfg.LockMode = b2.Governance
		case "compliance":
			cfg.LockMode = b2.Compliance
		default:
			return nil, usagef("repository URL parameter lock-mode=%q: use governance or compliance", mode)
		}
	}
	var err error
	if cfg.Purge, err = boolParam(loc, "purge", false); err != nil {
		return nil, err
	}
	return b2.Open(ctx, cfg)
}
