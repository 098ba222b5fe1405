package cli_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestE2EHelpShowsNoSecrets: connection strings and passwords set in the
// environment never appear in help output (they were the flags' defaults).
func TestE2EHelpShowsNoSecrets(t *testing.T) {
	const dsnPw, restorePw, repoPw = "Dsn-S3cret-4410", "Restore-S3cret-7781", "Repo-S3cret-1185"
	c := newClient(t, t.TempDir(),
		"AMBER_DSN=postgres://amber:"+dsnPw+"@db/app",
		"AMBER_RESTORE_DSN=postgres://amber:"+restorePw+"@db/copy",
		"AMBER_PASSWORD="+repoPw)
	for _, args := range [][]string{{"--help"}, {"backup", "--help"}, {"archive", "--help"}, {"restore", "--help"},
		{"log-fetch", "--help"}, {"log-push", "--help"}, {"prune", "--help"}, {"key", "add", "--help"},
		{"k8s", "--help"}, {"k8s", "backup", "--help"}, {"k8s", "restore", "--help"}} {
		res := c.run(nil, nil, args...)
		out := res.stdout + res.stderr
		for _, secret := range []string{dsnPw, restorePw, repoPw} {
			if strings.Contains(out, secret) {
				t.Errorf("amber %s printed a secret from the environment:\n%s", strings.Join(args, " "), out)
			}
		}
		if res.code != 0 {
			t.Errorf("amber %s: exit %d\n%s", strings.Join(args, " "), res.code, out)
		}
	}
}

// TestE2EShippedBinaryHasNoKDFBackdoor: the binary `make build` ships has no
// way to lower the key-derivation cost (the test binaries get theirs from a
// build tag), so AMBER_KDF_TEST means nothing to it.
func TestE2EShippedBinaryHasNoKDFBackdoor(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "amber")
	build := exec.Command("go", "build", "-o", bin, "./sidecar/cmd/amber")
	build.Dir = filepath.Join("..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"AMBER_KDF_TEST", "amber_testkdf"} {
		if bytes.Contains(b, []byte(s)) {
			t.Errorf("the shipped binary contains %q", s)
		}
	}
	// A repository it creates gets the default key derivation even with the
	// old variable set.
	repo := filepath.Join(dir, "repo")
	cmd := exec.Command(bin, "repo", "init", "--repo", repo, "--cache-dir", "-")
	cmd.Env = append(os.Environ(), "AMBER_PASSWORD=pw", "AMBER_KDF_TEST=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("repo init: %v\n%s", err, out)
	}
	keys, _ := filepath.Glob(filepath.Join(repo, "keys", "*"))
	if len(keys) != 1 {
		t.Fatalf("want one key slot, have %v", keys)
	}
	raw, _ := os.ReadFile(keys[0])
	var slot struct {
		Params struct {
			Time   int `json:"time"`
			Memory int `json:"memory_kib"`
		} `json:"kdf_params"`
	}
	if err := json.Unmarshal(raw, &slot); err != nil {
		t.Fatal(err)
	}
	if slot.Params.Memory != 64<<10 || slot.Params.Time != 3 {
		t.Errorf("key slot made with AMBER_KDF_TEST=1 does not carry the default cost (m=64 MiB, t=3): %s", raw)
	}
}

// TestE2EHelpSaysWhatObjectLockProtects: amber --help names the URL
// parameters that decide what a removal or a stolen key can undo, and says
// what Object Lock does not protect.
func TestE2EHelpSaysWhatObjectLockProtects(t *testing.T) {
	c := newClient(t, t.TempDir())
	res := c.run(nil, nil, "--help")
	out := strings.Join(strings.Fields(res.stdout), " ")
	for _, want := range []string{"delete marker", "purge=true deletes every version", "lock-days=N",
		"no key holder can delete those versions", "can still upload a newer version", "reads only the latest version"} {
		if !strings.Contains(out, want) {
			t.Errorf("amber --help does not say %q:\n%s", want, res.stdout)
		}
	}
}
