// Package b2fake is a loopback server that speaks the Backblaze B2 native API
// (the v2 and v3 calls blazer makes) from memory, for tests.
//
// It owns a faithful-enough model of B2: accounts authorised by one key pair,
// buckets (optionally Object Lock enabled), file versions and hide markers,
// small uploads and large files assembled from parts, listing by name and by
// version, downloads by name with byte ranges, and deletion of single versions
// guarded by Object Lock retention. Requests are checked the way B2 documents
// them: SHA1 of every upload and part, part numbering and the minimum part
// size, the JSON error shape {status, code, message} and its status codes.
//
// It also lets tests inject faults (503 or 429 with Retry-After, 500, a
// dropped connection) on the next calls, and counts calls per API name, so a
// test can assert which path a client took.
//
// Usage:
//
//	srv := b2fake.New()
//	defer srv.Close()
//	srv.CreateBucket("backups", false)
//	// point a client at srv.URL() with srv.KeyID() / srv.Key()
//
// It is test code: nothing in it is meant for production, and it must never
// import the rest of Amber.
package b2fake
