#!/usr/bin/env bash
# Builds Prometheus' promtool (github.com/prometheus/prometheus/cmd/promtool,
# pinned below) into $1 (the test bed's bin dir) as `promtool`, unless the
# binary there already comes from the same pin. The chart's tests
# (charts/amber/charttest/promtool_test.go) run `promtool check rules` and
# `promtool test rules` on the PrometheusRule and the dashboard's queries.
# `go install pkg@version` builds it with Prometheus' own go.mod, so
# Prometheus never enters the project's go.mod and no module folder is needed.
# Cold build: a few minutes on 2 cores; cached: instant.
set -euo pipefail
bin=${1:?usage: build.sh <bin-dir>}
mkdir -p "$bin"
bin=$(cd "$bin" && pwd)

version=v0.316.0
want="github.com/prometheus/prometheus/cmd/promtool@$version $(go env GOVERSION) v2"
marker="$bin/.promtool.version"

if [ -x "$bin/promtool" ] && [ -f "$marker" ] && [ "$(cat "$marker")" = "$want" ]; then
  echo "promtool: $version already built in $bin"
  exit 0
fi

echo "promtool: building $version into $bin (takes a few minutes when cold)"
tmp=$(mktemp -d "$bin/.promtool.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# Outside any module (cd /) and without the caller's GOFLAGS/GOWORK, so the
# project's go.mod and go.work play no part. -X sets what `promtool --version`
# reports (otherwise empty).
(
  cd /
  GOFLAGS= GOWORK=off CGO_ENABLED=0 GOBIN="$tmp" \
    go install -trimpath -ldflags "-X github.com/prometheus/common/version.Version=$version" "github.com/prometheus/prometheus/cmd/promtool@$version"
)
mv -f "$tmp/promtool" "$bin/promtool"
echo "$want" > "$marker"
echo "promtool: built $("$bin/promtool" --version 2>/dev/null | head -n1 || echo "$version")"
