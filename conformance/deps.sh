#!/usr/bin/env bash
# Installs or builds what Amber's tests and benchmarks need, idempotently.
# Debian packages go through apt; Go-built servers, peers and tools (MinIO,
# restic, helm, promtool) land in $1/bin (git-ignored).
set -euo pipefail
DEPS=${1:-.deps}
mkdir -p "$DEPS/bin"
DEPS=$(cd "$DEPS" && pwd)
here=$(cd "$(dirname "$0")" && pwd)

need_pkgs=()
want() { command -v "$1" >/dev/null 2>&1 || [ -x "$2" ] || need_pkgs+=("$3"); }
want pg_dump /usr/lib/postgresql/15/bin/initdb postgresql-15
want pgbackrest /usr/bin/pgbackrest pgbackrest
want zstd /usr/bin/zstd zstd
want /usr/bin/time /usr/bin/time time
# npm fetches the PostgreSQL 13, 14, 16, 17 and 18 server packages (tools/postgres/build.sh).
want npm /usr/bin/npm npm
# The Kubernetes test bed's node: containerd and runc run the pods, the CNI
# bridge and host-local plugins give them addresses, busybox-static is the
# shell in the test images, gcc and libc6-dev compile the static pause
# program, iproute2 makes the node's interface, iptables is what the kubelet
# and CNI plugins call.
want containerd /usr/bin/containerd containerd
want runc /usr/sbin/runc runc
want /usr/lib/cni/bridge /usr/lib/cni/bridge containernetworking-plugins
ldd /bin/busybox 2>&1 | grep -q 'not a dynamic executable' || need_pkgs+=(busybox-static)
want iptables /usr/sbin/iptables iptables
want ip /usr/sbin/ip iproute2
want gcc /usr/bin/gcc gcc
[ -f "/usr/lib/$(uname -m)-linux-gnu/libc.a" ] || need_pkgs+=(libc6-dev)
# MariaDB for the MySQL plugin's test bed and conformance run.
want mariadbd /usr/sbin/mariadbd mariadb-server
want mariadb /usr/bin/mariadb mariadb-client
want mariadb-backup /usr/bin/mariadb-backup mariadb-backup
# mydumper/myloader: a peer in `make bench` (docs/bench-mysql.sh).
want mydumper /usr/bin/mydumper mydumper
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "deps: apt-get install ${need_pkgs[*]}"
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
  else
    echo "deps: not root; install these Debian packages yourself: ${need_pkgs[*]}" >&2
  fi
fi

# Go-built servers, peers and tools (MinIO, restic, ferretdb-testbed for MongoDB,
# helm, promtool, the volume snapshot pieces of tools/csi: csi-snapshotter,
# snapshot-controller, the test CSI driver amber-csi-hostpath and the
# VolumeSnapshot CRDs, ...):
# each from its own tools module, pinned, cached in $DEPS/bin.
for script in "$here"/tools/*/build.sh; do
  [ -f "$script" ] && bash "$script" "$DEPS/bin"
done
echo "deps: ready in $DEPS"
