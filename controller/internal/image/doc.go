// Package image checks that the Dockerfile at the repository root and the
// test bed's amber image (conformance/testbed BuildAmberImage, which the
// Kubernetes tests load, as no docker runs there) describe the same image:
// user, entrypoint, PATH, and the files the Dockerfile's final stage
// copies (the binaries in /usr/local/bin, the CA certificates). The test
// bed's busybox shell is its own and not compared. The package holds
// tests only.
package image
