//go:build amber_testkdf

package cli

import "github.com/amber-backup/amber/sidecar/repo"

// Test binaries derive keys cheaply, so the hundreds of amber runs in the
// end-to-end tests do not each spend the real cost.
func init() { testKDF = repo.KDFParams{Time: 1, Memory: 1024, Threads: 1} }
