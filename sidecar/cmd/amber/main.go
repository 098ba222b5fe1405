// Command amber backs up and restores databases into an Amber repository.
package main

import (
	"os"

	"github.com/amber-backup/amber/sidecar/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
