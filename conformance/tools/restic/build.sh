#!/usr/bin/env bash
# Builds the restic pinned in this folder's go.mod (./cmd/restic of
# github.com/restic/restic) into $1 (the test bed's bin dir) as `restic`,
# unless the binary there already comes from the same pin. `make bench`
# measures amber against it.
# Cold build: about 2 minutes on 2 cores; cached: instant.
set -euo pipefail
bin=${1:?usage: build.sh <bin-dir>}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$bin"
bin=$(cd "$bin" && pwd)

version=$(awk '$1 == "github.com/restic/restic" { print $2 }' "$here/go.mod")
[ -n "$version" ] || { echo "restic: no github.com/restic/restic requirement in $here/go.mod" >&2; exit 1; }
want="github.com/restic/restic@$version $(go env GOVERSION)"
marker="$bin/.restic.version"

if [ -x "$bin/restic" ] && [ -f "$marker" ] && [ "$(cat "$marker")" = "$want" ]; then
  echo "restic: $version already built in $bin"
  exit 0
fi

echo "restic: building $version into $bin (takes a few minutes when cold)"
tmp="$bin/.restic.tmp.$$"
trap 'rm -f "$tmp"' EXIT
(
  cd "$here"
  # -mod=mod lets go fill in go.sum entries a newer toolchain wants, without
  # ever touching the project's main module.
  GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=mod" GOWORK=off CGO_ENABLED=0 \
    go build -trimpath -o "$tmp" github.com/restic/restic/cmd/restic
)
mv -f "$tmp" "$bin/restic"
echo "$want" > "$marker"
echo "restic: built $("$bin/restic" version 2>/dev/null | head -n1 || echo "$version")"
