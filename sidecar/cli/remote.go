package cli

import (
	"context"
	"os"
	"strconv"

	"github.com/amber-backup/amber/sidecar/storage"
	"github.com/amber-backup/amber/sidecar/storage/retry"
	"github.com/amber-backup/amber/sidecar/storage/s3"
)

// openRemote opens a bucket backend.
func openRemote(ctx context.Context, loc location) (storage.Backend, error) {
	switch loc.scheme {
	case "s3":
		return openS3(ctx, loc)
	case "b2":
		return openB2(ctx, loc)
	}
	return nil, usagef("unknown repository scheme %q", loc.scheme)
}

// openS3: s3://bucket/prefix?endpoint=host:port&region=r&path-style=true&insecure=true&purge=true.
// The endpoint and region may also come from AMBER_S3_ENDPOINT and
// AWS_REGION; credentials from the AWS chain (env, shared files, web
// identity, instance roles). In a versioned bucket Remove writes a delete
// marker; purge=true deletes every version instead.
func openS3(ctx context.Context, loc location) (storage.Backend, error) {
	cfg := s3.Config{
		Bucket:   loc.bucket,
		Prefix:   loc.path,
		Endpoint: firstNonEmpty(loc.query.Get("endpoint"), os.Getenv("AMBER_S3_ENDPOINT")),
		Region:   firstNonEmpty(loc.query.Get("region"), os.Getenv("AWS_REGION"), os.Getenv("AWS_DEFAULT_REGION")),
	}
	var err error
	if cfg.PathStyle, err = boolParam(loc, "path-style", cfg.Endpoint != ""); err != nil {
		return nil, err
	}
	if cfg.Insecure, err = boolParam(loc, "insecure", false); err != nil {
		return nil, err
	}
	if cfg.Purge, err = boolParam(loc, "purge", false); err != nil {
		return nil, err
	}
	be, err := s3.Open(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return be, nil
}

func boolParam(loc location, name string, def bool) (bool, error) {
	v := loc.query.Get(name)
	if v == "" {
		return def, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, usagef("repository URL parameter %s=%q is not true or false", name, v)
	}
	return b, nil
}

func firstNonEmpty(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}

// wrapRetry retries transient storage errors, honouring Retry-After, and
// says so on stderr.
func wrapRetry(be storage.Backend, e *env) storage.Backend {
	return retry.New(be, retry.Options{OnRetry: func(op, name string, attempt int, err error) {
		e.log.Warn("storage operation failed; retrying", "op", op, "object", name, "attempt", attempt, "err", err)
	}})
}
