//go:build tools

// Package helm pins the Helm CLI (helm.sh/helm/v3) that the chart's tests
// (charts/amber/charttest) run. It lives in its own module so Helm's
// dependencies never enter the project's go.mod; build.sh builds it.
package helm

import _ "helm.sh/helm/v3/cmd/helm"
