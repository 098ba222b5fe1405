// The race detector's shadow memory faults in pages of its own, so the
// count below means nothing under -race.

//go:build !race

package repo

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// TestDeriveKEKFaultsEachPageOnce: a password's key derivation, in a new
// process as a command derives it, takes about one page fault per page of
// its 64 MiB. x/crypto/argon2 reads its fresh blocks before it writes them,
// which without prefault costs two faults per page, the second flushing
// the TLB of every CPU the process ran on (about 60% of the derivation's
// time on a 2-CPU machine).
func TestDeriveKEKFaultsEachPageOnce(t *testing.T) {
	if os.Getenv("AMBER_TEST_DERIVE_CHILD") == "1" {
		var before, after syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &before)
		deriveKEK([]byte("pw"), make([]byte, 16), DefaultKDF)
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &after)
		fmt.Printf("faults=%d\n", after.Minflt-before.Minflt)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestDeriveKEKFaultsEachPageOnce$", "-test.count=1")
	cmd.Env = append(os.Environ(), "AMBER_TEST_DERIVE_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	var faults int64
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "faults="); ok {
			faults, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	pages := int64(DefaultKDF.Memory) * 1024 / 4096
	t.Logf("%d page faults deriving a key over %d pages", faults, pages)
	if faults == 0 || faults > pages*5/4 {
		t.Fatalf("%d page faults for %d pages: want about one per page", faults, pages)
	}
}
