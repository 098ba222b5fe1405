// Package conformance holds the end-to-end suite that every engine plugin
// must pass, driving the real `amber` binary and the real plugin against
// real database servers from the test bed (package testbed).
package conformance
