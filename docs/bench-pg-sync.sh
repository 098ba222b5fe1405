#!/usr/bin/env bash
# What `amber archive --synchronous` adds to commit latency (issue #13):
# pgbench -c 4 -j 2 (TPC-B-like, scale 5) on a throwaway PostgreSQL 15
# cluster with synchronous_commit=on, three ways, each into a fresh file
# repository:
#   none          no synchronous standby (amber archive runs, not named)
#   named         amber archive (default --flush-interval 500ms) named in
#                 synchronous_standby_names
#   synchronous   amber archive --synchronous named in synchronous_standby_names
# Prints per-transaction latency p50/p90/p99 (pgbench -l) and TPS of each,
# and what the archiver stored and the CPU it (amber and its plugin) used.
# Needs root (the cluster runs as the postgres user), bin/amber and
# bin/amber-plugin-postgres (`make build`). Environment:
#   BENCH_SYNC_SECONDS  length of each pgbench run (default 30)
#   BENCH_SYNC_FSYNC    the cluster's fsync (default on)
#   BENCH_SYNC_MODES    which of the three to run (default "none named synchronous")
#   BENCH_SYNC_BIN      directory of amber and amber-plugin-postgres (default bin)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
pgbin=/usr/lib/postgresql/15/bin
secs=${BENCH_SYNC_SECONDS:-30}
fsync=${BENCH_SYNC_FSYNC:-on}
modes=${BENCH_SYNC_MODES:-none named synchronous}
bindir=${BENCH_SYNC_BIN:-$root/bin}
amber="$bindir/amber"
[ -x "$amber" ] && [ -x "$bindir/amber-plugin-postgres" ] || { echo "run make build first" >&2; exit 1; }
say() { printf 'bench-pg-sync: %s\n' "$*" >&2; }
as_pg() { runuser -u postgres -- env HOME=/tmp LC_ALL=C "$@"; }

work=$(mktemp -d /tmp/amber-bench-sync.XXXXXX)
chmod 755 "$work"
chown postgres: "$work"
port=$((20000 + RANDOM % 40000))
archpid=
cleanup() {
  [ -n "$archpid" ] && kill "$archpid" 2>/dev/null
  as_pg "$pgbin/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
as_pg "$pgbin/initdb" -D "$work/data" -U postgres --auth=trust -E UTF8 --locale=C >/dev/null
as_pg "$pgbin/pg_ctl" -D "$work/data" -l "$work/server.log" -w start -o \
  "-p $port -k $work -c listen_addresses=127.0.0.1 -c fsync=$fsync -c synchronous_commit=on -c wal_level=replica \
   -c max_wal_senders=4 -c max_replication_slots=4 -c shared_buffers=128MB" >/dev/null
psql_() { as_pg "$pgbin/psql" -h "$work" -p "$port" -U postgres -X -q -A -t -v ON_ERROR_STOP=1 "$@" postgres; }
as_pg "$pgbin/pgbench" -h "$work" -p "$port" -U postgres -i -q -s 5 postgres >/dev/null 2>&1
dsn="host=127.0.0.1 port=$port user=postgres dbname=postgres sslmode=disable"

run() { # mode
  local mode=$1 r="$work/repo-$1" flags=()
  [ "$mode" = synchronous ] && flags=(--synchronous)
  psql_ -c CHECKPOINT
  lsn0=$(psql_ -c "SELECT pg_current_wal_lsn()")
  as_pg env AMBER_REPO="$r" AMBER_PASSWORD=bench AMBER_CACHE_DIR=- "$amber" repo init --json >/dev/null
  runuser -u postgres -- env HOME=/tmp LC_ALL=C AMBER_REPO="$r" AMBER_PASSWORD=bench AMBER_CACHE_DIR=- \
    /usr/bin/time -f '%U %S' -o "$work/cpu-$mode" \
    "$amber" archive --engine postgres --dsn "$dsn" --json "${flags[@]}" >"$work/report-$mode.json" 2>"$work/archive-$mode.log" &
  archpid=$!
  until [ "$(psql_ -c "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'amber' AND active")" = 1 ]; do
    kill -0 "$archpid" 2>/dev/null || { cat "$work/archive-$mode.log" >&2; exit 1; }
    sleep 0.2
  done
  if [ "$mode" != none ]; then
    psql_ -c "ALTER SYSTEM SET synchronous_standby_names = 'amber'" -c "SELECT pg_reload_conf()" >/dev/null
    until [ "$(psql_ -c "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'amber'")" = sync ]; do sleep 0.2; done
  fi
  (cd "$work" && as_pg "$pgbin/pgbench" -h "$work" -p "$port" -U postgres -n -c 4 -j 2 -T "$secs" -l --log-prefix="$work/tx-$mode" postgres >"$work/pgbench-$mode.txt" 2>&1)
  psql_ -c "ALTER SYSTEM RESET synchronous_standby_names" -c "SELECT pg_reload_conf()" >/dev/null
  # SIGTERM to amber itself (runuser would SIGKILL it): it makes what it
  # holds durable and prints its report.
  kill -TERM "$(pgrep -P "$(pgrep -P "$archpid")")"
  wait "$archpid" || true
  archpid=
  local stored cpu
  stored=$(grep -o '"bytes": *[0-9]*' "$work/report-$mode.json" | grep -o '[0-9]*$' | awk '{printf "%.1f", $1/1e6}')
  cpu=$(awk '{printf "%.1f", $1+$2}' "$work/cpu-$mode")
  wal=$(awk -v b="$(psql_ -c "SELECT pg_current_wal_lsn() - '$lsn0'")" 'BEGIN{printf "%.1f", b/1e6}')
  psql_ -c "SELECT pg_drop_replication_slot('amber')" >/dev/null
  local tps
  tps=$(grep -o 'tps = [0-9.]*' "$work/pgbench-$mode.txt" | head -1 | awk '{printf "%.0f", $3}')
  # pgbench -l: column 3 is the transaction's latency in microseconds.
  cat "$work"/tx-"$mode".* | awk '{print $3}' | sort -n | awk -v mode="$mode" -v tps="$tps" -v st="$stored" -v cpu="$cpu" -v wal="$wal" '
    { v[NR] = $1 }
    END {
      printf "| %s | %d | %.1f | %.1f | %.1f | %s | %s | %s | %s |\n", mode, NR, v[int(NR*0.50)]/1000, v[int(NR*0.90)]/1000, v[int(NR*0.99)]/1000, tps, wal, st, cpu }'
}
say "pgbench -c 4 -j 2 -T $secs, scale 5, fsync=$fsync, synchronous_commit=on; PostgreSQL $("$pgbin/postgres" --version | awk '{print $3}'); load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "| synchronous standby | transactions | p50 ms | p90 ms | p99 ms | TPS | WAL written MB | archiver stored MB | archiver CPU s |"
echo "|---|---|---|---|---|---|---|---|---|"
for m in $modes; do run "$m"; done
