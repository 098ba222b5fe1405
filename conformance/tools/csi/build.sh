#!/usr/bin/env bash
# Builds the test bed's volume snapshot pieces into $1 (the test bed's bin
# dir): csi-snapshotter and snapshot-controller from external-snapshotter
# (pinned in this folder's go.mod), amber-csi-hostpath (./hostpath, a CSI
# driver with snapshots for tests only), and copies the VolumeSnapshot CRDs
# of external-snapshotter's client module into $1/snapshot-crds. Kept when
# already built from the same pin, sources and Go version.
# Cold: several minutes on 2 cores (the snapshotter links client-go);
# cached: instant.
set -euo pipefail
bin=${1:?usage: build.sh <bin-dir>}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$bin"
bin=$(cd "$bin" && pwd)

version=$(awk '$1 == "github.com/kubernetes-csi/external-snapshotter/v8" && $2 ~ /^v/ { print $2; exit } $1 == "require" && $2 == "github.com/kubernetes-csi/external-snapshotter/v8" { print $3; exit }' "$here/go.mod")
[ -n "$version" ] || { echo "csi: no github.com/kubernetes-csi/external-snapshotter/v8 requirement in $here/go.mod" >&2; exit 1; }
want="external-snapshotter@$version $(go env GOVERSION) $(cat "$here/go.mod" "$here/hostpath/main.go" | sha256sum | cut -c1-16)"
marker="$bin/.csi.version"
names=(csi-snapshotter snapshot-controller amber-csi-hostpath)

fresh=1
for n in "${names[@]}"; do [ -x "$bin/$n" ] || fresh=0; done
[ -f "$bin/snapshot-crds/snapshot.storage.k8s.io_volumesnapshots.yaml" ] || fresh=0
if [ $fresh = 1 ] && [ -f "$marker" ] && [ "$(cat "$marker")" = "$want" ]; then
  echo "csi: external-snapshotter $version and amber-csi-hostpath already built in $bin"
  exit 0
fi

echo "csi: building csi-snapshotter, snapshot-controller ($version) and amber-csi-hostpath into $bin"
start=$SECONDS
tmp="$bin/.csi.tmp.$$"
trap 'rm -rf "$tmp"' EXIT
rm -rf "$tmp" && mkdir -p "$tmp/snapshot-crds"
(
  cd "$here"
  export GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=mod" GOWORK=off CGO_ENABLED=0
  go build -trimpath -ldflags="-s -w -X main.version=$version" -o "$tmp/" \
    github.com/kubernetes-csi/external-snapshotter/v8/cmd/csi-snapshotter \
    github.com/kubernetes-csi/external-snapshotter/v8/cmd/snapshot-controller
  go build -trimpath -ldflags="-s -w" -o "$tmp/amber-csi-hostpath" ./hostpath
  # The CRDs live in the client module, pinned by the replace line.
  client=$(go list -m -f '{{if .Replace}}{{.Replace.Dir}}{{else}}{{.Dir}}{{end}}' github.com/kubernetes-csi/external-snapshotter/client/v8)
  [ -n "$client" ] || { go mod download github.com/kubernetes-csi/external-snapshotter/client/v8 &&
    client=$(go list -m -f '{{if .Replace}}{{.Replace.Dir}}{{else}}{{.Dir}}{{end}}' github.com/kubernetes-csi/external-snapshotter/client/v8); }
  for k in volumesnapshotclasses volumesnapshotcontents volumesnapshots; do
    cp "$client/config/crd/snapshot.storage.k8s.io_$k.yaml" "$tmp/snapshot-crds/"
  done
)
for n in "${names[@]}"; do mv -f "$tmp/$n" "$bin/$n"; done
rm -rf "$bin/snapshot-crds" && mv "$tmp/snapshot-crds" "$bin/snapshot-crds"
echo "$want" > "$marker"
echo "csi: built ${names[*]} in $((SECONDS - start)) s"
