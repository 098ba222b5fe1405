package s3

import (
	"net/url"
	"testing"
)

// Keys come through getenv (a sidecar's mounted Secret, the controller's
// retention), never only from the process environment.
func TestFromURLKeys(t *testing.T) {
	u, _ := url.Parse("s3://bucket/prefix?endpoint=http://minio:9000")
	env := map[string]string{"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_SESSION_TOKEN": "token"}
	cfg, err := FromURL(u, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if cfg.AccessKeyID != "id" || cfg.SecretAccessKey.Reveal() != "secret" || cfg.SessionToken.Reveal() != "token" {
		t.Fatalf("keys not taken from getenv: %+v", cfg)
	}
	cfg, err = FromURL(u, func(string) string { return "" })
	if err != nil || cfg.AccessKeyID != "" {
		t.Fatalf("no keys: %+v, %v; want the AWS chain later", cfg, err)
	}
	if _, err := FromURL(u, func(k string) string { return map[string]string{"AWS_ACCESS_KEY_ID": "id"}[k] }); err == nil {
		t.Fatal("a key id without its secret was accepted")
	}
}
