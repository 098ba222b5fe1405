#!/usr/bin/env bash
# Builds MongoDB's database tools mongodump and mongorestore (the module
# github.com/mongodb/mongo-tools pinned in this folder's go.mod: release
# 100.10.0, commit 6d4f001be3fc; pure Go, no cgo) into $1 (the test bed's
# bin dir), unless the binaries there already come from the same pin.
# The proxy serves this version but the checksum database does not know it:
# go.sum here pins its hash. Cold build: about a minute on 2 cores.
set -euo pipefail
bin=${1:?usage: build.sh <bin-dir>}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$bin"
bin=$(cd "$bin" && pwd)

version=$(awk '$1 == "require" && $2 == "github.com/mongodb/mongo-tools" { print $3 }' "$here/go.mod")
[ -n "$version" ] || { echo "mongotools: no github.com/mongodb/mongo-tools requirement in $here/go.mod" >&2; exit 1; }
want="github.com/mongodb/mongo-tools@$version $(go env GOVERSION)"
marker="$bin/.mongotools.version"

if [ -x "$bin/mongodump" ] && [ -x "$bin/mongorestore" ] && [ -f "$marker" ] && [ "$(cat "$marker")" = "$want" ]; then
  echo "mongotools: $version already built in $bin"
  exit 0
fi

echo "mongotools: building mongodump and mongorestore $version into $bin"
tmp="$bin/.mongotools.tmp.$$"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp"
for tool in mongodump mongorestore; do
  (
    cd "$here"
    GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=mod" GOWORK=off CGO_ENABLED=0 GONOSUMDB=github.com/mongodb/mongo-tools \
      go build -trimpath -o "$tmp/$tool" "github.com/mongodb/mongo-tools/$tool/main"
  )
done
mv -f "$tmp/mongodump" "$tmp/mongorestore" "$bin/"
echo "$want" > "$marker"
echo "mongotools: built mongodump and mongorestore ($version)"
