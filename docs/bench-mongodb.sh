#!/usr/bin/env bash
# `make bench`, MongoDB part (issue #10): measures amber's logical MongoDB
# backup and restore side by side with `mongodump --archive | zstd` and
# `zstd -dc | mongorestore --archive` (mongo-tools, built by `make deps` from
# conformance/tools/mongotools), the oplog archive lag under a write load and
# the peak RSS of amber and its plugin, and appends a MongoDB section to the
# report that docs/bench.sh writes (replacing an earlier one).
#
# The server is not mongod: no mongod can be installed here, so it is the
# test bed's ferretdb-testbed (FerretDB 1.24 embedded, SQLite handler; see
# docs/engines/mongodb.md), and every figure is one of FerretDB.
#
# The data set: collection bench.bench_mixed, documents shaped like the
# standard data set's bench_mixed table (id, ts, amount, email, note) plus a
# status, tags, a quantity and a text body of common words, about 500 bytes
# of BSON each (plugins/mongodb/mgengine/mgtest/mgbench). It is loaded once
# into a server whose stopped data directory is cached under
# .deps/bench/ferretdb-<MB>mb; each measurement runs on a copy of it.
# Environment (as docs/bench.sh):
#   BENCH_MONGO_MB           MB (10^6 bytes) of BSON documents (default 500, the standard size)
#   BENCH_RUNS               runs of each measurement (default 2; the best time shown,
#                            the peak RSS of all runs)
#   AMBER_DEPS, BENCH_DIR    the deps folder (default .deps) and the cache (default $AMBER_DEPS/bench)
#   BENCH_OUT                report to append to (default docs/benchmarks.md for the
#                            standard size, .deps/bench/benchmarks-quick.md otherwise)
#   BENCH_QUIET_WAIT         seconds to wait for idle cores before each measurement (30)
#   BENCH_DATA_ONLY=1        make (or find) the cached data directory and stop
#   BENCH_MONGO_LAG_SECONDS  length of the write load of the archive lag part (default 30)
#   BENCH_MONGO_LAG_ONLY=1   run only the archive lag part (no data set, no mongo-tools needed)
#                            and print its figures instead of writing the report
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
deps=${AMBER_DEPS:-$root/.deps}
benchdir=${BENCH_DIR:-$deps/bench}
export PATH="$root/bin:$deps/bin:$PATH"

size_mb=${BENCH_MONGO_MB:-500}
runs=${BENCH_RUNS:-2}
lag_seconds=${BENCH_MONGO_LAG_SECONDS:-30}
standard=0
[ "$size_mb" = 500 ] && standard=1
tpl="$benchdir/ferretdb-${size_mb}mb"
if [ "$standard" = 1 ]; then out=${BENCH_OUT:-$root/docs/benchmarks.md}; else out=${BENCH_OUT:-$benchdir/benchmarks-quick.md}; fi

say() { printf 'bench-mongodb: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

for tool in amber amber-plugin-mongodb ferretdb-testbed zstd go /usr/bin/time; do
  command -v "$tool" >/dev/null || die "$tool not found: run \`make deps\` (and \`make build\` for amber)"
done
amber=$(command -v amber)

work=$(mktemp -d "${TMPDIR:-/tmp}/amber-bench-mongo.XXXXXX")
servers=()
cleanup() {
  local p
  for p in "${servers[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
(cd "$root" && go build -o "$work/mgbench" ./plugins/mongodb/mgengine/mgtest/mgbench) || die "could not build mgbench"
mgbench=$work/mgbench

# start_server DIR: starts ferretdb-testbed on DIR (created if missing);
# sets srv_pid and srv_uri (no database).
start_server() {
  local d=$1 i
  mkdir -p "$d"
  ferretdb-testbed -listen 127.0.0.1:0 -dir "$d" >"$d.out" 2>"$d.err" &
  srv_pid=$!
  servers+=("$srv_pid")
  for i in $(seq 1 300); do
    if grep -q '^listening ' "$d.out" 2>/dev/null; then
      srv_uri="mongodb://$(sed -n 's/^listening //p' "$d.out" | head -1)/"
      return 0
    fi
    kill -0 "$srv_pid" 2>/dev/null || { cat "$d.err" >&2; die "ferretdb-testbed on $d exited"; }
    sleep 0.1
  done
  die "ferretdb-testbed on $d not listening after 30 s"
}
stop_server() {
  kill "$1" 2>/dev/null || true
  while kill -0 "$1" 2>/dev/null; do sleep 0.1; done
}

# ---------------------------------------------------------------------------
# Oplog archive lag under load: `amber archive --engine mongodb` (default
# --flush-interval) into a repository on the local disk, on a new server
# with its oplog emulation on, while two sessions insert documents one at a
# time; a probe inserts a marker every 100 ms and reads the newest oplog
# entry after each (mgbench lag).
# measure_lag sets lag to "n p50 p90 p99 max missing writes/s objects/min".
measure_lag() {
  d="$work/lag"
  start_server "$d"
  "$mgbench" oplog -uri "$srv_uri" -mb 1024
  r="$work/amber-archive"
  rm -rf "$r"
  AMBER_REPO="$r" AMBER_CACHE_DIR="$work/amber-cache-arch" "$amber" repo init --json >/dev/null
  AMBER_REPO="$r" AMBER_CACHE_DIR="$work/amber-cache-arch" "$amber" archive --engine mongodb --dsn "$srv_uri" 2>"$work/archive.log" &
  archpid=$!
  sleep 3
  kill -0 "$archpid" 2>/dev/null || die "amber archive exited: $(tail -5 "$work/archive.log")"
  wait_quiet
  say "archive lag: 2 writer sessions inserting for ${lag_seconds} s, a marker every 100 ms"
  lag=$("$mgbench" lag -uri "${srv_uri}lag" -log "$r/log" -seconds "$lag_seconds")
  kill -TERM "$archpid"
  wait "$archpid" || die "amber archive exited with an error after SIGTERM: $(tail -5 "$work/archive.log")"
  stop_server "$srv_pid"
  say "lag (n p50 p90 p99 max missing writes/s objects/min): $lag"
}

make_template() {
  say "creating the data set (${size_mb} MB of documents) in a throwaway FerretDB"
  rm -rf "$tpl.tmp"
  start_server "$tpl.tmp"
  local t0=$SECONDS
  "$mgbench" load -uri "${srv_uri}bench" -mb "$size_mb" >"$tpl.tmp.load" || die "loading failed"
  say "loaded $(cat "$tpl.tmp.load") (documents, bytes) in $((SECONDS - t0)) s"
  stop_server "$srv_pid"
  rm -f "$tpl.tmp.out" "$tpl.tmp.err"
  mkdir -p "$tpl.tmp.d" && mv "$tpl.tmp.load" "$tpl.tmp.d/load" && mv "$tpl.tmp" "$tpl.tmp.d/data"
  mv "$tpl.tmp.d" "$tpl"
}
if [ "${BENCH_MONGO_LAG_ONLY:-0}" = 1 ]; then
  . "$root/docs/bench-lib.sh"
  export AMBER_PASSWORD=bench-password
  amber_ver=$(binary_commit "$amber")
  say "lag only: amber at $amber_ver, load average $(cut -d' ' -f1-3 /proc/loadavg)"
  measure_lag
  read -r lag_n lag_p50 lag_p90 lag_p99 lag_max lag_miss lag_wps lag_objs <<<"$lag"
  printf 'archive lag under load (%s s, %s inserts/s): %s markers: p50 %s s, p90 %s s, p99 %s s, max %s s; %s never durable; %s segment objects/min; amber at %s; load average at the end %s\n' \
    "$lag_seconds" "$lag_wps" "$lag_n" "$lag_p50" "$lag_p90" "$lag_p99" "$lag_max" "$lag_miss" "$lag_objs" "$amber_ver" "$(cut -d' ' -f1-3 /proc/loadavg)"
  exit 0
fi
[ -d "$tpl" ] || make_template
read -r docs data_bytes <"$tpl/load"
say "data set: $tpl ($docs documents, $data_bytes bytes of BSON)"
if [ "${BENCH_DATA_ONLY:-0}" = 1 ]; then exit 0; fi
for tool in mongodump mongorestore; do
  command -v "$tool" >/dev/null || die "$tool not found: run \`make deps\` (conformance/tools/mongotools builds it)"
done

# ---------------------------------------------------------------------------
# Measuring: as docs/bench.sh, plus the peak RSS of amber and its plugin
# together.

declare -A best bestcpu maxrss all stored
. "$root/docs/bench-lib.sh"
amber_ver=$(binary_commit "$amber")
load_start=$(cut -d' ' -f1-3 /proc/loadavg)

# tree_hwm PID: the sum, over PID's descendants, of each one's peak RSS
# (VmHWM, KiB) sampled every 100 ms while PID runs: an upper bound of the
# peak of the processes together (their peaks may not coincide).
tree_hwm() {
  local root=$1 p c kids
  declare -A hwm=()
  while kill -0 "$root" 2>/dev/null; do
    kids=$(ps -o pid= --ppid "$root" 2>/dev/null || true)
    for p in $kids; do
      for c in $p $(ps -o pid= --ppid "$p" 2>/dev/null || true); do
        local v
        v=$(awk '/^VmHWM:/{print $2}' "/proc/$c/status" 2>/dev/null || true)
        [ -n "$v" ] && { [ -z "${hwm[$c]:-}" ] || [ "$v" -gt "${hwm[$c]}" ]; } && hwm[$c]=$v
      done
    done
    sleep 0.1
  done
  local sum=0
  for p in "${!hwm[@]}"; do sum=$((sum + hwm[$p])); done
  echo "$sum"
}

measure() {
  local key=$1; shift
  local t0 t1 wall cpu u s rss pid sampler
  wait_quiet
  t0=$(date +%s.%N)
  /usr/bin/time -f '%U %S %M' -o "$work/time" "$@" &
  pid=$!
  tree_hwm "$pid" >"$work/hwm" &
  sampler=$!
  wait "$pid"
  t1=$(date +%s.%N)
  wait "$sampler"
  wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}')
  read -r u s rss <"$work/time"
  case $key in amber*) rss=$(cat "$work/hwm") ;; esac
  cpu=$(awk -v u="$u" -v s="$s" 'BEGIN{printf "%.2f", u+s}')
  all[$key]="${all[$key]:+${all[$key]} / }$wall"
  if [ -z "${best[$key]:-}" ] || awk -v a="$wall" -v b="${best[$key]}" 'BEGIN{exit !(a<b)}'; then
    best[$key]=$wall bestcpu[$key]=$cpu
  fi
  if [ -z "${maxrss[$key]:-}" ] || [ "$rss" -gt "${maxrss[$key]}" ]; then maxrss[$key]=$rss; fi
  say "$key: ${wall}s wall, ${cpu}s CPU, peak RSS $((rss / 1024)) MiB"
}
export AMBER_PASSWORD=bench-password

# The source: a copy of the data set, with FerretDB's oplog emulation on
# (local.oplog.rs created after the load, so it holds no entry of it), so
# that amber's dump records its oplog window as on a replica set.
cp -a "$tpl/data" "$work/src"
start_server "$work/src"
src_pid=$srv_pid src=${srv_uri}
"$mgbench" oplog -uri "$src" -mb 1024
"$mgbench" sum -uri "${src}bench" >"$work/sum.src"
version="FerretDB $(awk '$1 == "require" && $2 == "github.com/FerretDB/FerretDB" { print $3 }' "$root/conformance/tools/ferretdb/go.mod")"

# check URI LABEL: the restored database equals the source (mgtest.Checksums:
# options, indexes, count and a SHA-256 of the documents in _id order).
check() {
  "$mgbench" sum -uri "$1" >"$work/sum.got"
  cmp -s "$work/sum.src" "$work/sum.got" || die "$2 restored a different database: $(diff "$work/sum.src" "$work/sum.got" | head -5)"
}

run_once() {
  local r="$work/amber-repo" d
  rm -rf "$r" "$work/amber-cache" "$work/dump.archive.zst"
  export AMBER_REPO="$r" AMBER_CACHE_DIR="$work/amber-cache"
  "$amber" repo init --json >/dev/null
  measure amber_backup "$amber" backup --engine mongodb --dsn "${src}bench" --mode logical --json >"$work/backup.json"
  measure mongodump sh -c "mongodump --quiet --uri '${src}bench' --archive | zstd -q -3 >'$work/dump.archive.zst'"
  stored[amber_backup]=$(du -sb "$r" | cut -f1)
  stored[mongodump]=$(stat -c %s "$work/dump.archive.zst")
  id=$(grep -o '"id": *"[0-9a-f]*"' "$work/backup.json" | head -1 | grep -o '[0-9a-f]\{12,\}')

  # Each restore into a new, empty server without an oplog.
  d="$work/dst-amber"
  rm -rf "$d"
  start_server "$d"
  measure amber_restore "$amber" restore --engine mongodb --dsn "${srv_uri}bench" --backup latest
  check "${srv_uri}bench" "amber restore"
  stop_server "$srv_pid"
  rm -rf "$d"
  d="$work/dst-mongorestore"
  start_server "$d"
  measure mongorestore sh -c "zstd -q -dc '$work/dump.archive.zst' | mongorestore --quiet --uri '$srv_uri' --archive"
  check "${srv_uri}bench" "mongorestore"
  stop_server "$srv_pid"
  rm -rf "$d"
}

for i in $(seq 1 "$runs"); do
  say "run $i of $runs"
  run_once
done
stop_server "$src_pid"
measure_lag
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------------------
# The report: a MongoDB section appended to docs/bench.sh's report.

mb() { awk -v b="$1" 'BEGIN{printf "%.0f", b/1e6}'; }
rate() { awk -v b="$data_bytes" -v s="$1" 'BEGIN{printf "%.1f", b/1e6/s}'; }
drate() { awk -v n="$docs" -v s="$1" 'BEGIN{printf "%.0f", n/s}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a/b}'; }
mib() { echo $(($1 / 1024)); }
met() { awk -v a="$1" -v g="$2" -v d="$3" 'BEGIN{ if ((d=="ge" && a>=g) || (d=="le" && a<=g)) print "**met**"; else print "**not met**"}'; }
row() { # label key
  local st=""
  [ -n "${stored[$2]:-}" ] && st=$(mb "${stored[$2]}")
  printf '| %s | %s | %s | %s | %s | %s | %s | %s MiB |\n' "$1" "${best[$2]}" "${all[$2]}" "$(rate "${best[$2]}")" \
    "$(drate "${best[$2]}")" "${bestcpu[$2]}" "$st" "$(mib "${maxrss[$2]}")"
}
read -r lag_n lag_p50 lag_p90 lag_p99 lag_max lag_miss lag_wps lag_objs <<<"$lag"
peak=$(for k in amber_backup amber_restore; do echo "${maxrss[$k]}"; done | sort -n | tail -1)
s_dump=$(ratio "${best[mongodump]}" "${best[amber_backup]}")
s_rest=$(ratio "${best[mongorestore]}" "${best[amber_restore]}")
z=$(ratio "${stored[amber_backup]}" "${stored[mongodump]}")

# How this run was started, when not by a plain \`make bench\`.
invocation=$(env | grep -E '^BENCH_(MONGO_MB|RUNS|QUIET_WAIT|MONGO_LAG_SECONDS)=' | sort | tr '\n' ' ' || true)
[ -n "$invocation" ] && invocation=", run as \`${invocation}bash docs/bench-mongodb.sh\`"
section() {
  cat <<EOF
<!-- bench-mongodb.sh: begin -->
# MongoDB (on FerretDB): amber's logical backup against mongodump and mongorestore

Generated by \`make bench\` (docs/bench-mongodb.sh) on $(date -u '+%Y-%m-%d %H:%M UTC')${invocation}. **The server is not
MongoDB**: no \`mongod\` can be installed on this machine, so every figure here is of FerretDB 1.24 with its
SQLite handler (the test bed's \`ferretdb-testbed\`), which speaks the wire protocol; mongodump and
mongorestore ran against the same FerretDB. They say how amber compares with the stock tools on that server,
not what either reaches on a real \`mongod\`.

## Set-up
- $(nproc) cores; load average (1, 5, 15 min) ${load_start} when measuring began, ${load_end} at the end. The machine
  is shared: $busy_starts of $measurements measurements started with the cores less than 90% idle after waiting
  ${BENCH_QUIET_WAIT:-30} s. Each time is the best of ${runs} run(s), each peak RSS the highest.
- ${version} (\`ferretdb-testbed\`, SQLite), on loopback; the source is a copy of the cached data set with
  the oplog emulation on (\`local.oplog.rs\` created after loading, so it holds none of the load). Every restore
  goes into a new, empty server and is checked equal to the source (\`mgbench sum\`: options, indexes, count and a
  SHA-256 of the documents in \`_id\` order).
- amber at ${amber_ver}, repository on the local disk, compressed (zstd, its default fastest level) and
  encrypted as always; mongodump/mongorestore of mongo-tools 100.10.0 ($(awk '$1 == "require" && $2 == "github.com/mongodb/mongo-tools" { print $3 }' "$root/conformance/tools/mongotools/go.mod"), built by \`make deps\`);
  zstd $(zstd --version | grep -o 'v[0-9.]*' | head -1).
EOF
  if [ "$standard" = 1 ]; then
    echo "- Data set: ${docs} documents, $(mb "$data_bytes") MB of BSON, in one collection (\`bench.bench_mixed\`)"
  else
    echo "- Data set: **a reduced size, not the standard 500 MB**: ${docs} documents, $(mb "$data_bytes") MB of BSON,"
    echo "  in one collection (\`bench.bench_mixed\`)"
  fi
  cat <<EOF
  shaped like the standard data set's bench_mixed rows plus a text body, about $(awk -v b="$data_bytes" -v n="$docs" 'BEGIN{printf "%.0f", b/n}') bytes each
  (\`plugins/mongodb/mgengine/mgtest/mgbench\`); only the \`_id\` index. MB/s and documents/s below are that
  size and count per wall second, for every tool alike.

## Commands
- \`amber backup --engine mongodb --mode logical --dsn mongodb://…/bench\` (with the oplog window, which is
  empty here), restored with \`amber restore --engine mongodb --dsn mongodb://…/bench\`;
- \`mongodump --uri mongodb://…/bench --archive | zstd -3\` (no \`--oplog\`: mongodump allows it only on a
  replica set), restored with \`zstd -dc | mongorestore --archive\`.

## Results
| tool, operation | best s | all runs s | MB/s | documents/s | CPU s | stored MB | peak RSS |
|---|---|---|---|---|---|---|---|
EOF
  row "amber backup" amber_backup
  row "mongodump --archive \| zstd -3" mongodump
  row "amber restore" amber_restore
  row "zstd -dc \| mongorestore --archive" mongorestore
  cat <<EOF

CPU s is user + system of the measured command (for amber: amber and its plugin; the server's own work is not
counted for any tool). amber's peak RSS is the sum of the peaks of amber and of its plugin, each sampled every
100 ms (an upper bound: the two peaks need not coincide); the peers' is that of their largest process.

## Oplog archive lag under load
\`amber archive --engine mongodb\` (default --flush-interval) into a repository on the local disk, on a new
server with the oplog emulation on, while two sessions insert documents one at a time for ${lag_seconds} s
(${lag_wps} inserts/s); a probe inserts a marker every 100 ms and reads the newest oplog entry after each. A
marker's lag is the time from just before its insert to the first listing of the repository (every 10 ms) whose
durable segments reach past that entry, so it is over- rather than under-stated. ${lag_n} markers: p50
${lag_p50} s, p90 ${lag_p90} s, p99 ${lag_p99} s, max ${lag_max} s; ${lag_miss} never durable.

## Ratios from this run
| | measured | |
|---|---|---|
| backup speed, amber against mongodump \| zstd -3 | ${s_dump}× | |
| restore speed, amber against mongorestore | ${s_rest}× | |
| stored size, amber against mongodump \| zstd -3 | ${z}× | |
| amber's peak RSS (amber + plugin) ≤ 256 MiB | $(mib "$peak") MiB | $(met "$(mib "$peak")" 256 le) |
| archive lag p99 under load, default --flush-interval | ${lag_p99} s | |

## What limits it
- FerretDB. Its SQLite handler keeps documents as JSON text and converts each to BSON when read and back when written:
  the server, not the tools, spends most of the CPU (amber and its plugin used ${bestcpu[amber_backup]} s of CPU for
  the backup and ${bestcpu[amber_restore]} s for the restore, $(awk -v c="${bestcpu[amber_backup]}" -v w="${best[amber_backup]}" 'BEGIN{printf "%.2f", c/w}') and $(awk -v c="${bestcpu[amber_restore]}" -v w="${best[amber_restore]}" 'BEGIN{printf "%.2f", c/w}') cores of the $(nproc)), and
  SQLite allows one writer at a time, so parallel inserts do not add up.
- FerretDB's oplog emulation has no index, and its \`explain\` reports neither the filter nor the limit pushed down: every query of it (the
  newest entry, a range of \`ts\`) reads and converts the whole collection. amber's dump queries it twice (the
  newest entry before reading, the window after), so a dump on a FerretDB whose oplog holds N entries pays
  about two reads of N documents more; here the oplog is empty, as it would be cheap on \`mongod\`, where
  both queries are short.
- The lag part runs on a FerretDB whose oplog grows with every insert, and the probe's read of the newest
  entry reads it whole each time, so the probe inserted ${lag_n} markers in ${lag_seconds} s instead of one every 100 ms;
  the lag includes the archiver's own reads of that oplog and every other process on the shared cores.
- On $(nproc) shared cores the server, the tool and amber compete for the same CPUs; the ratios are of one run.
<!-- bench-mongodb.sh: end -->
EOF
}

touch "$out"
awk '/^<!-- bench-mongodb.sh: begin -->$/{skip=1} !skip{print} /^<!-- bench-mongodb.sh: end -->$/{skip=0}' "$out" >"$out.tmp"
{ printf '%s\n\n' "$(cat "$out.tmp")"; section; } >"$out.new"
rm -f "$out.tmp"
mv "$out.new" "$out"
say "appended the MongoDB section to ${out#"$root"/}"
