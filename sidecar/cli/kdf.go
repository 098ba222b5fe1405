package cli

import "github.com/amber-backup/amber/sidecar/repo"

// testKDF is the key derivation new key slots get: the zero value, the
// repository's default. Test binaries built with -tags amber_testkdf lower
// it (kdf_testkdf.go); the shipped binary has no way to.
var testKDF repo.KDFParams
