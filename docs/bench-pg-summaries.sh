#!/usr/bin/env bash
# PostgreSQL incremental BASE_BACKUP from WAL summaries: a full backup of a
# pgbench data set on PostgreSQL 17 or 18 (summarize_wal=on), pgbench
# transactions (random rows: changes spread over the whole table), then
# `amber backup --option incremental=summaries`, then an UPDATE of 20000
# adjacent rows (changes in one place) and another incremental; prints
# each backup's time, what the server sent (server_bytes) and what amber
# stored (bytes_added), restores the incremental backup alone and checks
# every pgbench table against the server. Run as root (servers run as the
# postgres user), after `make deps` and `make build`.
# Environment:
#   BENCH_MAJOR      17 or 18 (default 17)
#   BENCH_SCALE      pgbench scale (default 20: about 300 MB)
#   BENCH_TX         pgbench transactions between the first two backups (default 2000)
#   AMBER_DEPS       the deps folder (default .deps)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
deps=${AMBER_DEPS:-$root/.deps}
major=${BENCH_MAJOR:-17}
scale=${BENCH_SCALE:-20}
tx=${BENCH_TX:-2000}
pgbin=$deps/postgresql/$major/bin
client=/usr/lib/postgresql/15/bin
export PATH="$root/bin:$PATH"
say() { printf 'bench-pg-summaries: %s\n' "$*" >&2; }
for tool in amber amber-plugin-postgres "$pgbin/initdb" "$client/pgbench" "$client/psql"; do
  command -v "$tool" >/dev/null || { say "$tool not found: run \`make deps\` and \`make build\`"; exit 1; }
done
as_pg() { runuser -u postgres -- env PATH="$PATH" HOME=/tmp LC_ALL=C "$@"; }
tmp=$(mktemp -d /tmp/amber-bench-summaries.XXXXXX)
chmod 755 "$tmp"; chown postgres: "$tmp"
port=$((20000 + RANDOM % 40000))
cleanup() {
  as_pg "$pgbin/pg_ctl" -D "$tmp/data" -m immediate stop >/dev/null 2>&1 || true
  as_pg "$pgbin/pg_ctl" -D "$tmp/restored" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT
start() { # data dir, port
  as_pg "$pgbin/pg_ctl" -D "$1" -l "$1.log" -w start -o "-p $2 -k $tmp -c listen_addresses=127.0.0.1 \
    -c summarize_wal=on -c max_wal_size=4GB -c shared_buffers=256MB" >/dev/null
}
as_pg "$pgbin/initdb" -D "$tmp/data" -U postgres --auth=trust -E UTF8 --locale=C >/dev/null
echo "host replication all 127.0.0.1/32 trust" >> "$tmp/data/pg_hba.conf"
start "$tmp/data" "$port"
psql() { as_pg "$client/psql" -h "$tmp" -p "$1" -U postgres -X -q -At -v ON_ERROR_STOP=1 postgres "${@:2}"; }
say "pgbench -i -s $scale on PostgreSQL $major"
as_pg "$client/pgbench" -h "$tmp" -p "$port" -U postgres -i -q -s "$scale" postgres >/dev/null 2>&1
psql "$port" -c CHECKPOINT
size=$(psql "$port" -c "SELECT pg_size_pretty(pg_database_size('postgres'))")
export AMBER_REPO=$tmp/repo AMBER_PASSWORD=bench AMBER_CACHE_DIR=-
as_pg env AMBER_REPO="$AMBER_REPO" AMBER_PASSWORD=bench amber repo init >/dev/null
dsn="host=127.0.0.1 port=$port user=postgres dbname=postgres"
backup() {
  local out id meta
  out=$(as_pg env AMBER_REPO="$AMBER_REPO" AMBER_PASSWORD=bench AMBER_CACHE_DIR=- \
    amber backup --engine postgres --dsn "$dsn" --name bench --json --option incremental=summaries)
  id=$(jq -r .id <<<"$out")
  meta=$(as_pg env AMBER_REPO="$AMBER_REPO" AMBER_PASSWORD=bench AMBER_CACHE_DIR=- amber cat manifest "$id" | jq -c .engine_record.metadata)
  printf '%s: %.1f s, server sent %s bytes, amber stored %s bytes (bytes_in %s, files patched %s, bytes kept unread %s)%s\n' \
    "$1" "$(jq .duration_s <<<"$out")" "$(jq -r .server_bytes <<<"$meta")" "$(jq .bytes_added <<<"$out")" \
    "$(jq .bytes_in <<<"$out")" "$(jq '.files_patched // 0' <<<"$out")" "$(jq '.bytes_reused // 0' <<<"$out")" \
    "$(jq -r 'if .incremental then "" else " [full: " + (.incremental_fallback // "no previous backup") + "]" end' <<<"$meta")"
  LAST=$id
}
echo "PostgreSQL $major, pgbench scale $scale ($size), $(nproc) cores"
backup "full backup"
as_pg "$client/pgbench" -h "$tmp" -p "$port" -U postgres -n -t "$tx" postgres >/dev/null 2>&1
backup "incremental after $tx pgbench transactions"
psql "$port" -c "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= 20000"
backup "incremental after an UPDATE of 20000 adjacent rows"
sums() { psql "$1" -c "SELECT string_agg(t || ':' || n, ' ') FROM (SELECT 'a' t, count(*) || '/' || sum(abalance) n FROM pgbench_accounts
  UNION ALL SELECT 'b', count(*) || '/' || sum(bbalance) FROM pgbench_branches UNION ALL SELECT 't', count(*) || '/' || sum(tbalance) FROM pgbench_tellers
  UNION ALL SELECT 'h', count(*) || '/' || sum(delta) FROM pgbench_history) s"; }
want=$(sums "$port")
as_pg env AMBER_REPO="$AMBER_REPO" AMBER_PASSWORD=bench AMBER_CACHE_DIR=- \
  amber restore --engine postgres --data-dir "$tmp/restored" --backup "$LAST" >/dev/null
port2=$((port + 1))
start "$tmp/restored" "$port2"
until [ "$(psql "$port2" -c 'SELECT pg_is_in_recovery()')" = f ]; do sleep 0.2; done
got=$(sums "$port2")
[ "$got" = "$want" ] || { say "restored tables differ: $got, want $want"; exit 1; }
echo "the incremental backup restored alone; pgbench tables equal the server's ($want)"
