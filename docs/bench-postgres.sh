#!/usr/bin/env bash
# `make bench`, PostgreSQL part: measures amber's physical backups (through
# BASE_BACKUP, and reading the data directory with --data-dir), its physical
# restore and its logical backup and restore side by side with pgBackRest,
# pg_basebackup, pg_dump and pg_restore on the standard "mixed" data set, in
# one run; the WAL archive lag (commit to durable in the repository) under
# pgbench load; and amber's memory; and judges issue 13's goals. Writes a
# PostgreSQL section into the report that docs/bench.sh writes (an earlier
# one is replaced where it stands; else the section is appended).
#
# The data set is the dump that docs/bench.sh caches (made by it on demand),
# loaded once into a cluster whose stopped data directory is cached under
# .deps/bench/pgdata-*; every run copies it and starts the copy.
# Environment (as docs/bench.sh):
#   BENCH_ROWS, BENCH_SCALE  data set (default: the standard 6150000 rows, scale 10)
#   BENCH_RUNS               runs of each backup/restore measurement (default 2; the best
#                            time shown, and the peak RSS of all runs)
#   AMBER_DEPS, BENCH_DIR    the deps folder (default .deps) and the cache (default $AMBER_DEPS/bench)
#   BENCH_OUT                report to write into (default docs/benchmarks.md for the
#                            standard set, .deps/bench/benchmarks-quick.md otherwise)
#   BENCH_PG_LAG_SECONDS     length of the pgbench load for the lag test (default 60)
#   BENCH_PG_FLUSH           amber archive --flush-interval values to test (default "500ms 250ms";
#                            the first is amber's default and the one the goal is judged on)
#   BENCH_PG_REPORT_ONLY=1   measure nothing: rewrite the section from the figures of the
#                            last run (kept in .deps/bench/pg-results-*.sh)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
deps=${AMBER_DEPS:-$root/.deps}
benchdir=${BENCH_DIR:-$deps/bench}
export PATH="$root/bin:$deps/bin:$PATH"

rows=${BENCH_ROWS:-6150000}
scale=${BENCH_SCALE:-10}
runs=${BENCH_RUNS:-2}
lag_seconds=${BENCH_PG_LAG_SECONDS:-60}
flushes=${BENCH_PG_FLUSH:-500ms 250ms}
standard=0
if [ "$rows" = 6150000 ] && [ "$scale" = 10 ]; then standard=1; fi
if [ "$standard" = 1 ]; then
  dump="$benchdir/mixed.sql"
  tpl="$benchdir/pgdata-mixed"
  state="$benchdir/pg-results-mixed.sh"
  out=${BENCH_OUT:-$root/docs/benchmarks.md}
else
  dump="$benchdir/mixed-s${scale}-r${rows}.sql"
  tpl="$benchdir/pgdata-s${scale}-r${rows}"
  state="$benchdir/pg-results-s${scale}-r${rows}.sh"
  out=${BENCH_OUT:-$benchdir/benchmarks-quick.md}
fi
pgbin=/usr/lib/postgresql/15/bin

say() { printf 'bench-postgres: %s\n' "$*" >&2; }
. "$root/docs/bench-lib.sh"
die() { say "$*"; exit 1; }

for tool in amber amber-plugin-postgres pgbackrest zstd go "$pgbin/initdb" "$pgbin/pg_basebackup" /usr/bin/time; do
  command -v "$tool" >/dev/null || die "$tool not found: run \`make deps\` (and \`make build\` for amber)"
done
amber=$(command -v amber)
# Every tool runs as the postgres OS user (initdb and postgres refuse root;
# the peers and amber alike then read the data directory as its owner).
as_pg() { runuser -u postgres -- env PATH="$PATH" HOME=/tmp LC_ALL=C "$@"; }
export -f as_pg

# ---------------------------------------------------------------------------
# The data set: docs/bench.sh's cached pg_dump of "mixed", loaded once into a
# cluster kept stopped under .deps/bench/.

free_port() {
  local port
  while :; do
    port=$((20000 + RANDOM % 40000))
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
  done
}

# init_cluster DIR: a new cluster as every one here is made.
init_cluster() { as_pg "$pgbin/initdb" -D "$1" -U postgres --auth=trust -E UTF8 --locale=C >/dev/null; }

make_template() {
  [ -s "$dump" ] || BENCH_DATA_ONLY=1 BENCH_ROWS="$rows" BENCH_SCALE="$scale" bash "$root/docs/bench.sh"
  [ -s "$dump" ] || die "no dump at $dump"
  local tmp port
  tmp=$(mktemp -d /tmp/amber-bench-pgtpl.XXXXXX)
  chmod 755 "$tmp"
  chown postgres: "$tmp"
  port=$(free_port)
  trap "as_pg $pgbin/pg_ctl -D '$tmp/data' -m immediate stop >/dev/null 2>&1 || true; rm -rf '$tmp'" EXIT
  say "loading $dump into a new cluster (cached afterwards in ${tpl#"$root"/})"
  init_cluster "$tmp/data"
  as_pg "$pgbin/pg_ctl" -D "$tmp/data" -l "$tmp/server.log" -w start -o \
    "-p $port -k $tmp -c listen_addresses= -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
     -c wal_level=minimal -c max_wal_senders=0 -c max_wal_size=8GB -c shared_buffers=512MB \
     -c maintenance_work_mem=512MB" >/dev/null
  as_pg "$pgbin/psql" -h "$tmp" -p "$port" -U postgres -X -q -v ON_ERROR_STOP=1 -f "$dump" postgres >/dev/null
  as_pg "$pgbin/psql" -h "$tmp" -p "$port" -U postgres -X -q -c 'VACUUM ANALYZE' postgres
  as_pg "$pgbin/pg_ctl" -D "$tmp/data" -m fast -w stop >/dev/null
  sync
  rm -rf "$tpl.tmp"
  mv "$tmp/data" "$tpl.tmp"
  mv "$tpl.tmp" "$tpl"
  rm -rf "$tmp"
  trap - EXIT
}
if [ "${BENCH_PG_REPORT_ONLY:-0}" = 1 ]; then
  [ -f "$state" ] || die "no figures in $state: run without BENCH_PG_REPORT_ONLY first"
  declare -A maxrss maxsum bestrss bestsum
  # shellcheck source=/dev/null
  source "$state"
  # A state file from before peaks were kept over all runs has the best run's.
  if [ ${#maxrss[@]} = 0 ]; then
    for k in "${!bestrss[@]}"; do maxrss[$k]=${bestrss[$k]}; done
    for k in "${!bestsum[@]}"; do maxsum[$k]=${bestsum[$k]}; done
  fi
  [ -n "${best[amber_files]:-}" ] || die "$state is from before amber --data-dir was measured: run without BENCH_PG_REPORT_ONLY"
  [ -n "${best[amber_files_default]:-}" ] || die "$state is from before amber --compression default was measured: run without BENCH_PG_REPORT_ONLY"
  [ -n "${best[amber_lbk_s2]:-}" ] || die "$state is from before amber --compression s2 was measured: run without BENCH_PG_REPORT_ONLY"
  [ -n "${best[amber_lbk_w2]:-}" ] || die "$state is from before amber's workers=2 logical backup was measured: run without BENCH_PG_REPORT_ONLY"
  [ -n "${pgbr_wal[zst]:-}" ] || die "$state is from before the WAL of pgBackRest's backup window was measured: run without BENCH_PG_REPORT_ONLY"
else
[ -f "$tpl/PG_VERSION" ] || make_template
[ -s "$dump" ] || BENCH_DATA_ONLY=1 BENCH_ROWS="$rows" BENCH_SCALE="$scale" bash "$root/docs/bench.sh"

# ---------------------------------------------------------------------------
# The cluster under test: a copy of the template, archiving to pgBackRest
# (archive_command on the command line only, so restored copies do not).

work=$(mktemp -d "${TMPDIR:-/tmp}/amber-bench-pg.XXXXXX")
chmod 755 "$work"
chown postgres: "$work"
sock="$work"
port=$(free_port)
pgdata="$work/primary"
say "copying the data set to $pgdata"
cp -a "$tpl" "$pgdata"
rm -f "$pgdata/postmaster.pid"
db_size=$(du -sb --exclude=pg_wal "$pgdata" | cut -f1)
dump_size=$(stat -c %s "$dump")

servers=()
cleanup() {
  local d
  for d in "${servers[@]}"; do as_pg "$pgbin/pg_ctl" -D "$d" -m immediate stop >/dev/null 2>&1 || true; done
  [ -n "${archpid:-}" ] && kill "$(pgrep -P "$archpid")" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

pgbr_conf=$work/pgbackrest.conf
pgbackrest_conf "$pgbr_conf" "$work" "$pgdata" "$sock" "$port"
pgbr() { as_pg pgbackrest --config="$pgbr_conf" --stanza=bench "$@"; }
export -f pgbr free_port
export pgbr_conf pgbin sock

export common_opts="-c listen_addresses= -k $sock -c shared_buffers=256MB -c max_wal_size=4GB -c wal_level=replica \
  -c max_wal_senders=10 -c max_replication_slots=10"
start_primary() { # extra options
  as_pg "$pgbin/pg_ctl" -D "$pgdata" -l "$work/primary.log" -w -t 300 start -o "-p $port $common_opts $*" >/dev/null
}
stop_primary() { as_pg "$pgbin/pg_ctl" -D "$pgdata" -m fast -w -t 300 stop >/dev/null; }
servers+=("$pgdata")
start_primary "-c archive_mode=on -c archive_command='pgbackrest --config=$pgbr_conf --stanza=bench archive-push %p'"
dsn="host=$sock port=$port user=postgres dbname=postgres"
psql_on() { # PORT psql-arguments...
  local p=$1
  shift
  PGOPTIONS='-c client_min_messages=warning' as_pg "$pgbin/psql" -h "$sock" -p "$p" -U postgres -X -q -At -v ON_ERROR_STOP=1 "$@"
}
psql_() { psql_on "$port" "$@"; }
pgbr stanza-create >/dev/null
pgbr check >/dev/null

# The logical restores load into a cluster of their own, made as the template
# was and started with the same settings, that does not archive: in the
# cluster under test, pgBackRest's archive-push compresses the ~1 GB of WAL
# each restore writes, during the restore and the measurements after it, for
# amber and pg_restore alike.
tdata="$work/target"
tport=$(free_port)
until [ "$tport" != "$port" ]; do tport=$(free_port); done
init_cluster "$tdata"
servers+=("$tdata")
as_pg "$pgbin/pg_ctl" -D "$tdata" -l "$work/target.log" -w -t 300 start -o "-p $tport $common_opts" >/dev/null
tdsn="host=$sock port=$tport user=postgres dbname=restored"
psqlt_() { psql_on "$tport" "$@"; }

# ---------------------------------------------------------------------------
# Measuring: wall time from date, CPU time (user + system, the command and
# its children) and peak RSS of its largest process from /usr/bin/time. For
# amber, a sampler also sums the RSS of amber and its plugin every 0.2 s.

export AMBER_PASSWORD=bench-password
declare -A best bestcpu maxrss maxsum all

quiet_default=60
# tree_rss PID: summed RSS (KiB) of the processes named amber* below PID
# (other amber processes on a shared machine are not counted).
tree_rss() {
  ps -e -o pid=,ppid=,rss=,comm= | awk -v top="$1" '
    {pp[$1]=$2; rss[$1]=$3; c[$1]=$4}
    END{ for (p in pp) { if (c[p] !~ /^amber/) continue; q=p; n=0
           while (q != top && q > 1 && n++ < 50) q=pp[q]
           if (q == top) s += rss[p] }
         print s+0 }'
}
# amber_rss PID FILE: the peak of tree_rss PID, sampled every 0.2 s, into FILE.
amber_rss() {
  local top=$1 file=$2 max=0 cur
  while kill -0 "$top" 2>/dev/null; do
    cur=$(tree_rss "$top")
    [ "$cur" -gt "$max" ] && max=$cur
    sleep 0.2
  done
  echo "$max" >"$file"
}
# measure KEY CMD...: runs CMD; keeps the best wall time of the runs for KEY
# and that run's CPU time, and the peak RSS (and amber + plugin sum) of all
# runs.
measure() {
  local key=$1; shift
  local t0 t1 wall cpu rss u s tp sp="" rc=0 sum=0
  wait_quiet
  t0=$(date +%s.%N)
  # Through bash, so that CMD may be one of the exported functions above.
  /usr/bin/time -f '%U %S %M' -o "$work/time" bash -c '"$@"' _ "$@" &
  tp=$!
  if [[ $key == amber* ]]; then amber_rss "$tp" "$work/rss" & sp=$!; fi
  wait "$tp" || rc=$?
  t1=$(date +%s.%N)
  [ -n "$sp" ] && wait "$sp"
  [ "$rc" = 0 ] || die "$key failed (exit $rc): $*"
  [[ $key == amber* ]] && sum=$(cat "$work/rss")
  wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}')
  read -r u s rss < <(tail -1 "$work/time")
  cpu=$(awk -v u="$u" -v s="$s" 'BEGIN{printf "%.2f", u+s}')
  all[$key]="${all[$key]:+${all[$key]} / }$wall"
  if [ -z "${best[$key]:-}" ] || awk -v a="$wall" -v b="${best[$key]}" 'BEGIN{exit !(a<b)}'; then
    best[$key]=$wall bestcpu[$key]=$cpu last_best=1
  else
    last_best=0
  fi
  if [ -z "${maxrss[$key]:-}" ] || [ "$rss" -gt "${maxrss[$key]}" ]; then maxrss[$key]=$rss; fi
  if [ -z "${maxsum[$key]:-}" ] || [ "$sum" -gt "${maxsum[$key]}" ]; then maxsum[$key]=$sum; fi
  say "$key: ${wall}s wall, ${cpu}s CPU, peak RSS $((rss / 1024)) MiB$([[ $key == amber* ]] && echo " (amber + plugin $((sum / 1024)) MiB)")"
}
# ready DIR: start a restored data directory on a new port and wait until it
# accepts connections and is out of recovery (part of the timed restore).
ready() {
  local dir=$1 p t0
  t0=$(date +%s.%N)
  p=$(free_port)
  as_pg "$pgbin/pg_ctl" -D "$dir" -l "$dir.log" -t 600 -w start -o "-p $p $common_opts" >/dev/null
  until [ "$(as_pg "$pgbin/psql" -h "$sock" -p "$p" -U postgres -X -At -c 'SELECT pg_is_in_recovery()' postgres 2>/dev/null)" = f ]; do
    sleep 0.05
  done
  echo "$p" >"$dir.port"
  awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f\n", b-a}' >"$dir.readys"
}
export -f ready
# check_restored DIR: the restored server holds the data set; then stop it.
check_restored() {
  local dir=$1 p n
  p=$(cat "$dir.port")
  last_ready=$(cat "$dir.readys")
  last_fetches=$(grep -c -e 'restored log file' -e 'is not in the archive' "$dir.log" || true)
  n=$(as_pg "$pgbin/psql" -h "$sock" -p "$p" -U postgres -X -At -c 'SELECT count(*) FROM bench_mixed' postgres)
  [ "$n" = "$rows" ] || die "restored server in $dir has $n rows of bench_mixed, want $rows"
  as_pg "$pgbin/pg_ctl" -D "$dir" -m fast -w stop >/dev/null
  rm -rf "$dir" "$dir.log" "$dir.port" "$dir.readys" "$dir.amber"
}
servers+=("$work/restored")
declare -A stored pgbr_label pgbr_wal readyb fetchb bytes_in
# after a timed restore: keep the start-to-ready time and restore_command runs of the best run
note_ready() { if [ "$last_best" = 1 ]; then readyb[$1]=$last_ready fetchb[$1]=$last_fetches; fi; }

# --- physical backups ---
phys_amber() {
  local r="$work/amber-phys"
  rm -rf "$r" "$work/amber-cache"
  as_pg env AMBER_REPO="$r" AMBER_CACHE_DIR="$work/amber-cache" "$amber" repo init --json >/dev/null
  measure amber_phys as_pg env AMBER_REPO="$r" AMBER_CACHE_DIR="$work/amber-cache" \
    "$amber" backup --engine postgres --dsn "$dsn" --mode physical --json >"$work/amber-phys.json"
  stored[amber_phys]=$(du -sb "$r" | cut -f1)
  bytes_in[amber_phys]=$(grep -o '"bytes_in": *[0-9]*' "$work/amber-phys.json" | grep -o '[0-9]*$')
}
# amber reading the data directory itself, 2 workers (as pgBackRest's
# process-max=2); a fresh repository, so every file is read (a full backup).
phys_files() { # [s2|default]: the key amber_files, or amber_files_<it> with --compression <it>
  local k=amber_files comp=()
  if [ -n "${1:-}" ]; then k=amber_files_$1 comp=(--compression "$1"); fi
  local r="$work/$k"
  rm -rf "$r" "$work/amber-cache-files"
  as_pg env AMBER_REPO="$r" AMBER_CACHE_DIR="$work/amber-cache-files" "$amber" repo init --json >/dev/null
  measure "$k" as_pg env AMBER_REPO="$r" AMBER_CACHE_DIR="$work/amber-cache-files" \
    "$amber" backup --engine postgres --dsn "$dsn" --mode physical --data-dir "$pgdata" --option workers=2 \
    "${comp[@]}" --json >"$work/$k.json"
  stored[$k]=$(du -sb "$r" | cut -f1)
  bytes_in[$k]=$(grep -o '"bytes_in": *[0-9]*' "$work/$k.json" | grep -o '[0-9]*$')
  rm -rf "$r" "$work/amber-cache-files"
}
phys_pgbr() { # lz4|zst
  local label
  measure "pgbr_$1" pgbr --type=full --compress-type="$1" backup
  label=$(ls "$work/pgbackrest-repo/backup/bench" | grep 'F$' | sort | tail -1)
  pgbr_label[$1]=$label
  stored[pgbr_$1]=$(du -sb "$work/pgbackrest-repo/backup/bench/$label" | cut -f1)
  pgbr_wal[$1]=$(pgbr_window_wal "$label")
}
# pgbr_window_wal LABEL prints the bytes of the WAL that backup LABEL needs
# from pgBackRest's archive to be consistent (its manifest's archive-start
# to archive-stop segments, as archive-push stored them): what amber keeps
# inside its backup instead.
pgbr_window_wal() {
  local man="$work/pgbackrest-repo/backup/bench/$1/backup.manifest" start stop
  start=$(sed -n 's/^backup-archive-start="\(.*\)"$/\1/p' "$man")
  stop=$(sed -n 's/^backup-archive-stop="\(.*\)"$/\1/p' "$man")
  find "$work/pgbackrest-repo/archive/bench" -type f -name '0*' -printf '%f %s\n' |
    awk -v a="$start" -v b="$stop" '{seg=substr($1, 1, 24)} seg >= a && seg <= b {n += $2} END {print n+0}'
}
phys_pgbb() { # lz4|zstd
  local d="$work/basebackup-$1"
  rm -rf "$d"
  measure "pgbb_$1" as_pg "$pgbin/pg_basebackup" -h "$sock" -p "$port" -U postgres -D "$d" -Ft -Z "$1" -c fast
  stored[pgbb_$1]=$(du -sb "$d" | cut -f1)
  rm -rf "$d"
}
# --- physical restores (to a server that is ready and out of recovery) ---
# settle: every physical restore starts with the page cache dropped, after a
# sync: the repository is read from disk, as a restore reads from a bucket,
# and nothing of the runs before is cached for one tool and not the other.
# Two things made that necessary, both measured here by hand (amber's restore
# of this data set). ext4 without a journal (this machine's root file system)
# skips, when it allocates an inode, every inode of the group freed in the
# last 60 s whose inode table block is still cached: a restore right after
# the run before had deleted its files took 2.51 s against 1.70 s after a
# sync and 64 s. And this machine's DAMON pages out what was not touched for
# 60 s (/sys/kernel/mm/damon/admin: paddr, pageout, min_age 12 x 5 s), so
# waiting instead would leave each repository cached or not by chance. (The
# script runs as root: as_pg is runuser.)
settle() {
  sync
  echo 3 >/proc/sys/vm/drop_caches
}
restore_fs=$(findmnt -n -o FSTYPE --target "$work")
if [ "$(cat "/sys/fs/ext4/$(basename "$(findmnt -n -o SOURCE --target "$work")")/journal_task" 2>/dev/null)" = "<none>" ]; then
  restore_fs+=" without a journal"
fi
rest_amber() {
  local d="$work/restored"
  settle
  measure amber_prest bash -c 'as_pg env AMBER_REPO="$1" AMBER_CACHE_DIR="$2" "$3" restore --engine postgres \
    --data-dir "$4" >/dev/null && ready "$4"' _ "$work/amber-phys" "$work/amber-cache" "$amber" "$d"
  check_restored "$d"
  note_ready amber_prest
}
rest_pgbr() { # lz4|zst
  local d="$work/restored"
  settle
  as_pg mkdir -m 700 "$d" # pgBackRest restores into an existing directory
  measure "pgbr_prest_$1" bash -c 'pgbr --pg1-path="$1" --set="$2" --type=immediate --target-action=promote restore \
    && ready "$1"' _ "$d" "${pgbr_label[$1]}"
  check_restored "$d"
  note_ready "pgbr_prest_$1"
}
# --- logical backups and restores ---
log_amber() { # [s2|w2]: keys amber_lbk/amber_lrest, or amber_lbk_<it>/amber_lrest_<it> with --compression s2 or --option workers=2
  local sfx= comp=()
  case "${1:-}" in
    s2) sfx=_s2 comp=(--compression s2) ;;
    w2) sfx=_w2 comp=(--option workers=2) ;;
  esac
  local r="$work/amber-logical$sfx"
  rm -rf "$r" "$work/amber-cache"
  as_pg env AMBER_REPO="$r" AMBER_CACHE_DIR="$work/amber-cache" "$amber" repo init --json >/dev/null
  measure "amber_lbk$sfx" as_pg env AMBER_REPO="$r" AMBER_CACHE_DIR="$work/amber-cache" \
    "$amber" backup --engine postgres --dsn "$dsn" --mode logical "${comp[@]}" --json >/dev/null
  stored[amber_lbk$sfx]=$(du -sb "$r" | cut -f1)
  psqlt_ -c 'DROP DATABASE IF EXISTS restored' -c 'CREATE DATABASE restored' postgres
  measure "amber_lrest$sfx" as_pg env AMBER_REPO="$r" AMBER_CACHE_DIR="$work/amber-cache" \
    "$amber" restore --engine postgres --dsn "$tdsn" >/dev/null
  [ "$(psqlt_ -c 'SELECT count(*) FROM bench_mixed' restored)" = "$rows" ] || die "amber's logical restore lacks rows"
  if [ -z "$sfx" ]; then
    # The same backup through one pg_restore --single-transaction on the
    # stream (restore_workers=1): what the default did before it was loaded
    # in parallel as it streams.
    psqlt_ -c 'DROP DATABASE restored' -c 'CREATE DATABASE restored' postgres
    measure amber_lrest_one as_pg env AMBER_REPO="$r" AMBER_CACHE_DIR="$work/amber-cache" \
      "$amber" restore --engine postgres --dsn "$tdsn" --option restore_workers=1 >/dev/null
    [ "$(psqlt_ -c 'SELECT count(*) FROM bench_mixed' restored)" = "$rows" ] || die "amber's logical restore (restore_workers=1) lacks rows"
  fi
  psqlt_ -c 'DROP DATABASE restored' postgres
  rm -rf "$r"
}
log_dump() {
  measure dump_zstd as_pg bash -c "'$pgbin/pg_dump' -h '$sock' -p '$port' -U postgres -Fp postgres | zstd -q -3 -c >'$work/dump.sql.zst'"
  stored[dump_zstd]=$(stat -c %s "$work/dump.sql.zst")
  rm -f "$work/dump.sql.zst"
  measure dump_fc as_pg "$pgbin/pg_dump" -h "$sock" -p "$port" -U postgres -Fc -f "$work/dump.fc" postgres
  stored[dump_fc]=$(stat -c %s "$work/dump.fc")
  psqlt_ -c 'DROP DATABASE IF EXISTS restored' -c 'CREATE DATABASE restored' postgres
  measure pgrestore_j2 as_pg "$pgbin/pg_restore" -h "$sock" -p "$tport" -U postgres -j 2 -d restored "$work/dump.fc"
  [ "$(psqlt_ -c 'SELECT count(*) FROM bench_mixed' restored)" = "$rows" ] || die "pg_restore lacks rows"
  psqlt_ -c 'DROP DATABASE restored' postgres
  rm -f "$work/dump.fc"
}

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
for i in $(seq 1 "$runs"); do
  say "run $i of $runs"
  if [ $((i % 2)) = 1 ]; then
    phys_amber; phys_files; phys_files s2; phys_files default; phys_pgbr lz4; phys_pgbr zst; phys_pgbb lz4; phys_pgbb zstd
    rest_amber; rest_pgbr lz4; rest_pgbr zst
    log_amber; log_amber s2; log_amber w2; log_dump
  else
    phys_pgbb zstd; phys_pgbb lz4; phys_pgbr zst; phys_pgbr lz4; phys_files default; phys_files s2; phys_files; phys_amber
    rest_pgbr zst; rest_pgbr lz4; rest_amber
    log_dump; log_amber w2; log_amber s2; log_amber
  fi
done

# ---------------------------------------------------------------------------
# WAL archive lag, commit to durable in the repository, under pgbench load.
#
# A probe session commits a marker row every 100 ms and records, from the
# server, clock_timestamp() taken inside the INSERT (before its commit) and
# pg_current_wal_flush_lsn() read just after the commit returned: WAL up to
# that LSN holds the commit record. A watcher lists the repository's log/
# directory (a file repository; an object is visible only once written,
# fsynced and renamed, i.e. durable) every 10 ms and notes when the end
# position in the object names first reaches each LSN. Both bounds are
# conservative (the timestamp precedes the commit, the LSN may follow it), so
# the lag is over- rather than under-stated, by a few ms at most.
cat >"$work/lagwatch.go" <<'EOF'
package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

type reach struct {
	at  time.Time
	end uint64
}

func maxEnd(dir string) uint64 {
	var m uint64
	streams, _ := os.ReadDir(dir)
	for _, s := range streams {
		epochs, _ := os.ReadDir(filepath.Join(dir, s.Name()))
		for _, e := range epochs {
			objs, _ := os.ReadDir(filepath.Join(dir, s.Name(), e.Name()))
			for _, o := range objs {
				n := strings.TrimSuffix(o.Name(), ".partial")
				if strings.HasPrefix(n, ".") {
					continue
				}
				if i := strings.IndexByte(n, '-'); i > 0 {
					if v, err := strconv.ParseUint(n[i+1:], 16, 64); err == nil && v > m {
						m = v
					}
				}
			}
		}
	}
	return m
}

func parseLSN(s string) uint64 {
	hi, lo, _ := strings.Cut(s, "/")
	h, _ := strconv.ParseUint(hi, 16, 32)
	l, _ := strconv.ParseUint(lo, 16, 32)
	return h<<32 | l
}

// lagwatch LOGDIR STOPFILE PROBEFILE: watch until STOPFILE exists, then
// print count, p50, p90, p99, max lag (seconds) and markers never durable.
func main() {
	dir, stop, probe := os.Args[1], os.Args[2], os.Args[3]
	var seen []reach
	var last uint64
	for {
		if m := maxEnd(dir); m > last {
			last = m
			seen = append(seen, reach{time.Now(), m})
		}
		if _, err := os.Stat(stop); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	f, err := os.Open(probe)
	if err != nil {
		panic(err)
	}
	var lags []float64
	missing := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) != 3 {
			continue
		}
		ts, _ := strconv.ParseFloat(fs[1], 64)
		lsn := parseLSN(fs[2])
		i := sort.Search(len(seen), func(i int) bool { return seen[i].end >= lsn })
		if i == len(seen) {
			missing++
			continue
		}
		lags = append(lags, float64(seen[i].at.UnixNano())/1e9-ts)
	}
	sort.Float64s(lags)
	q := func(p float64) float64 {
		if len(lags) == 0 {
			return -1
		}
		return lags[min(len(lags)-1, int(p*float64(len(lags))))]
	}
	fmt.Printf("%d %.3f %.3f %.3f %.3f %d\n", len(lags), q(0.50), q(0.90), q(0.99), q(1), missing)
}
EOF
(cd "$work" && GOFLAGS= GO111MODULE=off go build -o lagwatch lagwatch.go) || die "could not build the lag watcher"

stop_primary
start_primary "-c archive_mode=off"
declare -A lag tps archrss_idle archrss_peak
psql_ -c 'CREATE TABLE IF NOT EXISTS lag_probe (id int PRIMARY KEY, t timestamptz)' postgres
for fl in $flushes; do
  r="$work/amber-archive-$fl"
  # A new slot reserves WAL from the last checkpoint's redo point: checkpoint
  # first, so the archiver starts with no backlog from the previous round.
  psql_ -c CHECKPOINT postgres
  as_pg env AMBER_REPO="$r" AMBER_CACHE_DIR="$work/amber-cache" "$amber" repo init --json >/dev/null
  # runuser directly, not through a function: SIGTERM must reach amber itself
  # (runuser would answer it with SIGKILL two seconds later).
  runuser -u postgres -- env PATH="$PATH" HOME=/tmp LC_ALL=C AMBER_REPO="$r" AMBER_CACHE_DIR="$work/amber-cache" \
    "$amber" archive --engine postgres --dsn "$dsn" --flush-interval "$fl" 2>"$work/archive-$fl.log" &
  archpid=$!
  until [ "$(psql_ -c "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'amber' AND active" postgres)" = 1 ]; do
    kill -0 "$archpid" 2>/dev/null || die "amber archive exited: $(cat "$work/archive-$fl.log")"
    sleep 0.2
  done
  sleep 3
  archrss_idle[$fl]=$(tree_rss "$archpid")
  wait_quiet
  rm -f "$work/stop" "$work/probe.txt"
  "$work/lagwatch" "$r/log" "$work/stop" "$work/probe.txt" >"$work/lag-$fl.txt" &
  watch=$!
  psql_ -c 'TRUNCATE lag_probe' postgres
  (
    n=0
    while [ ! -e "$work/stop-probe" ]; do
      n=$((n + 1))
      echo "INSERT INTO lag_probe VALUES ($n, clock_timestamp());"
      echo "SELECT id, extract(epoch FROM t), pg_current_wal_flush_lsn() FROM lag_probe WHERE id = $n;"
      sleep 0.1
    done
  ) | psql_ -F ' ' postgres >"$work/probe.txt" &
  probe=$!
  ( while kill -0 "$archpid" 2>/dev/null && [ ! -e "$work/stop-probe" ]; do
      tree_rss "$archpid"; sleep 0.5
    done >"$work/archrss-$fl.txt" ) &
  rssw=$!
  say "archive lag, --flush-interval $fl: pgbench -n -c 8 -j 2 -T $lag_seconds"
  as_pg "$pgbin/pgbench" -h "$sock" -p "$port" -U postgres -n -c 8 -j 2 -T "$lag_seconds" postgres >"$work/pgbench-$fl.txt" 2>&1
  touch "$work/stop-probe"
  wait "$probe" "$rssw" || true
  sleep 3 # the last markers become durable
  touch "$work/stop"
  wait "$watch"
  rm -f "$work/stop-probe"
  kill -TERM "$(pgrep -P "$archpid")"
  wait "$archpid" || die "amber archive exited with an error after SIGTERM: $(tail -5 "$work/archive-$fl.log")"
  archpid=
  psql_ -c "SELECT pg_drop_replication_slot('amber')" postgres >/dev/null
  lag[$fl]=$(cat "$work/lag-$fl.txt")
  tps[$fl]=$(grep -o 'tps = [0-9.]*' "$work/pgbench-$fl.txt" | head -1 | awk '{printf "%.0f", $3}')
  archrss_peak[$fl]=$(sort -n "$work/archrss-$fl.txt" | tail -1)
  say "lag (n p50 p90 p99 max missing): ${lag[$fl]}; pgbench ${tps[$fl]} tps; archiver RSS idle $((archrss_idle[$fl] / 1024)) MiB, peak $((archrss_peak[$fl] / 1024)) MiB"
done
stop_primary
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
measured_at=$(date -u '+%Y-%m-%d %H:%M UTC')
amber_ver=$(binary_commit "$amber")
{
  declare -p best bestcpu maxrss maxsum all stored pgbr_label pgbr_wal readyb fetchb bytes_in lag tps archrss_idle archrss_peak
  declare -p db_size dump_size busy_starts measurements load_start load_end measured_at amber_ver \
    runs lag_seconds flushes restore_fs
} | sed -e 's/^declare -- /declare -g /;t' -e 's/^declare -\([A-Za-z]*\) /declare -g\1 /' >"$state"
fi

# ---------------------------------------------------------------------------
# The report: a PostgreSQL section of docs/bench.sh's report.

mb() { awk -v b="$1" 'BEGIN{printf "%.0f", b/1e6}'; }
mb2() { awk -v b="$1" 'BEGIN{printf "%.2f", b/1e6}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a/b}'; }
met() { awk -v a="$1" -v g="$2" -v d="$3" 'BEGIN{ if ((d=="ge" && a>=g) || (d=="le" && a<=g)) print "**met**"; else print "**not met**"}'; }
rate() { awk -v b="$1" -v s="$2" 'BEGIN{printf "%.0f", b/1e6/s}'; }
mib() { echo $(( $1 / 1024 )); }
util() { awk -v c="${bestcpu[$1]}" -v w="${best[$1]}" 'BEGIN{printf "%.2f", c/w}'; }
row() { # label key input-bytes [stored-bytes]
  local st="" sum=""
  [ -n "${4:-}" ] && st=$(mb "$4")
  [ "${maxsum[$2]:-0}" != 0 ] && sum=" (amber + plugin $(mib "${maxsum[$2]}") MiB)"
  printf '| %s | %s | %s | %s | %s | %s | %s MiB%s |\n' "$1" "${best[$2]}" "${all[$2]}" "$(rate "$3" "${best[$2]}")" \
    "${bestcpu[$2]}" "$st" "$(mib "${maxrss[$2]}")" "$sum"
}
minkey() { if awk -v a="${best[$1]}" -v b="${best[$2]}" 'BEGIN{exit !(a<=b)}'; then echo "$1"; else echo "$2"; fi; }

pgbr_rest_best=$(minkey pgbr_prest_lz4 pgbr_prest_zst)
r_phys=$(ratio "${best[pgbr_lz4]}" "${best[amber_phys]}")
# pgBackRest's size for the size goal: its backup's directory and the WAL
# of the backup window in its archive, which amber's backups hold.
pgbr_zst_whole=$((stored[pgbr_zst] + pgbr_wal[zst]))
r_phys_size=$(ratio "${stored[amber_phys]}" "$pgbr_zst_whole")
r_files=$(ratio "${best[pgbr_lz4]}" "${best[amber_files]}")
r_files_size=$(ratio "${stored[amber_files]}" "$pgbr_zst_whole")
r_files_s2=$(ratio "${best[pgbr_lz4]}" "${best[amber_files_s2]}")
r_files_s2_size=$(ratio "${stored[amber_files_s2]}" "$pgbr_zst_whole")
r_files_def=$(ratio "${best[pgbr_lz4]}" "${best[amber_files_default]}")
r_files_def_size=$(ratio "${stored[amber_files_default]}" "$pgbr_zst_whole")
r_rest=$(ratio "${best[$pgbr_rest_best]}" "${best[amber_prest]}")
r_log=$(ratio "${best[dump_zstd]}" "${best[amber_lbk]}")
r_log_size=$(ratio "${stored[amber_lbk]}" "${stored[dump_zstd]}")
r_lrest=$(ratio "${best[pgrestore_j2]}" "${best[amber_lrest]}")
r_log_s2=$(ratio "${best[dump_zstd]}" "${best[amber_lbk_s2]}")
r_log_s2_size=$(ratio "${stored[amber_lbk_s2]}" "${stored[dump_zstd]}")
r_lrest_s2=$(ratio "${best[pgrestore_j2]}" "${best[amber_lrest_s2]}")
r_log_w2=$(ratio "${best[dump_zstd]}" "${best[amber_lbk_w2]}")
r_log_w2_size=$(ratio "${stored[amber_lbk_w2]}" "${stored[dump_zstd]}")
r_lrest_w2=$(ratio "${best[pgrestore_j2]}" "${best[amber_lrest_w2]}")
# Peak memory: amber + plugin summed (sampled) or the largest process
# (/usr/bin/time), whichever is higher, over every amber operation and run,
# the archiver under load included.
declare -A what=([amber_phys]="the BASE_BACKUP backup" [amber_files]="the --data-dir backup"
  [amber_files_s2]="the --data-dir backup with s2" [amber_files_default]="the --data-dir backup with zstd default" [amber_prest]="the physical restore" [amber_lbk]="the logical backup"
  [amber_lrest]="the logical restore" [amber_lbk_s2]="the logical backup with s2" [amber_lrest_s2]="the logical restore of it"
  [amber_lbk_w2]="the logical backup with workers=2" [amber_lrest_w2]="the logical restore of it"
  [amber_lrest_one]="the logical restore with restore_workers=1")
peak_mem=0 peak_what=
for k in amber_phys amber_files amber_files_s2 amber_files_default amber_prest amber_lbk amber_lrest amber_lrest_one amber_lbk_s2 amber_lrest_s2 amber_lbk_w2 amber_lrest_w2; do
  for v in "${maxsum[$k]:-0}" "${maxrss[$k]:-0}"; do
    if [ "$v" -gt "$peak_mem" ]; then peak_mem=$v peak_what=${what[$k]}; fi
  done
done
for fl in $flushes; do
  if [ "${archrss_peak[$fl]:-0}" -gt "$peak_mem" ]; then peak_mem=${archrss_peak[$fl]} peak_what="archiving at --flush-interval $fl"; fi
done
first_fl=${flushes%% *}
read -r _ lag_p50 _ lag_p99 _ _ <<<"${lag[$first_fl]}"
best_p99=$lag_p99 best_fl=$first_fl
for fl in $flushes; do
  read -r _ _ _ p _ _ <<<"${lag[$fl]}"
  if awk -v a="$p" -v b="$best_p99" 'BEGIN{exit !(a<b)}'; then best_p99=$p best_fl=$fl; fi
done
pg_ver=$("$pgbin/postgres" --version | awk '{print $3}')
# met_phys SPEED SIZE: the physical-backup goal, ≥ 1.5× the speed at ≤ 1× the size.
met_phys() {
  awk -v s="$1" -v z="$2" 'BEGIN{ if (s >= 1.5 && z <= 1) print "**met**"; else if (z <= 1) print "**not met** (speed)";
    else if (s >= 1.5) print "**not met** (size)"; else print "**not met** (speed, size)" }'
}

percpu() { awk -v b="$1" -v c="${bestcpu[$2]}" 'BEGIN{printf "%.0f", b/1e6/c}'; }
limits() {
  local u uf
  if [ "$busy_starts" -gt 0 ]; then
    echo "- **The machine was not quiet**: ${busy_starts} of ${measurements} measurements started with the cores less than"
    echo "  90% idle (load average ${load_start} at the start, ${load_end} at the end). Wall-time ratios carry that noise;"
    echo "  the CPU seconds in the table less so."
  fi
  u=$(util amber_phys)
  uf=$(util amber_files)
  echo "- **Physical backup**: through BASE_BACKUP amber read $(mb "$db_size") MB at $(rate "$db_size" "${best[amber_phys]}") MB/s with ${u} of $(nproc) cores busy,"
  echo "  $(percpu "$db_size" amber_phys) MB per CPU-second of amber and its plugin (the server's walsender, which reads the files for"
  echo "  BASE_BACKUP, is not counted). Reading the data directory itself (\`--data-dir\`, 2 workers) it ran at"
  echo "  $(rate "$db_size" "${best[amber_files]}") MB/s with ${uf} cores busy, $(percpu "$db_size" amber_files) MB per CPU-second, its reading counted. pgBackRest lz4 ran at"
  echo "  $(rate "$db_size" "${best[pgbr_lz4]}") MB/s with $(util pgbr_lz4) cores busy, $(percpu "$db_size" pgbr_lz4) MB per CPU-second: amber spends"
  echo "  $(awk -v a="${bestcpu[amber_phys]}" -v b="${bestcpu[pgbr_lz4]}" 'BEGIN{printf "%.1f", a/b}')× (BASE_BACKUP) and $(awk -v a="${bestcpu[amber_files]}" -v b="${bestcpu[pgbr_lz4]}" 'BEGIN{printf "%.1f", a/b}')× (\`--data-dir\`) pgBackRest lz4's CPU per byte, because it chunks,"
  echo "  hashes (keyed BLAKE3), compresses (zstd) and encrypts (AES-256-GCM) every byte where pgBackRest only"
  echo "  compresses with lz4. On $(nproc) cores, 1.5× pgBackRest lz4's speed needs amber's CPU per byte at most"
  echo "  $(awk -v n="$(nproc)" -v c="${bestcpu[pgbr_lz4]}" -v w="${best[pgbr_lz4]}" 'BEGIN{printf "%.2f", n/(1.5*c/w)}')× pgBackRest lz4's with every core busy ($(nproc) / (1.5 × its $(util pgbr_lz4) busy cores)), less with fewer."
  echo "  With \`--compression s2\` the \`--data-dir\` backup spent ${bestcpu[amber_files_s2]} CPU s against ${bestcpu[amber_files]} with zstd, for"
  echo "  $(mb "${stored[amber_files_s2]}") MB stored against $(mb "${stored[amber_files]}"): above pgBackRest zst's size, which the goal also asks for."
  if awk -v u="$u" 'BEGIN{exit !(u < 1.3)}'; then
    echo "  Through BASE_BACKUP amber kept no more than about one core busy: its input is one replication connection"
    echo "  fed by one server process. With \`--data-dir\` the plugin reads the files with 2 workers."
  fi
  echo "- **Stored size**: amber's physical backups hold the WAL of the backup window: through BASE_BACKUP amber"
  echo "  read $(mb $((bytes_in[amber_phys] - db_size))) MB more than the data directory without pg_wal (the server's backup_manifest"
  echo "  included), with \`--data-dir\` $(mb $((bytes_in[amber_files] - db_size))) MB more. pgBackRest keeps that WAL in its archive, outside"
  echo "  the backup's directory: its zst backup's directory is $(mb "${stored[pgbr_zst]}") MB, and the WAL of its window in the archive"
  echo "  (the manifest's archive-start to archive-stop segments, compressed by archive-push with its default, gz) $(mb2 "${pgbr_wal[zst]}") MB"
  echo "  more; the size goal compares amber's backup with the two together ($(mb "$pgbr_zst_whole") MB)."
  echo "  amber compresses at zstd's fastest level, pgBackRest zst at level 3."
  local ra rp
  ra=$(awk -v a="${best[amber_prest]}" -v b="${readyb[amber_prest]:-0}" 'BEGIN{printf "%.2f", a-b}')
  rp=$(awk -v a="${best[pgbr_prest_lz4]}" -v b="${readyb[pgbr_prest_lz4]:-0}" 'BEGIN{printf "%.2f", a-b}')
  echo "- **Physical restore**: amber took ${best[amber_prest]} s: ${ra} s to write the data directory, then ${readyb[amber_prest]:-?} s from"
  echo "  starting the server until it was ready, with ${fetchb[amber_prest]:-?} runs of restore_command. pgBackRest (lz4 set) took"
  echo "  ${best[pgbr_prest_lz4]} s: ${rp} s, then ${readyb[pgbr_prest_lz4]:-?} s with ${fetchb[pgbr_prest_lz4]:-?} runs. Writing the files, amber decrypts, decompresses"
  echo "  (zstd) and reassembles every chunk; over the whole restore it spent $(percpu "$db_size" amber_prest) MB per CPU-second"
  echo "  against pgBackRest's $(percpu "$db_size" pgbr_prest_lz4) (lz4, process-max=2). restore_command (\`amber log-fetch\`, run once"
  echo "  per WAL or history file the server asks for, found or not) is a new process each time; one that finds"
  echo "  the file in the restore's spool (a complete segment fetched from the repository brings up to the next"
  echo "  8 complete ones into it) only moves it into place; the others start the plugin and open the repository"
  echo "  (with the restore's own random key slot: no password key derivation) before they fetch anything."
  echo "- **Logical backup** (the default, \`workers=1\`) is one \`pg_dump --format=custom --compress=0\` writing"
  echo "  into a pipe that amber reads, which compresses and deduplicates: $(rate "$dump_size" "${best[amber_lbk]}") MB/s (plain-dump equivalent)"
  echo "  against $(rate "$dump_size" "${best[dump_fc]}") for pg_dump -Fc alone and $(rate "$dump_size" "${best[dump_zstd]}") for pg_dump | zstd -3, using $(percpu "$dump_size" amber_lbk) MB per"
  echo "  CPU-second (pg_dump, plugin and amber together) against $(percpu "$dump_size" dump_zstd) for pg_dump | zstd -3: amber"
  echo "  chunks, hashes and encrypts as well as compresses (the dump's bytes no longer pass through the plugin:"
  echo "  docs/plugin-protocol.md, \"Pipes\")."
  echo "- **Logical restore** of that single-entry backup (64 MiB or more: \`restore_split_bytes\`) is read by the plugin"
  echo "  as it streams: pre-data from the archive's table of contents (kept in a file), then every table's COPY rows"
  echo "  cut into blocks that \`restore_workers\` (default 2) sessions load through their own COPY, the largest table by"
  echo "  both at once, each session in one transaction committed at the end, then \`pg_restore --jobs\` building the"
  echo "  indexes and constraints: $(ratio "${best[amber_lrest_one]}" "${best[amber_lrest]}")× the speed of the same backup through one \`pg_restore"
  echo "  --single-transaction\` on the stream (\`--option restore_workers=1\`, the row that says so; pg_restore -j needs a"
  echo "  seekable file). A backup split with \`--option workers=2\` (the w2 rows: every table of 1 MiB or more in an"
  echo "  entry of its own) is restored entry by entry the same way: $(ratio "${best[amber_lrest]}" "${best[amber_lrest_w2]}")× the single entry's speed here."
  echo "  The critical path of each is the largest table's load followed by its primary key's build, as pg_restore"
  echo "  -j2's is (that loads the table in one session); on 2 cores two sessions loading one table share them with"
  echo "  amber, its plugin and the server's other work."
  local p50 p99 f secs
  for f in $flushes; do
    read -r _ p50 _ p99 _ _ <<<"${lag[$f]}"
    secs=$(awk -v f="$f" 'BEGIN{v=f+0; if (f ~ /ms$/) v/=1000; else if (f ~ /m$/) v*=60; print v}')
    echo "- **Archive lag at --flush-interval ${f}**: p50 ${p50} s, p99 ${p99} s, so p99 is the interval plus"
    echo "  $(awk -v a="$p99" -v b="$secs" 'BEGIN{printf "%.2f", a-b}') s. WAL received that does not complete a segment is stored once the interval"
    echo "  has passed since the previous flush, as a piece holding only the bytes since that flush (compressed,"
    echo "  encrypted and fsynced); a segment, once complete, is made durable the same way (its bytes since the last"
    echo "  piece), then stored whole (16 MiB) in the background, where it replaces its pieces. So the interval is the"
    echo "  main term, and the rest is storing a piece and getting a core on the shared machine."
  done
}

section() {
  cat <<EOF
<!-- bench-postgres.sh: begin -->
# PostgreSQL: amber against pgBackRest, pg_basebackup, pg_dump (issue 13)

<!-- Generated by \`make bench\` (docs/bench-postgres.sh). Do not edit by hand. -->

Measured on ${measured_at} by \`bash docs/bench-postgres.sh\` (run by \`make bench\` after the part
above). Every figure comes from this one run: the peers and amber side by side, ${runs} runs of each backup and
restore with the order reversed in alternate runs; the tables show the best run, with every run listed.

## Set-up
- PostgreSQL ${pg_ver}; amber at ${amber_ver}; $(pgbackrest version); zstd $(zstd --version | grep -o 'v[0-9.]*' | head -1).
- Compression levels: amber zstd at its default, \`--compression fastest\` (zstd level 1 with a minimum match of 5 bytes);
  pgBackRest its defaults, lz4 level 1 and zst level 3; pg_basebackup its defaults, lz4's fast level and zstd
  level 3; \`pg_dump | zstd -3\` level 3; \`pg_dump -Fc\` zlib at its default level (6).
- $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, ext4; load average ${load_start} at the start, ${load_end} at the end.
$(if [ "$standard" = 1 ]; then echo "- The standard \"mixed\" data set (\`pgbench -i -s 10\` + bench_mixed, 6,150,000 rows),"; else echo "- **A reduced data set, not the standard one** (pgbench scale ${scale}, ${rows} rows of bench_mixed),"; fi)
  loaded from the cached dump of the part above into a cluster (VACUUM ANALYZE, clean shutdown) whose
  data directory, $(mb "$db_size") MB without pg_wal, is cached in \`${tpl#"$root"/}\` and copied for each run. The plain
  dump is $(mb "$dump_size") MB. The server runs with shared_buffers=256MB, max_wal_size=4GB, wal_level=replica, fsync on.
- Every tool runs as the postgres user on the same machine, over the unix socket. amber's repositories are
  local directories with its default key derivation (every command derives the key), encrypted.
- pgBackRest: repo in a temp directory, process-max=2, start-fast=y, one stanza on the test cluster. Its
  backups need the WAL of the backup window in its archive, and a restored server needs it from there, so the
  cluster runs with \`archive_mode=on\` and \`archive_command='pgbackrest ... archive-push %p'\` (archive-check
  left at its default, y): the normal pgBackRest set-up. \`--no-archive-check\` would make the backup
  unrestorable without WAL from elsewhere. amber and pg_basebackup take the WAL of the backup window inside
  the backup; they ran with the same archive_command active (it archives one or two segments per backup).
  The logical restores (amber's and pg_restore's) load into a second cluster, made and started like the first
  but not archiving: there archive-push would compress the ~1 GB of WAL each restore writes, during it and the
  measurements after it.
- Every physical restore starts with the page cache dropped after a \`sync\` (\`echo 3 > /proc/sys/vm/drop_caches\`):
  each tool reads its repository from disk, as a restore reads from a bucket. On this machine (the restores' file
  system: ${restore_fs:-not recorded}) a restore right after the run's own deletions was ~1 s slower otherwise (ext4
  without a journal skips recently freed inodes whose table block is cached), and waiting that out instead left each
  repository cached or not by chance (the kernel pages out what was not touched for 60 s).

## Commands
| key | command |
|---|---|
| amber physical, BASE_BACKUP | \`amber backup --engine postgres --dsn DSN --mode physical --json\` (fresh repository each run) |
| amber physical, --data-dir | \`amber backup --engine postgres --dsn DSN --mode physical --data-dir PGDATA --option workers=2 --json\` (fresh repository each run, so every file is read); the s2 and default rows add \`--compression s2\` or \`--compression default\` |
| pgBackRest lz4 / zst | \`pgbackrest --stanza=bench --type=full --compress-type=lz4\|zst backup\` |
| pg_basebackup lz4 / zstd | \`pg_basebackup -D DIR -Ft -Z lz4\|zstd -c fast\` (WAL streamed into the backup) |
| amber restore | \`amber restore --engine postgres --data-dir DIR\` of the BASE_BACKUP backup, then \`pg_ctl start\` until \`pg_is_in_recovery()\` is false |
| pgBackRest restore | \`pgbackrest restore --set=LABEL --type=immediate --target-action=promote --pg1-path=DIR\`, then the same |
| amber logical | \`amber backup --engine postgres --dsn DSN --mode logical --json\`; restore \`amber restore --engine postgres --dsn DSN/restored\`; the s2 rows add \`--compression s2\` to the backup (the restore needs no setting), the w2 rows \`--option workers=2\` (restored with the default \`restore_workers\` 2); the restore_workers=1 row restores the default backup with \`--option restore_workers=1\` (one \`pg_restore --single-transaction\` on the stream) |
| pg_dump \| zstd -3 | \`pg_dump -Fp \| zstd -q -3 > FILE\` |
| pg_dump -Fc / pg_restore -j2 | \`pg_dump -Fc -f FILE\`; \`pg_restore -j 2 -d restored FILE\` into an empty database |

Wall time from \`date\`; CPU (user + system of the command and its children, not the server's) and the peak
RSS of its largest process from \`/usr/bin/time\`; for amber also the peak of amber + plugin summed, sampled
every 0.2 s. Times and CPU are those of the best run; peak RSS is the highest of all runs. MB/s is the data
directory (physical) or the plain dump (logical) per wall second. Each restored server or database was checked
to hold all ${rows} rows of bench_mixed, outside the timing.

## Results
| tool, operation | best s | all runs s | MB/s | CPU s | stored MB | peak RSS (all runs) |
|---|---|---|---|---|---|---|
EOF
  row "amber physical backup, BASE_BACKUP" amber_phys "$db_size" "${stored[amber_phys]}"
  row "amber physical backup, --data-dir, workers=2" amber_files "$db_size" "${stored[amber_files]}"
  row "amber physical backup, --data-dir, workers=2, --compression s2" amber_files_s2 "$db_size" "${stored[amber_files_s2]}"
  row "amber physical backup, --data-dir, workers=2, --compression default" amber_files_default "$db_size" "${stored[amber_files_default]}"
  row "pgBackRest full, lz4" pgbr_lz4 "$db_size" "${stored[pgbr_lz4]}"
  row "pgBackRest full, zst" pgbr_zst "$db_size" "${stored[pgbr_zst]}"
  row "pg_basebackup -Ft lz4" pgbb_lz4 "$db_size" "${stored[pgbb_lz4]}"
  row "pg_basebackup -Ft zstd" pgbb_zstd "$db_size" "${stored[pgbb_zstd]}"
  row "amber physical restore, to a ready server" amber_prest "$db_size"
  row "pgBackRest restore (lz4 set), to a ready server" pgbr_prest_lz4 "$db_size"
  row "pgBackRest restore (zst set), to a ready server" pgbr_prest_zst "$db_size"
  row "amber logical backup" amber_lbk "$dump_size" "${stored[amber_lbk]}"
  row "amber logical backup, --compression s2" amber_lbk_s2 "$dump_size" "${stored[amber_lbk_s2]}"
  row "amber logical backup, workers=2 (w2)" amber_lbk_w2 "$dump_size" "${stored[amber_lbk_w2]}"
  row "pg_dump -Fp \| zstd -3" dump_zstd "$dump_size" "${stored[dump_zstd]}"
  row "pg_dump -Fc" dump_fc "$dump_size" "${stored[dump_fc]}"
  row "amber logical restore" amber_lrest "$dump_size"
  row "amber logical restore, restore_workers=1 (one pg_restore)" amber_lrest_one "$dump_size"
  row "amber logical restore (of the s2 backup)" amber_lrest_s2 "$dump_size"
  row "amber logical restore (of the w2 backup)" amber_lrest_w2 "$dump_size"
  row "pg_restore -j2 (from -Fc)" pgrestore_j2 "$dump_size"
  cat <<EOF

amber's physical backups read $(mb "${bytes_in[amber_phys]}") MB through BASE_BACKUP and $(mb "${bytes_in[amber_files]}") MB with --data-dir (bytes_in); stored
MB is amber's whole repository, the pgBackRest backup's directory, pg_basebackup's tar files, the dump file.

### WAL archive lag under load
\`amber archive --engine postgres --dsn DSN --flush-interval F\` into a fresh file repository while
\`pgbench -n -c 8 -j 2 -T ${lag_seconds}\` runs on the pgbench tables (archive_mode off for this part). A probe session
commits a marker row every 100 ms and records, from the server, \`clock_timestamp()\` taken inside the INSERT
(before its commit) and \`pg_current_wal_flush_lsn()\` read right after the commit returned, which is at or past
the end of the commit record. A watcher lists the repository's \`log/\` directory every 10 ms; an object
appears there only once written, fsynced and renamed (durable), and its name carries the end of the WAL it
holds. A marker's lag is the time from its timestamp to the first listing whose end reaches its LSN. Both
ends are conservative (the timestamp precedes the commit; the LSN may lie past it), so lag is over-stated,
by a few ms at most, never under-stated.

| --flush-interval | markers | p50 s | p90 s | p99 s | max s | never durable | pgbench TPS | amber RSS 3 s after start, no load / peak under load |
|---|---|---|---|---|---|---|---|---|
EOF
  for fl in $flushes; do
    read -r n p50 p90 p99 pmax miss <<<"${lag[$fl]}"
    echo "| ${fl} | ${n} | ${p50} | ${p90} | ${p99} | ${pmax} | ${miss} | ${tps[$fl]} | $(mib "${archrss_idle[$fl]}") / $(mib "${archrss_peak[$fl]}") MiB |"
  done
  cat <<EOF

## Goals (issue 13), ratios from this run
Standard data set; amber's repositories encrypted and compressed. The physical-backup goal is judged on each
of amber's two ways of reading the server, and on the \`--data-dir\` backup at two more compression settings: s2
(the kind of codec pgBackRest lz4 uses, against whose speed the goal is set) and zstd's default level 3
(pgBackRest zst's, against whose size it is set); amber's default is zstd's fastest level.

| goal | measured | |
|---|---|---|
| physical full backup ≥ 1.5× pgBackRest lz4's speed (process-max=2) at ≤ pgBackRest zst's size (its backup and the WAL of its window): amber through BASE_BACKUP | ${r_phys}× the speed; ${r_phys_size}× the size ($(mb "${stored[amber_phys]}") vs $(mb "${stored[pgbr_zst]}") + $(mb2 "${pgbr_wal[zst]}") MB) | $(met_phys "$r_phys" "$r_phys_size") |
| the same, amber \`--data-dir\` (workers=2) | ${r_files}× the speed; ${r_files_size}× the size ($(mb "${stored[amber_files]}") vs $(mb "${stored[pgbr_zst]}") + $(mb2 "${pgbr_wal[zst]}") MB) | $(met_phys "$r_files" "$r_files_size") |
| the same, amber \`--data-dir\` (workers=2) with \`--compression s2\` (lz4's kind of codec, as pgBackRest lz4) | ${r_files_s2}× the speed; ${r_files_s2_size}× the size ($(mb "${stored[amber_files_s2]}") vs $(mb "${stored[pgbr_zst]}") + $(mb2 "${pgbr_wal[zst]}") MB) | $(met_phys "$r_files_s2" "$r_files_s2_size") |
| the same, amber \`--data-dir\` (workers=2) with \`--compression default\` (zstd level 3, pgBackRest zst's level) | ${r_files_def}× the speed; ${r_files_def_size}× the size ($(mb "${stored[amber_files_default]}") vs $(mb "${stored[pgbr_zst]}") + $(mb2 "${pgbr_wal[zst]}") MB) | $(met_phys "$r_files_def" "$r_files_def_size") |
| physical restore to a ready server ≥ 1.5× pgBackRest's (its faster set) | ${r_rest}× | $(met "$r_rest" 1.5 ge) |
| logical backup at least as fast as pg_dump \| zstd -3 | ${r_log}× (stored ${r_log_size}× its size) | $(met "$r_log" 1 ge) |
| the same, amber with \`--compression s2\` (zstd -3 against S2: not equal settings) | ${r_log_s2}× (stored ${r_log_s2_size}× its size) | $(met "$r_log_s2" 1 ge) |
| logical restore ≥ 1.25× pg_restore -j2 | ${r_lrest}× | $(met "$r_lrest" 1.25 ge) |
| the same, from amber's \`--compression s2\` backup | ${r_lrest_s2}× | $(met "$r_lrest_s2" 1.25 ge) |
| logical backup with \`--option workers=2\`, and its restore (the table's rows loaded by 2 sessions) | backup ${r_log_w2}× pg_dump \| zstd -3 (stored ${r_log_w2_size}× its size); restore ${r_lrest_w2}× pg_restore -j2 | $(met "$r_log_w2" 1 ge), $(met "$r_lrest_w2" 1.25 ge) |
| archive lag p99 ≤ 1 s under \`pgbench -c 8\`, at the default --flush-interval ${first_fl} | ${lag_p99} s | $(met "$lag_p99" 1 le) |
| peak RSS of amber + plugin ≤ 256 MiB (the higher of their sum and the largest process; every operation above, highest of all runs) | $(mib "$peak_mem") MiB (${peak_what}) | $(met "$(mib "$peak_mem")" 256 le) |

## What limits it
EOF
  limits
  echo "<!-- bench-postgres.sh: end -->"
}

# An earlier PostgreSQL section is replaced where it stands; else the section
# is appended.
write_section "$out" bench-postgres.sh PostgreSQL
