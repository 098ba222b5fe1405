// Package testbed finds the real servers and tools that `make deps` installs
// under .deps/ and starts them for tests, on loopback and random ports, in
// temporary directories. It also owns the skip policy: a test that cannot find
// a dependency skips with a reason, and fails instead when
// AMBER_TEST_REQUIRE_ALL=1 (as in CI), so a green run means everything ran.
package testbed

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Skip skips t with reason, or fails it when AMBER_TEST_REQUIRE_ALL=1. Every
// test that may skip goes through here; `make test` also counts the skips in
// go test's own output and fails on any under AMBER_TEST_REQUIRE_ALL=1, so a
// plain t.Skip cannot pass unnoticed either.
func Skip(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("AMBER_TEST_REQUIRE_ALL") == "1" {
		t.Fatalf("required dependency missing (AMBER_TEST_REQUIRE_ALL=1): %s; run `make deps`", msg)
	}
	t.Skip(msg + "; run `make deps`")
}

// Root returns the module root (the directory holding the top go.mod).
func Root() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && isMain(b) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod of github.com/amber-backup/amber above %s", dir)
		}
		dir = parent
	}
}

func isMain(gomod []byte) bool {
	const want = "module github.com/amber-backup/amber\n"
	return len(gomod) >= len(want) && string(gomod[:len(want)]) == want
}

// DepsDir is where `make deps` puts what tests need: $AMBER_DEPS or <root>/.deps.
func DepsDir() string {
	if d := os.Getenv("AMBER_DEPS"); d != "" {
		return d
	}
	root, err := Root()
	if err != nil {
		return ".deps"
	}
	return filepath.Join(root, ".deps")
}

// Tool returns the path of a binary built by `make deps` (in .deps/bin) or,
// failing that, found on PATH. It skips the test when neither has it.
func Tool(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(DepsDir(), "bin", name)
	if st, err := os.Stat(p); err == nil && !st.IsDir() {
		return p
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	Skip(t, "%s not found in %s/bin or on PATH", name, DepsDir())
	return ""
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// BuildAmber builds amber with the test bed's cheap key derivation (build
// tag amber_testkdf: repositories open in milliseconds) and the plugins of
// engines (amber-plugin-<engine>) into dir, as the tests run them.
func BuildAmber(t testing.TB, dir string, engines ...string) {
	t.Helper()
	pkgs := []string{"./sidecar/cmd/amber"}
	for _, e := range engines {
		pkgs = append(pkgs, "./plugins/"+e+"/cmd/amber-plugin-"+e)
	}
	if err := goBuild(dir, "amber_testkdf", pkgs...); err != nil {
		t.Fatal(err)
	}
}

// goBuild builds the main packages pkgs of this checkout into dir, with
// build tags when not empty.
func goBuild(dir, tags string, pkgs ...string) error {
	root, err := Root()
	if err != nil {
		return err
	}
	args := []string{"build"}
	if tags != "" {
		args = append(args, "-tags", tags)
	}
	cmd := exec.Command("go", append(append(args, "-o", dir+"/"), pkgs...)...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w: %s", strings.Join(pkgs, " "), err, out)
	}
	return nil
}
