// Command amber backs up and restores databases into an Amber repository.
package main

import (
	"os"
	"runtime/debug"

	"github.com/amber-backup/amber/sidecar/cli"
)

// memoryLimit is the default soft heap limit: it keeps the sidecar's peak
// memory flat whatever the backup size. GOMEMLIMIT overrides it.
const memoryLimit = 150 << 20

func main() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(memoryLimit)
	}
	// Installed as kubectl-amber, amber is the kubectl plugin `kubectl amber`.
	os.Exit(cli.MainAs(os.Args[0], os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
