package s3

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// FromURL reads s3://bucket/prefix?endpoint=host:port&region=r&path-style=true&insecure=true&purge=true.
// In a versioned bucket removal writes a delete marker; purge=true deletes
// every version instead (Config.Purge).
// The endpoint and region may also come from getenv: AMBER_S3_ENDPOINT and
// AWS_REGION (or AWS_DEFAULT_REGION); static keys from AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN, else from the AWS chain when
// the Config is opened.
func FromURL(u *url.URL, getenv func(string) string) (Config, error) {
	if u.Host == "" {
		return Config{}, fmt.Errorf("repository URL %q has no bucket; use s3://bucket/prefix", u.Redacted())
	}
	q := u.Query()
	cfg := Config{
		Bucket:   u.Host,
		Prefix:   strings.Trim(u.Path, "/"),
		Endpoint: firstNonEmpty(q.Get("endpoint"), getenv("AMBER_S3_ENDPOINT")),
		Region:   firstNonEmpty(q.Get("region"), getenv("AWS_REGION"), getenv("AWS_DEFAULT_REGION")),
	}
	// Static keys through getenv, so that a caller whose credentials are
	// not the process environment (the sidecar's mounted Secret, the
	// controller's retention) provides them; with none the AWS chain
	// applies when the Config is opened.
	if id := getenv("AWS_ACCESS_KEY_ID"); id != "" {
		secret := getenv("AWS_SECRET_ACCESS_KEY")
		if secret == "" {
			return Config{}, fmt.Errorf("AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not; set both")
		}
		cfg.AccessKeyID, cfg.SecretAccessKey, cfg.SessionToken = id, Secret(secret), Secret(getenv("AWS_SESSION_TOKEN"))
	}
	var err error
	if cfg.PathStyle, err = boolParam(q, "path-style", cfg.Endpoint != ""); err != nil {
		return Config{}, err
	}
	if cfg.Insecure, err = boolParam(q, "insecure", false); err != nil {
		return Config{}, err
	}
	if cfg.Purge, err = boolParam(q, "purge", false); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

func boolParam(q url.Values, name string, def bool) (bool, error) {
	v := q.Get(name)
	if v == "" {
		return def, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("repository URL parameter %s=%q is not true or false", name, v)
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
