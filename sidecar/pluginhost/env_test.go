package pluginhost

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPluginEnvironment starts a plugin through a wrapper script that records
// the environment it was given, with credentials in the host's environment,
// and checks that none of them reached the plugin.
func TestPluginEnvironment(t *testing.T) {
	secrets := map[string]string{
		"AMBER_PASSWORD":        "repo-pw-1",
		"AMBER_DSN":             "postgres://u:dsn-pw-2@h/db",
		"B2_APPLICATION_KEY":    "b2-key-3",
		"B2_APPLICATION_KEY_ID": "b2-keyid-4",
		"AWS_SECRET_ACCESS_KEY": "aws-secret-5",
		"AWS_SESSION_TOKEN":     "aws-token-6",
		"GITHUB_TOKEN":          "gh-token-7",
		"MY_API_KEY":            "api-key-8",
		"AMBER_S3_SECRET":       "s3-secret-9",
	}
	kept := map[string]string{
		"LANG":       "C.UTF-8",
		"LC_ALL":     "C.UTF-8",
		"TZ":         "UTC",
		"PGPASSWORD": "pg-pw-kept",
		"PGHOST":     "/run/pg",
		"PGPASSFILE": "/etc/pgpass",
	}
	for k, v := range secrets {
		t.Setenv(k, v)
	}
	for k, v := range kept {
		t.Setenv(k, v)
	}

	dir := t.TempDir()
	envFile := filepath.Join(dir, "env.txt")
	wrapDir := filepath.Join(dir, "plugins")
	if err := os.Mkdir(wrapDir, 0o755); err != nil {
		t.Fatal(err)
	}
	script := "#!/bin/sh\nenv > '" + envFile + "'\nexec '" + filepath.Join(pluginDir, "amber-plugin-fake") + "' \"$@\"\n"
	if err := os.WriteFile(filepath.Join(wrapDir, "amber-plugin-fake"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	h := New(Options{Dirs: []string{wrapDir}})
	defer h.Close()
	if _, err := h.Engine(context.Background(), "fake"); err != nil {
		t.Fatalf("start plugin: %v", err)
	}
	raw, err := os.ReadFile(envFile)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		k, v, _ := strings.Cut(line, "=")
		got[k] = v
	}
	for k, v := range secrets {
		if _, ok := got[k]; ok {
			t.Errorf("plugin environment has %s", k)
		}
		if strings.Contains(string(raw), v) {
			t.Errorf("plugin environment holds the value of %s", k)
		}
	}
	for k, v := range kept {
		if got[k] != v {
			t.Errorf("plugin environment: %s=%q, want %q", k, got[k], v)
		}
	}
	if got["PATH"] != os.Getenv("PATH") {
		t.Errorf("plugin environment lacks the host's PATH")
	}
	if got["AMBER_PLUGIN_LOG_LEVEL"] == "" {
		t.Errorf("plugin environment lacks AMBER_PLUGIN_LOG_LEVEL")
	}
}
