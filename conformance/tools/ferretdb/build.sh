#!/usr/bin/env bash
# Builds ferretdb-testbed (FerretDB pinned in this folder's go.mod, embedded
# with its SQLite handler) into $1 (the test bed's bin dir), unless the
# binary there already comes from the same pin and sources.
# Cold build: about a minute on 2 cores; cached: instant.
set -euo pipefail
bin=${1:?usage: build.sh <bin-dir>}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$bin"
bin=$(cd "$bin" && pwd)

version=$(awk '$1 == "github.com/FerretDB/FerretDB" { print $2 } $1 == "require" && $2 == "github.com/FerretDB/FerretDB" { print $3 }' "$here/go.mod")
[ -n "$version" ] || { echo "ferretdb: no github.com/FerretDB/FerretDB requirement in $here/go.mod" >&2; exit 1; }
want="github.com/FerretDB/FerretDB@$version $(go env GOVERSION) $(cat "$here/main.go" | sha256sum | cut -c1-16)"
marker="$bin/.ferretdb-testbed.version"

if [ -x "$bin/ferretdb-testbed" ] && [ -f "$marker" ] && [ "$(cat "$marker")" = "$want" ]; then
  echo "ferretdb: $version already built in $bin"
  exit 0
fi

echo "ferretdb: building $version into $bin"
tmp="$bin/.ferretdb-testbed.tmp.$$"
trap 'rm -f "$tmp"' EXIT
(
  cd "$here"
  GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=mod" GOWORK=off CGO_ENABLED=0 \
    go build -trimpath -o "$tmp" .
)
mv -f "$tmp" "$bin/ferretdb-testbed"
echo "$want" > "$marker"
echo "ferretdb: built ferretdb-testbed ($version)"
