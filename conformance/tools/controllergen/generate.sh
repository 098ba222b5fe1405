#!/usr/bin/env bash
# Regenerates the controller's deepcopy functions, CRD YAML and RBAC role with the
# controller-gen pinned in this folder's go.mod:
#   bash conformance/tools/controllergen/generate.sh
# Run it after changing controller/api/...; check the result in.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
bin=${AMBER_DEPS:-$root/.deps}/bin
mkdir -p "$bin"
version=$(awk '{ for (i = 1; i < NF; i++) if ($i == "sigs.k8s.io/controller-tools") print $(i+1) }' "$here/go.mod")
[ -n "$version" ] || { echo "controller-gen: no sigs.k8s.io/controller-tools requirement in $here/go.mod" >&2; exit 1; }
want="sigs.k8s.io/controller-tools@$version $(go env GOVERSION)"
marker="$bin/.controller-gen.version"
if ! [ -x "$bin/controller-gen" ] || ! [ -f "$marker" ] || [ "$(cat "$marker")" != "$want" ]; then
  echo "controller-gen: building $version into $bin"
  (cd "$here" && GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=mod" GOWORK=off \
    go build -o "$bin/controller-gen" sigs.k8s.io/controller-tools/cmd/controller-gen)
  echo "$want" > "$marker"
fi
cd "$root"
"$bin/controller-gen" object paths=./controller/api/...
"$bin/controller-gen" crd paths=./controller/api/... output:crd:artifacts:config=controller/config/crd
"$bin/controller-gen" rbac:roleName=amber-controller paths=./controller/app/... output:rbac:artifacts:config=controller/config/rbac
gofmt -w controller/api
echo "controller-gen: deepcopy, CRDs and RBAC regenerated (controller/api, controller/config/crd, controller/config/rbac)"
