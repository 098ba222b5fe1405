package location

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for raw, want := range map[string]string{
		"/srv/backups":               "file",
		"relative/dir":               "file",
		"file:///srv/backups":        "file",
		"file://localhost/srv/b":     "file",
		"s3://bucket/prefix":         "s3",
		"b2://bucket":                "b2",
		"b2://bucket/p?lock-days=30": "b2",
	} {
		if got, err := Parse(raw); err != nil || got != want {
			t.Errorf("Parse(%q) = %q, %v; want %q", raw, got, err, want)
		}
	}
	for raw, phrase := range map[string]string{
		"":                      "--repo",
		"ftp://host/x":          "unknown repository scheme",
		"s3:///prefix":          "no bucket",
		"b2://":                 "no bucket",
		"file://otherhost/srv":  "names a host",
		"s3://bu cket/%zz":      "repository URL",
		"gs://bucket/x?token=1": "use a path",
	} {
		_, err := Parse(raw)
		if !errors.Is(err, ErrBadURL) || !strings.Contains(err.Error(), phrase) {
			t.Errorf("Parse(%q): %v; want ErrBadURL saying %q", raw, err, phrase)
		}
	}
}

func TestAbsolute(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for raw, want := range map[string]string{
		"repo":               filepath.Join(wd, "repo"),
		"/srv/backups":       "/srv/backups",
		"file:///srv/b":      "file:///srv/b",
		"s3://bucket/prefix": "s3://bucket/prefix",
	} {
		if got, err := Absolute(raw); err != nil || got != want {
			t.Errorf("Absolute(%q) = %q, %v; want %q", raw, got, err, want)
		}
	}
}

func TestOpenFile(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "repo")
	if _, err := Open(ctx, dir, Options{}); err == nil || !strings.Contains(err.Error(), "amber repo init") {
		t.Fatalf("open of a missing directory: %v; want an error naming amber repo init", err)
	}
	be, err := Open(ctx, "file://"+dir, Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := be.Save(ctx, "config", strings.NewReader("x"), 1); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "config")); err != nil {
		t.Fatalf("file:// URL did not open %s: %v", dir, err)
	}
	// A backend's own URL errors are bad-URL errors too.
	if _, err := Open(ctx, "s3://bucket/p?purge=maybe", Options{Getenv: func(string) string { return "" }}); !errors.Is(err, ErrBadURL) {
		t.Fatalf("s3 URL with a bad parameter: %v; want ErrBadURL", err)
	}
}
