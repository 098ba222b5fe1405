#!/usr/bin/env bash
# Physical PostgreSQL backup: amber with --compression fastest (zstd) and
# --compression s2, side by side with pgBackRest --compress-type=lz4, on the
# standard "mixed" data set (pgbench -i -s 10 plus bench_mixed, as in
# docs/bench.sh), built directly in a throwaway cluster. The three backups
# run in turn, BENCH_RUNS rounds (default 3), so that load from elsewhere on
# a shared machine falls on all of them alike. Prints one line per run and a
# Markdown table of the medians; writes nothing under docs/.
# Environment: BENCH_ROWS, BENCH_SCALE (default 6150000, 10), BENCH_RUNS,
# BENCH_PERF=1 (profile one more amber backup of each setting with perf),
# BENCH_DATA_DIR=N (amber reads the data directory itself, `--data-dir` with
# N workers, as pgBackRest does, instead of BASE_BACKUP).
# Needs: bin/amber and bin/amber-plugin-postgres (`make build`), pgbackrest,
# PostgreSQL 15 under /usr/lib/postgresql/15/bin, /usr/bin/time; runs as root.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
rows=${BENCH_ROWS:-6150000}
scale=${BENCH_SCALE:-10}
runs=${BENCH_RUNS:-3}
pgbin=/usr/lib/postgresql/15/bin
export PATH="$root/bin:$PATH"
say() { printf 'bench-compression: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }
for tool in amber amber-plugin-postgres pgbackrest "$pgbin/initdb" /usr/bin/time; do
  command -v "$tool" >/dev/null || die "$tool not found: run \`make build\` and \`make deps\`"
done
amber=$(command -v amber)
# Every tool runs as the postgres OS user (initdb and postgres refuse root).
pg_cmd=(runuser -u postgres -- env PATH="$PATH" HOME=/tmp LC_ALL=C)
as_pg() { "${pg_cmd[@]}" "$@"; }

work=$(mktemp -d /tmp/amber-bench-comp.XXXXXX)
chmod 755 "$work"
chown postgres: "$work"
pgdata=$work/data
port=$((20000 + RANDOM % 40000))
cleanup() {
  as_pg "$pgbin/pg_ctl" -D "$pgdata" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

pgbr_conf=$work/pgbackrest.conf
. "$root/docs/bench-lib.sh"
pgbackrest_conf "$pgbr_conf" "$work" "$pgdata" "$work" "$port"
pgbr_cmd=("${pg_cmd[@]}" pgbackrest --config="$pgbr_conf" --stanza=bench)
pgbr() { "${pgbr_cmd[@]}" "$@"; }

say "creating the data set (pgbench -s $scale, bench_mixed $rows rows) in $pgdata"
as_pg "$pgbin/initdb" -D "$pgdata" -U postgres --auth=trust -E UTF8 --locale=C >/dev/null
as_pg "$pgbin/pg_ctl" -D "$pgdata" -l "$work/server.log" -w -t 600 start -o \
  "-p $port -k $work -c listen_addresses= -c shared_buffers=256MB -c max_wal_size=4GB -c wal_level=replica \
   -c max_wal_senders=10 -c max_replication_slots=10 -c archive_mode=on \
   -c archive_command='pgbackrest --config=$pgbr_conf --stanza=bench archive-push %p'" >/dev/null
psql_() { as_pg "$pgbin/psql" -h "$work" -p "$port" -U postgres -X -q -At -v ON_ERROR_STOP=1 "$@" postgres; }
as_pg "$pgbin/pgbench" -h "$work" -p "$port" -U postgres -i -q -s "$scale" postgres >/dev/null 2>&1
psql_ <<EOF
CREATE TABLE bench_mixed (id bigint PRIMARY KEY, ts timestamptz, amount numeric(12,2), email text, note text);
INSERT INTO bench_mixed SELECT g, timestamptz '2024-01-01' + (g % 5000000) * interval '7 seconds',
  round((random()*100000)::numeric, 2), 'user' || (random()*1000000)::int || '@example.com',
  md5(g::text) || ' ' || substr(md5(random()::text), 1, (random()*32)::int)
FROM generate_series(1, $rows) g;
VACUUM ANALYZE;
CHECKPOINT;
EOF
pgbr stanza-create >/dev/null
pgbr check >/dev/null
db_size=$(du -sb --exclude=pg_wal "$pgdata" | cut -f1)
say "data directory without pg_wal: $db_size bytes"

export AMBER_PASSWORD=bench-password
dsn="host=$work port=$port user=postgres dbname=postgres"
amber_args=()
if [ -n "${BENCH_DATA_DIR:-}" ]; then amber_args=(--data-dir "$pgdata" --option "workers=$BENCH_DATA_DIR"); fi
declare -A walls cpus sizes
# measure KEY CMD...: wall and CPU (user + system of CMD and its children)
# seconds of one run, appended to KEY's lists.
measure() {
  local key=$1 t0 t1 u s
  shift
  sync
  t0=$(date +%s.%N)
  /usr/bin/time -f '%U %S' -o "$work/time" "$@" >/dev/null
  t1=$(date +%s.%N)
  read -r u s < <(tail -1 "$work/time")
  walls[$key]+="$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}') "
  cpus[$key]+="$(awk -v u="$u" -v s="$s" 'BEGIN{printf "%.2f", u+s}') "
}
amber_run() { # fastest|s2
  local r=$work/amber-$1
  rm -rf "$r"
  as_pg env AMBER_REPO="$r" AMBER_CACHE_DIR=- "$amber" repo init --quiet >/dev/null
  measure "amber_$1" "${pg_cmd[@]}" AMBER_REPO="$r" AMBER_CACHE_DIR=- AMBER_COMPRESSION="$1" \
    "$amber" backup --engine postgres --dsn "$dsn" --mode physical "${amber_args[@]}" --json
  sizes[amber_$1]+="$(du -sb "$r" | cut -f1) "
}
pgbr_run() {
  measure pgbr_lz4 "${pgbr_cmd[@]}" --type=full --compress-type=lz4 backup
  local label
  label=$(ls "$work/pgbackrest-repo/backup/bench" | grep 'F$' | sort | tail -1)
  sizes[pgbr_lz4]+="$(du -sb "$work/pgbackrest-repo/backup/bench/$label" | cut -f1) "
}
for i in $(seq 1 "$runs"); do
  for k in fastest s2 lz4; do
    case $k in
    lz4) pgbr_run ;;
    *) amber_run "$k" ;;
    esac
    key=$([ "$k" = lz4 ] && echo pgbr_lz4 || echo "amber_$k")
    say "round $i $key: wall $(awk '{print $NF}' <<<"${walls[$key]}") s, CPU $(awk '{print $NF}' <<<"${cpus[$key]}") s, stored $(awk '{print $NF}' <<<"${sizes[$key]}") bytes"
  done
done

# BENCH_PERF=1: one more backup of each amber setting under `perf record`
# (not timed), and where its CPU went, by process and function, on stderr.
if [ "${BENCH_PERF:-0}" = 1 ] && command -v perf >/dev/null; then
  for k in fastest s2; do
    r=$work/amber-perf-$k
    as_pg env AMBER_REPO="$r" AMBER_CACHE_DIR=- "$amber" repo init --quiet >/dev/null
    perf record -q -F 499 -o "$work/perf-$k.data" -- "${pg_cmd[@]}" AMBER_REPO="$r" AMBER_CACHE_DIR=- AMBER_COMPRESSION="$k" \
      "$amber" backup --engine postgres --dsn "$dsn" --mode physical "${amber_args[@]}" --json >/dev/null 2>&1
    perf report -q -i "$work/perf-$k.data" --stdio --sort comm >"$work/perf-comm.txt" 2>/dev/null
    perf report -q -i "$work/perf-$k.data" --stdio --sort comm,sym >"$work/perf-sym.txt" 2>/dev/null
    say "perf, amber --compression $k: CPU by process"
    grep . "$work/perf-comm.txt" | sed -n 1,4p >&2
    say "perf, amber --compression $k: top functions"
    grep . "$work/perf-sym.txt" | sed -n 1,25p >&2
    rm -rf "$r"
  done
fi

median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END{print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
echo "| backup | wall s (median of $runs; all) | CPU s (median) | MB per CPU-second | stored MB | stored / data dir |"
echo "|---|---|---|---|---|---|"
for key in amber_fastest amber_s2 pgbr_lz4; do
  w=$(median <<<"${walls[$key]}")
  c=$(median <<<"${cpus[$key]}")
  st=$(median <<<"${sizes[$key]}")
  awk -v k="$key" -v w="$w" -v all="${walls[$key]}" -v c="$c" -v d="$db_size" -v s="$st" \
    'BEGIN{printf "| %s | %.2f (%s) | %.2f | %.0f | %.0f | %.2f |\n", k, w, all, c, d/1e6/c, s/1e6, s/d}'
done
echo
echo "data directory (without pg_wal): $(awk -v d="$db_size" 'BEGIN{printf "%.0f", d/1e6}') MB; $(pgbackrest version); amber at $(binary_commit "$amber")"
