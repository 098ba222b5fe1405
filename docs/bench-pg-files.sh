#!/usr/bin/env bash
# PostgreSQL physical backups that read the data directory (`amber backup
# --data-dir`), side by side in one run with amber's BASE_BACKUP backup and
# pgBackRest (process-max=2, lz4 and zst): full backups, then a second
# backup after pgbench has changed the pgbench tables (amber into the same
# repository, pgBackRest --type=incr). amber's second --data-dir backup is
# incremental: it reads only the files changed since the first, and the
# section says how many it read and reused. Each amber --data-dir pair is
# also restored (the second backup) and checked (not timed). Writes
# (replacing an earlier one) a section of BENCH_OUT.
#
# The data set is the standard "mixed" one (pgbench -i -s 10 plus
# bench_mixed, as in docs/benchmarks.md) or a reduced one: the cluster
# docs/bench-postgres.sh caches, or else one loaded directly (no dump) and
# cached stopped under $BENCH_DIR/pgdata-files-s<scale>-r<rows>; every run
# copies it.
# Environment:
#   BENCH_ROWS, BENCH_SCALE  data set (default: the standard 6150000 rows, scale 10)
#   BENCH_RUNS               runs of each measurement (default 2; best time shown)
#   BENCH_PG_WORKERS         --option workers=N values for amber --data-dir (default "2 4")
#   BENCH_PGBENCH_SECONDS    pgbench load between the full and the second backup (default 60)
#   AMBER_DEPS, BENCH_DIR    the deps folder (default .deps) and the cache (default $AMBER_DEPS/bench)
#   BENCH_OUT                report (default docs/benchmarks.md for the standard set,
#                            $BENCH_DIR/benchmarks-quick.md otherwise)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
deps=${AMBER_DEPS:-$root/.deps}
benchdir=${BENCH_DIR:-$deps/bench}
export PATH="$root/bin:$deps/bin:$PATH"
rows=${BENCH_ROWS:-6150000}
scale=${BENCH_SCALE:-10}
runs=${BENCH_RUNS:-2}
workers_list=${BENCH_PG_WORKERS:-2 4}
load_seconds=${BENCH_PGBENCH_SECONDS:-60}
standard=0
if [ "$rows" = 6150000 ] && [ "$scale" = 10 ]; then standard=1; fi
tpl="$benchdir/pgdata-files-s${scale}-r${rows}"
# docs/bench-postgres.sh's cached cluster holds the same data set: use it when there.
if [ "$standard" = 1 ]; then pgtpl="$benchdir/pgdata-mixed"; else pgtpl="$benchdir/pgdata-s${scale}-r${rows}"; fi
[ -f "$pgtpl/PG_VERSION" ] && tpl=$pgtpl
if [ "$standard" = 1 ]; then out=${BENCH_OUT:-$root/docs/benchmarks.md}; else out=${BENCH_OUT:-$benchdir/benchmarks-quick.md}; fi
pgbin=/usr/lib/postgresql/15/bin

say() { printf 'bench-pg-files: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }
for tool in amber amber-plugin-postgres pgbackrest "$pgbin/initdb" "$pgbin/pgbench" /usr/bin/time; do
  command -v "$tool" >/dev/null || die "$tool not found: run \`make deps\` (and \`make build\` for amber)"
done
amber=$(command -v amber)
as_pg() { runuser -u postgres -- env PATH="$PATH" HOME=/tmp LC_ALL=C "$@"; }
export -f as_pg
free_port() {
  local port
  while :; do
    port=$((20000 + RANDOM % 40000))
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
  done
}

make_template() {
  local tmp port
  tmp=$(mktemp -d /tmp/amber-bench-pgtpl.XXXXXX)
  chmod 755 "$tmp"; chown postgres: "$tmp"
  port=$(free_port)
  trap "as_pg $pgbin/pg_ctl -D '$tmp/data' -m immediate stop >/dev/null 2>&1 || true; rm -rf '$tmp'" EXIT
  say "creating the data set (pgbench -s $scale, bench_mixed $rows rows), cached in ${tpl#"$root"/}"
  as_pg "$pgbin/initdb" -D "$tmp/data" -U postgres --auth=trust -E UTF8 --locale=C >/dev/null
  as_pg "$pgbin/pg_ctl" -D "$tmp/data" -l "$tmp/server.log" -w start -o \
    "-p $port -k $tmp -c listen_addresses= -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
     -c wal_level=minimal -c max_wal_senders=0 -c max_wal_size=8GB -c shared_buffers=512MB -c maintenance_work_mem=512MB" >/dev/null
  as_pg "$pgbin/pgbench" -h "$tmp" -p "$port" -U postgres -i -q -s "$scale" postgres >/dev/null 2>&1
  as_pg "$pgbin/psql" -h "$tmp" -p "$port" -U postgres -X -q -v ON_ERROR_STOP=1 postgres >/dev/null <<SQL
CREATE TABLE bench_mixed (id bigint PRIMARY KEY, ts timestamptz, amount numeric(12,2), email text, note text);
INSERT INTO bench_mixed SELECT g, timestamptz '2024-01-01' + (g % 5000000) * interval '7 seconds',
  round((random()*100000)::numeric, 2), 'user' || (random()*1000000)::int || '@example.com',
  md5(g::text) || ' ' || substr(md5(random()::text), 1, (random()*32)::int)
FROM generate_series(1, $rows) g;
VACUUM ANALYZE;
SQL
  as_pg "$pgbin/pg_ctl" -D "$tmp/data" -m fast -w stop >/dev/null
  sync
  mkdir -p "$benchdir"
  rm -rf "$tpl.tmp"; mv "$tmp/data" "$tpl.tmp"; mv "$tpl.tmp" "$tpl"
  rm -rf "$tmp"
  trap - EXIT
}
[ -f "$tpl/PG_VERSION" ] || make_template

work=$(mktemp -d "${TMPDIR:-/tmp}/amber-bench-pgfiles.XXXXXX")
chmod 755 "$work"; chown postgres: "$work"
sock=$work port=$(free_port) pgdata="$work/primary"
cleanup() {
  as_pg "$pgbin/pg_ctl" -D "$pgdata" -m immediate stop >/dev/null 2>&1 || true
  as_pg "$pgbin/pg_ctl" -D "$work/restored" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

pgbr_conf=$work/pgbackrest.conf
# shellcheck source=docs/bench-lib.sh
. "$root/docs/bench-lib.sh"
pgbackrest_conf "$pgbr_conf" "$work" "$pgdata" "$sock" "$port"
pgbr() { as_pg pgbackrest --config="$pgbr_conf" --stanza=bench "$@"; }
export -f pgbr
export pgbr_conf
opts="-c listen_addresses= -k $sock -c shared_buffers=256MB -c max_wal_size=4GB -c wal_level=replica -c max_wal_senders=10 -c max_replication_slots=10"

# fresh_primary: a new copy of the template, archiving to a new pgBackRest repository.
fresh_primary() {
  as_pg "$pgbin/pg_ctl" -D "$pgdata" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$pgdata" "$work/pgbackrest-repo"
  cp -a "$tpl" "$pgdata"
  as_pg "$pgbin/pg_ctl" -D "$pgdata" -l "$work/primary.log" -w -t 300 start -o "-p $port $opts -c archive_mode=on \
    -c archive_command='pgbackrest --config=$pgbr_conf --stanza=bench archive-push %p'" >/dev/null
  pgbr stanza-create >/dev/null
}
dsn="host=$sock port=$port user=postgres dbname=postgres"
psql_() { as_pg "$pgbin/psql" -h "$sock" -p "$port" -U postgres -X -q -At -v ON_ERROR_STOP=1 "$@"; }

export AMBER_PASSWORD=bench-password
declare -A best bestcpu all stored report
quiet_default=30
# measure KEY CMD...: best wall time of the runs and that run's CPU seconds
# (user + system of the command and its children; not the server's).
measure() {
  local key=$1; shift
  local t0 t1 wall u s
  wait_quiet
  t0=$(date +%s.%N)
  /usr/bin/time -f '%U %S' -o "$work/time" bash -c '"$@"' _ "$@" || die "$key failed: $*"
  t1=$(date +%s.%N)
  wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}')
  read -r u s < <(tail -1 "$work/time")
  all[$key]="${all[$key]:+${all[$key]} / }$wall"
  if [ -z "${best[$key]:-}" ] || awk -v a="$wall" -v b="${best[$key]}" 'BEGIN{exit !(a<b)}'; then
    best[$key]=$wall bestcpu[$key]=$(awk -v u="$u" -v s="$s" 'BEGIN{printf "%.2f", u+s}')
  fi
  say "$key: ${wall}s wall, $(awk -v u="$u" -v s="$s" 'BEGIN{printf "%.2f", u+s}')s CPU"
}
amber_in() { as_pg env AMBER_REPO="$1" AMBER_CACHE_DIR=- "$amber" "${@:2}" >"${AMBER_OUT:-/dev/null}"; }
export -f amber_in
export amber

# amber_pair KEY REPO ARGS...: a full backup into a new repository, pgbench,
# then a second backup into the same repository.
amber_pair() {
  local key=$1 r=$2; shift 2
  rm -rf "$r"
  amber_in "$r" repo init --json
  measure "$key" amber_in "$r" backup --engine postgres --dsn "$dsn" --mode physical --json "$@"
  stored[$key]=$(du -sb "$r" | cut -f1)
  as_pg "$pgbin/pgbench" -h "$sock" -p "$port" -U postgres -n -c 2 -j 2 -T "$load_seconds" postgres >/dev/null 2>&1
  AMBER_OUT="$work/${key}_2.json" measure "${key}_2" amber_in "$r" backup --engine postgres --dsn "$dsn" --mode physical --json "$@"
  stored[${key}_2]=$(( $(du -sb "$r" | cut -f1) - stored[$key] ))
  for f in bytes_in files_read files_reused bytes_reused; do
    report[${key}_2.$f]=$(grep -o "\"$f\": *[0-9]*" "$work/${key}_2.json" | grep -o '[0-9]*$' || echo 0)
  done
}
pgbr_pair() { # lz4|zst
  local key=pgbr_$1 label
  measure "$key" pgbr --type=full --compress-type="$1" backup
  label=$(ls "$work/pgbackrest-repo/backup/bench" | grep 'F$' | sort | tail -1)
  stored[$key]=$(du -sb "$work/pgbackrest-repo/backup/bench/$label" | cut -f1)
  as_pg "$pgbin/pgbench" -h "$sock" -p "$port" -U postgres -n -c 2 -j 2 -T "$load_seconds" postgres >/dev/null 2>&1
  measure "${key}_2" pgbr --type=incr --compress-type="$1" backup
  label=$(ls "$work/pgbackrest-repo/backup/bench" | grep 'I$' | sort | tail -1)
  stored[${key}_2]=$(du -sb "$work/pgbackrest-repo/backup/bench/$label" | cut -f1)
}
# check_restore REPO: restore the latest backup (the second, incremental one
# for --data-dir), start it, count rows (untimed).
check_restore() {
  local d="$work/restored" p n
  rm -rf "$d" "$d.amber"
  amber_in "$1" restore --engine postgres --data-dir "$d"
  p=$(free_port)
  as_pg "$pgbin/pg_ctl" -D "$d" -l "$d.log" -w -t 600 start -o "-p $p $opts" >/dev/null
  until [ "$(as_pg "$pgbin/psql" -h "$sock" -p "$p" -U postgres -X -At -c 'SELECT pg_is_in_recovery()' postgres 2>/dev/null)" = f ]; do sleep 0.1; done
  n=$(as_pg "$pgbin/psql" -h "$sock" -p "$p" -U postgres -X -At -c 'SELECT count(*) FROM bench_mixed' postgres)
  as_pg "$pgbin/pg_ctl" -D "$d" -m fast -w stop >/dev/null
  rm -rf "$d" "$d.log" "$d.amber"
  [ "$n" = "$rows" ] || die "the backup in $1 restored $n rows of bench_mixed, want $rows"
}

db_size=$(du -sb --exclude=pg_wal "$tpl" | cut -f1)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
for i in $(seq 1 "$runs"); do
  say "run $i of $runs"
  fresh_primary
  amber_pair amber_bb "$work/amber-bb"
  for w in $workers_list; do
    amber_pair "amber_files_$w" "$work/amber-files-$w" --data-dir "$pgdata" --option "workers=$w"
    [ "$i" = 1 ] && check_restore "$work/amber-files-$w"
    rm -rf "$work/amber-files-$w"
  done
  rm -rf "$work/amber-bb"
  pgbr_pair lz4
  fresh_primary
  pgbr_pair zst
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

mb() { awk -v b="$1" 'BEGIN{printf "%.0f", b/1e6}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a/b}'; }
row() { # label key
  printf '| %s | %s | %s | %s | %s | %s |\n' "$1" "${best[$2]}" "${all[$2]}" "$(awk -v b="$db_size" -v s="${best[$2]}" 'BEGIN{printf "%.0f", b/1e6/s}')" \
    "${bestcpu[$2]}" "$(mb "${stored[$2]}")"
}
fastest=""
for w in $workers_list; do
  if [ -z "$fastest" ] || awk -v a="${best[amber_files_$w]}" -v b="${best[$fastest]}" 'BEGIN{exit !(a<b)}'; then fastest=amber_files_$w; fi
done
met() { awk -v a="$1" -v g="$2" -v d="$3" 'BEGIN{ if ((d=="ge" && a>=g) || (d=="le" && a<=g)) print "**met**"; else print "**not met**"}'; }
r_speed=$(ratio "${best[pgbr_lz4]}" "${best[$fastest]}")
r_size=$(ratio "${stored[$fastest]}" "${stored[pgbr_zst]}")
r_incr=$(ratio "${best[pgbr_lz4_2]}" "${best[${fastest}_2]}")
r_incr_size=$(ratio "${stored[${fastest}_2]}" "${stored[pgbr_lz4_2]}")

section() {
  cat <<EOF
<!-- bench-pg-files.sh: begin -->
# PostgreSQL: backups that read the data directory (\`amber backup --data-dir\`)

<!-- Generated by docs/bench-pg-files.sh. Do not edit by hand. -->

Measured on $(date -u +%Y-%m-%d) by \`bash docs/bench-pg-files.sh\`$( [ "$standard" = 1 ] || echo " with BENCH_SCALE=${scale} BENCH_ROWS=${rows}"), amber at $(binary_commit "$amber"),
$(pgbackrest version), PostgreSQL $("$pgbin/postgres" --version | awk '{print $3}'), $(nproc) cores; load average ${load_start} at the
start, ${load_end} at the end. ${runs} runs of each; the best shown, every run listed.
$(if [ "$standard" = 1 ]; then echo "The standard \"mixed\" data set"; else echo "**A reduced data set, not the standard one** (pgbench scale ${scale}, ${rows} rows of bench_mixed)"; fi): data directory
$(mb "$db_size") MB without pg_wal. The server archives to pgBackRest (archive_mode=on) throughout, as pgBackRest needs.

Each amber backup goes into a new encrypted file repository; its "second" backup goes into the same
repository after \`pgbench -n -c 2 -j 2 -T ${load_seconds}\`, and its stored MB is what that backup added. pgBackRest runs
\`--type=full\`, then \`--type=incr\` after the same pgbench load, process-max=2; stored MB is the backup's
directory (without the WAL archive). CPU s is the command's and its children's (amber and its plugin),
not the server's: for amber's BASE_BACKUP a walsender process reads the files, uncounted.

| backup | best s | all runs s | MB/s | CPU s | stored MB |
|---|---|---|---|---|---|
EOF
  row "amber BASE_BACKUP, full" amber_bb
  for w in $workers_list; do row "amber --data-dir, workers=$w, full" "amber_files_$w"; done
  row "pgBackRest full, lz4" pgbr_lz4
  row "pgBackRest full, zst" pgbr_zst
  row "amber BASE_BACKUP, second after pgbench" amber_bb_2
  for w in $workers_list; do row "amber --data-dir, workers=$w, second after pgbench" "amber_files_${w}_2"; done
  row "pgBackRest incr after pgbench, lz4" pgbr_lz4_2
  row "pgBackRest incr after pgbench, zst" pgbr_zst_2
  cat <<EOF

The second amber --data-dir backup is incremental (the default with --data-dir): it reads only the files
changed since the first backup and reuses the records of the others, and still restores as a full backup:
$(for w in $workers_list; do k=amber_files_${w}_2; echo "- workers=$w: read ${report[$k.files_read]} files, $(mb "${report[$k.bytes_in]}") MB with the backup's WAL; reused ${report[$k.files_reused]} files, $(mb "${report[$k.bytes_reused]}") MB not read again."; done)

The latest (second, incremental) amber --data-dir backup of the first run was restored with \`amber restore\` and
started; each held all ${rows} rows of bench_mixed.

| goal | measured ($fastest) | |
|---|---|---|
| full backup ≥ 1.5× pgBackRest lz4's speed | ${r_speed}× | $(met "$r_speed" 1.5 ge) |
| full backup stored ≤ pgBackRest zst's | ${r_size}× | $(met "$r_size" 1 le) |
| backup after pgbench at least as fast as pgBackRest incr (lz4) | ${r_incr}× | $(met "$r_incr" 1 ge) |
| backup after pgbench stores less than pgBackRest incr (lz4) | ${r_incr_size}× | $(met "$r_incr_size" 1 le) |
<!-- bench-pg-files.sh: end -->
EOF
}
[ -f "$out" ] || : >"$out"
awk '/^<!-- bench-pg-files.sh: begin -->$/{skip=1} !skip{print} /^<!-- bench-pg-files.sh: end -->$/{skip=0}' "$out" >"$out.tmp"
{ printf '%s\n\n' "$(cat "$out.tmp")"; section; } >"$out.new"
rm -f "$out.tmp"
mv "$out.new" "$out"
say "wrote the section to ${out#"$root"/}"
