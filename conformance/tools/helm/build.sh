#!/usr/bin/env bash
# Builds the Helm CLI pinned in this folder's go.mod (helm.sh/helm/v3's
# ./cmd/helm) into $1 (the test bed's bin dir) as `helm`, unless the binary
# there already comes from the same pin. The chart's tests
# (charts/amber/charttest) run it: lint, template, install, uninstall.
# Cold build: about 2 minutes on 2 cores; cached: instant.
set -euo pipefail
bin=${1:?usage: build.sh <bin-dir>}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$bin"
bin=$(cd "$bin" && pwd)

version=$(awk '{ for (i = 1; i < NF; i++) if ($i == "helm.sh/helm/v3") print $(i+1) }' "$here/go.mod")
[ -n "$version" ] || { echo "helm: no helm.sh/helm/v3 requirement in $here/go.mod" >&2; exit 1; }
want="helm.sh/helm/v3@$version $(go env GOVERSION)"
marker="$bin/.helm.version"

if [ -x "$bin/helm" ] && [ -f "$marker" ] && [ "$(cat "$marker")" = "$want" ]; then
  echo "helm: $version already built in $bin"
  exit 0
fi

echo "helm: building $version into $bin (takes a few minutes when cold)"
tmp="$bin/.helm.tmp.$$"
trap 'rm -f "$tmp"' EXIT
(
  cd "$here"
  # -X sets what `helm version` reports (otherwise only the minor version).
  # -mod=mod lets go fill in go.sum entries a newer toolchain wants, without
  # ever touching the project's main module.
  GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=mod" GOWORK=off CGO_ENABLED=0 \
    go build -trimpath -ldflags "-X helm.sh/helm/v3/internal/version.version=$version" \
    -o "$tmp" helm.sh/helm/v3/cmd/helm
)
mv -f "$tmp" "$bin/helm"
echo "$want" > "$marker"
echo "helm: built $("$bin/helm" version --short 2>/dev/null || echo "$version")"
