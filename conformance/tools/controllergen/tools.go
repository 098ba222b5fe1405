//go:build tools

// Package controllergen pins controller-gen (sigs.k8s.io/controller-tools),
// which generates the controller's deepcopy functions and CRD YAML. It
// lives in its own module so the tool's dependencies never enter the
// project's go.mod; generate.sh builds and runs it.
package controllergen

import _ "sigs.k8s.io/controller-tools/cmd/controller-gen"
