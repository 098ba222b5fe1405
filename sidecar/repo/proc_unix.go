//go:build unix

package repo

import (
	"errors"
	"os"
	"strings"
	"syscall"
)

// procScope names the kernel boot and PID namespace this process runs in:
// a marker written from the same scope has a PID this process can check.
func procScope() string {
	boot, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	ns, err := os.Readlink("/proc/self/ns/pid")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(boot)) + "/" + ns
}

// pidGone reports whether no process with pid exists (in this scope).
func pidGone(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return errors.Is(err, syscall.ESRCH)
}
