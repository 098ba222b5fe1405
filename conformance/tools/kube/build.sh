#!/usr/bin/env bash
# Builds the Kubernetes test bed's binaries into $1 (the test bed's bin dir):
# etcd (pinned in etcd/go.mod), then kube-apiserver, then
# kube-controller-manager, kube-scheduler, kubectl and kubelet (pinned in
# go.mod), then kwok (pinned in kwok/go.mod: fake nodes and pods for the
# controller's scale test) with the stages it plays, kwok-stages.yaml. A
# binary already built there from the same pin and Go version is kept. Naming binaries after the bin dir builds only those:
#   build.sh .deps/bin etcd kube-apiserver
# The bin dir then also serves as KUBEBUILDER_ASSETS (envtest wants `etcd`
# and `kube-apiserver` there).
# Cold on 2 cores, idle to heavily shared: etcd 1-5 min, kube-apiserver
# 4-30 min, the other four 10-16 min more, kwok 1-3 min; with Go's build cache warm, only
# the links (a minute or two); already built from the same pin: instant.
set -euo pipefail
bin=${1:?usage: build.sh <bin-dir> [binary...]}
shift
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$bin"
bin=$(cd "$bin" && pwd)

all=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kwok)
want_names=("$@")
[ ${#want_names[@]} -gt 0 ] || want_names=("${all[@]}")
for n in "${want_names[@]}"; do
  case " ${all[*]} " in *" $n "*) ;; *) echo "kube: unknown binary $n (know: ${all[*]})" >&2; exit 2 ;; esac
done
wanted() { case " ${want_names[*]} " in *" $1 "*) return 0 ;; esac; return 1; }

gover=$(go env GOVERSION)
kube_version=$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ { print $2; exit }' "$here/go.mod")
etcd_version=$(awk '$1 == "go.etcd.io/etcd/server/v3" && $2 ~ /^v/ { print $2; exit }' "$here/etcd/go.mod")
kwok_version=$(awk '$1 == "require" { $1 = ""; $0 = $0 } $1 == "sigs.k8s.io/kwok" && $2 ~ /^v/ { print $2; exit }' "$here/kwok/go.mod")
[ -n "$kube_version" ] || { echo "kube: no k8s.io/kubernetes requirement in $here/go.mod" >&2; exit 1; }
[ -n "$etcd_version" ] || { echo "kube: no go.etcd.io/etcd/server/v3 requirement in $here/etcd/go.mod" >&2; exit 1; }
[ -n "$kwok_version" ] || { echo "kube: no sigs.k8s.io/kwok requirement in $here/kwok/go.mod" >&2; exit 1; }

# pin_of prints what a binary is built from; the marker file next to it
# records that, so a changed pin or Go version rebuilds.
pin_of() {
  case $1 in
    etcd) echo "go.etcd.io/etcd/server/v3@$etcd_version $gover" ;;
    kwok) echo "sigs.k8s.io/kwok@$kwok_version $gover" ;;
    *) echo "k8s.io/kubernetes@$kube_version $gover" ;;
  esac
}
fresh() {
  [ -x "$bin/$1" ] && [ -f "$bin/.kube.$1.version" ] && [ "$(cat "$bin/.kube.$1.version")" = "$(pin_of "$1")" ] &&
    { [ "$1" != kwok ] || [ -s "$bin/kwok-stages.yaml" ]; }
}

tmp="$bin/.kube.tmp.$$"
trap 'rm -rf "$tmp"' EXIT

# -mod=mod lets go fill in go.sum entries a newer toolchain wants, without
# ever touching the project's main module.
gobuild() { GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=mod" GOWORK=off go build -trimpath "$@"; }

# The version the binaries report (kubectl version, the node's kubeletVersion);
# upstream sets it the same way through hack/lib/version.sh.
minor=${kube_version#v1.}
minor=${minor%%.*}
ldflags="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $p.gitVersion=$kube_version -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
done

# build <name>...: builds those not already fresh, in one go build so they
# share compiled packages, and installs each atomically. All without cgo, as
# upstream links all but the kubelet: a cgo kubelet would recompile nearly
# every package a second time, and pure Go serves it here as well.
build() {
  local todo=() n
  for n in "$@"; do
    wanted "$n" || continue
    if fresh "$n"; then
      echo "kube: $n $(pin_of "$n") already built in $bin"
    else
      todo+=("$n")
    fi
  done
  [ ${#todo[@]} -gt 0 ] || return 0
  rm -rf "$tmp" && mkdir -p "$tmp"
  local start=$SECONDS pkgs=()
  if [ "${todo[*]}" = etcd ]; then
    echo "kube: building etcd $etcd_version into $bin"
    (cd "$here/etcd" && CGO_ENABLED=0 gobuild -ldflags="-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3)
  elif [ "${todo[*]}" = kwok ]; then
    echo "kube: building kwok $kwok_version into $bin"
    (cd "$here/kwok" && CGO_ENABLED=0 gobuild -ldflags="-s -w" -o "$tmp/kwok" sigs.k8s.io/kwok/cmd/kwok &&
      GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=mod" GOWORK=off go run ./stages >"$tmp/kwok-stages.yaml")
    mv -f "$tmp/kwok-stages.yaml" "$bin/kwok-stages.yaml"
  else
    for n in "${todo[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$n"); done
    echo "kube: building ${todo[*]} ($kube_version) into $bin (minutes when cold)"
    (cd "$here" && CGO_ENABLED=0 gobuild -ldflags="$ldflags" -o "$tmp/" "${pkgs[@]}")
  fi
  for n in "${todo[@]}"; do
    mv -f "$tmp/$n" "$bin/$n"
    pin_of "$n" > "$bin/.kube.$n.version"
  done
  echo "kube: built ${todo[*]} in $((SECONDS - start)) s"
}

# etcd and kube-apiserver first: envtest needs only these two.
build etcd
build kube-apiserver
build kube-controller-manager kube-scheduler kubectl kubelet
build kwok
