// Package cli implements the `amber` command line: the cobra command tree,
// flag parsing, repository URLs, passwords, --json output and progress.
package cli

import (
	"fmt"
	"io"
)

// Main runs amber with args and returns the process exit code.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "amber: not yet implemented")
	return 2
}
