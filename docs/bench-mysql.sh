#!/usr/bin/env bash
# `make bench`, MariaDB part (issue #9): measures amber's logical and
# physical MariaDB backups and restores side by side with mariadb-dump | zstd,
# mydumper/myloader, the mariadb client and mariadb-backup on the standard
# "mixed" data set loaded into MariaDB, in one run, and writes a MariaDB
# section into the report that docs/bench.sh writes (in place of an earlier one).
#
# The data set (../shared/BENCHMARKS.md): bench_mixed with the same columns
# as PostgreSQL's (BIGINT, TIMESTAMP, DECIMAL(12,2), VARCHAR(64), VARCHAR(80))
# filled from seq_1_to_<rows> with RAND()/MD5(), plus pgbench-shaped tables
# (pgbench_accounts 100000 rows per scale unit, branches, tellers, history).
# It is loaded once into a server whose stopped data directory is cached
# under .deps/bench/mariadb-*; each run starts a server on a copy of it.
# Environment (as docs/bench.sh):
#   BENCH_ROWS, BENCH_SCALE  data set (default: the standard 6150000 rows, scale 10)
#   BENCH_RUNS               runs of each measurement (default 2; the best time shown,
#                            the peak RSS of all runs)
#   AMBER_DEPS, BENCH_DIR    the deps folder (default .deps) and the cache (default $AMBER_DEPS/bench)
#   BENCH_OUT                report to append to (default docs/benchmarks.md for the
#                            standard set, .deps/bench/benchmarks-quick.md otherwise)
#   BENCH_QUIET_WAIT         seconds to wait for idle cores before each measurement (30)
#   BENCH_DATA_ONLY=1        make (or find) the cached data directory and stop
#   BENCH_MY_RESTORE_THREADS amber restore's restore_threads (default 2, as myloader -t 2)
#   BENCH_MY_LAG_SECONDS     length of the write load of the archive lag part (default 30)
#   BENCH_MY_LAG_ONLY=1      run only the archive lag part, on an empty server, print its
#                            figures and write no report
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
deps=${AMBER_DEPS:-$root/.deps}
benchdir=${BENCH_DIR:-$deps/bench}
export PATH="$root/bin:$deps/bin:$PATH"

rows=${BENCH_ROWS:-6150000}
scale=${BENCH_SCALE:-10}
runs=${BENCH_RUNS:-2}
restore_threads=${BENCH_MY_RESTORE_THREADS:-2}
standard=0
if [ "$rows" = 6150000 ] && [ "$scale" = 10 ]; then standard=1; fi
if [ "$standard" = 1 ]; then
  tpl="$benchdir/mariadb-mixed"
  out=${BENCH_OUT:-$root/docs/benchmarks.md}
else
  tpl="$benchdir/mariadb-s${scale}-r${rows}"
  out=${BENCH_OUT:-$benchdir/benchmarks-quick.md}
fi

say() { printf 'bench-mysql: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

for tool in amber amber-plugin-mysql mariadbd mariadb-install-db mariadb mariadb-dump mariadb-backup mbstream \
  mydumper myloader zstd /usr/bin/time; do
  command -v "$tool" >/dev/null || die "$tool not found: run \`make deps\` (and \`make build\` for amber)"
done
amber=$(command -v amber)
[ "$(id -u)" = 0 ] || die "run as root: the servers run as the mysql user, and mariadb-backup reads their files"
id mysql >/dev/null 2>&1 || die "no mysql OS user: install mariadb-server (\`make deps\`)"
pw=bench-Pw-4417

# ---------------------------------------------------------------------------
# Servers: each in a private directory, socket only, run as mysql.

servers=()
cleanup() {
  local d
  for d in "${servers[@]}"; do
    [ -f "$d/mariadbd.pid" ] && kill "$(cat "$d/mariadbd.pid")" 2>/dev/null || true
  done
  sleep 1
  for d in "${servers[@]}"; do rm -rf "$d"; done
  [ -n "${work:-}" ] && rm -rf "$work"
  return 0
}
trap cleanup EXIT

# start_server DIR: starts mariadbd on DIR/data (which must exist), socket
# DIR/sock, and waits until it answers.
start_server() {
  local d=$1
  chown -R mysql: "$d"
  mariadbd --no-defaults --user=mysql --datadir="$d/data" --socket="$d/sock" --skip-networking \
    --pid-file="$d/mariadbd.pid" --log-error="$d/err.log" --log-bin="$d/data/mysql-bin" --server-id=1 \
    --binlog-format=ROW --innodb-buffer-pool-size=512M --innodb-log-file-size=512M \
    --innodb-flush-log-at-trx-commit=2 --sync-binlog=0 --max-allowed-packet=1G \
    --character-set-server=utf8mb4 --collation-server=utf8mb4_unicode_ci --default-time-zone=+00:00 \
    </dev/null >/dev/null 2>&1 &
  local i
  for i in $(seq 1 120); do
    mariadb --no-defaults --socket="$d/sock" -uroot -e 'SELECT 1' >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  cat "$d/err.log" >&2
  die "mariadbd on $d did not start"
}

# new_server: an empty server with database app and the bench user; sets
# srv to its directory.
new_server() {
  local d
  d=$(mktemp -d /tmp/amber-bench-my.XXXXXX)
  servers+=("$d")
  chmod 755 "$d"
  mariadb-install-db --no-defaults --user=mysql --datadir="$d/data" --auth-root-authentication-method=socket \
    --skip-test-db >"$d/install.log" 2>&1 || { cat "$d/install.log" >&2; die "mariadb-install-db failed"; }
  start_server "$d"
  mariadb --no-defaults --socket="$d/sock" -uroot -e "CREATE DATABASE app;
    CREATE USER bench@localhost IDENTIFIED BY '$pw'; GRANT ALL ON *.* TO bench@localhost WITH GRANT OPTION"
  srv=$d
}

stop_server() {
  local d=$1 pid
  pid=$(cat "$d/mariadbd.pid" 2>/dev/null) || return 0
  kill "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
}

sqlq() { mariadb --no-defaults --socket="$1/sock" -uroot -N -B -e "$2"; }

# ---------------------------------------------------------------------------
# Binlog archive lag, commit to durable in the repository, under a write load
# (run_lag SERVERDIR DSN; sets lag="n p50 p90 p99 max missing" and lag_tps).
#
# `amber archive --engine mysql` runs at its default --flush-interval into a
# file repository while two writer sessions insert timestamped rows in
# autocommit for lag_seconds. A probe session commits a marker row every
# 100 ms and records NOW(6) taken inside the INSERT (before its commit) and,
# just after the commit returned, SHOW MASTER STATUS: binlog up to that
# file:position holds the commit. A watcher lists the repository's log/
# directory every 10 ms (an object is visible only once written, fsynced and
# renamed, i.e. durable; its name ends with the binlog offset it reaches,
# file number << 32 | position) and notes when that end first reaches each
# marker's position. Both ends are conservative (the timestamp precedes the
# commit; the position read after it may lie past it), so the lag is over-
# rather than under-stated.
lag_seconds=${BENCH_MY_LAG_SECONDS:-30}
run_lag() {
  local d=$1 ldsn=$2 r="$work/amber-archive" archpid watch probe
  mkdir -p "$work"
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
				n := o.Name()
				if strings.HasPrefix(n, ".") || strings.HasSuffix(n, ".partial") {
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

// lagwatch LOGDIR STOPFILE PROBEFILE: watch until STOPFILE exists, then
// print count, p50, p90, p99, max lag (seconds) and markers never durable.
// PROBEFILE holds "<id> <unix time>" lines, each followed by the
// "<binlog file> <position> ..." line of SHOW MASTER STATUS.
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
	ts := -1.0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 2 {
			continue
		}
		i := strings.LastIndexByte(fs[0], '.')
		if i < 0 || ts < 0 { // a marker line: "<id> <unix time>"
			ts, _ = strconv.ParseFloat(fs[1], 64)
			continue
		}
		file, _ := strconv.ParseUint(fs[0][i+1:], 10, 32)
		pos, _ := strconv.ParseUint(fs[1], 10, 32)
		off := file<<32 | pos
		k := sort.Search(len(seen), func(k int) bool { return seen[k].end >= off })
		if k == len(seen) {
			missing++
		} else {
			lags = append(lags, float64(seen[k].at.UnixNano())/1e9-ts)
		}
		ts = -1
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
  sqlq "$d" "CREATE TABLE IF NOT EXISTS app.lag_probe (id int PRIMARY KEY, t decimal(20,6));
    CREATE TABLE IF NOT EXISTS app.lag_load (id bigint AUTO_INCREMENT PRIMARY KEY, ts datetime(6), pad varchar(200));
    TRUNCATE app.lag_probe"
  rm -rf "$r" "$work/amber-cache-arch" "$work/stop" "$work/stop-probe" "$work/probe.txt"
  AMBER_REPO="$r" AMBER_CACHE_DIR="$work/amber-cache-arch" "$amber" repo init --json >/dev/null
  AMBER_REPO="$r" AMBER_CACHE_DIR="$work/amber-cache-arch" "$amber" archive --engine mysql --dsn "$ldsn" 2>"$work/archive.log" &
  archpid=$!
  until [ "$(sqlq "$d" "SELECT count(*) FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'")" -ge 1 ]; do
    kill -0 "$archpid" 2>/dev/null || die "amber archive exited: $(cat "$work/archive.log")"
    sleep 0.2
  done
  sleep 2
  wait_quiet
  "$work/lagwatch" "$r/log" "$work/stop" "$work/probe.txt" >"$work/lag.txt" &
  watch=$!
  (
    n=0
    while [ ! -e "$work/stop-probe" ]; do
      n=$((n + 1))
      echo "INSERT INTO app.lag_probe VALUES ($n, UNIX_TIMESTAMP(NOW(6)));"
      echo "SELECT id, t FROM app.lag_probe WHERE id = $n; SHOW MASTER STATUS;"
      sleep 0.1
    done
  ) | mariadb --no-defaults --socket="$d/sock" -uroot -N -B >"$work/probe.txt" &
  probe=$!
  say "archive lag: 2 writer sessions inserting for ${lag_seconds} s, a marker every 100 ms"
  local before after wp=()
  before=$(sqlq "$d" "SELECT COUNT(*) FROM app.lag_load")
  for _ in 1 2; do
    timeout "$lag_seconds" yes "INSERT INTO app.lag_load (ts, pad) VALUES (NOW(6), REPEAT('x', 100));" |
      mariadb --no-defaults --socket="$d/sock" -uroot >/dev/null 2>&1 &
    wp+=($!)
  done
  wait "${wp[@]}" || true
  after=$(sqlq "$d" "SELECT COUNT(*) FROM app.lag_load")
  lag_tps=$(( (after - before) / lag_seconds ))
  touch "$work/stop-probe"
  wait "$probe" || true
  sleep 3 # the last markers become durable
  touch "$work/stop"
  wait "$watch"
  kill -TERM "$archpid"
  wait "$archpid" || die "amber archive exited with an error after SIGTERM: $(tail -5 "$work/archive.log")"
  lag=$(cat "$work/lag.txt")
  say "lag (n p50 p90 p99 max missing): $lag; writers ${lag_tps} rows/s"
}

make_template() {
  local d
  say "creating the data set (pgbench-shaped scale $scale, bench_mixed $rows rows) in a throwaway server"
  new_server
  d=$srv
  mariadb --no-defaults --socket="$d/sock" -uroot app <<SQL
SET SESSION sql_log_bin = 0;
CREATE TABLE pgbench_branches (bid int PRIMARY KEY, bbalance int, filler char(88));
CREATE TABLE pgbench_tellers (tid int PRIMARY KEY, bid int, tbalance int, filler char(84));
CREATE TABLE pgbench_accounts (aid int PRIMARY KEY, bid int, abalance int, filler char(84));
CREATE TABLE pgbench_history (tid int, bid int, aid int, delta int, mtime timestamp, filler char(22));
INSERT INTO pgbench_branches SELECT seq, 0, NULL FROM seq_1_to_${scale};
INSERT INTO pgbench_tellers SELECT seq, (seq - 1) DIV 10 + 1, 0, NULL FROM seq_1_to_$((scale * 10));
INSERT INTO pgbench_accounts SELECT seq, (seq - 1) DIV 100000 + 1, 0, '' FROM seq_1_to_$((scale * 100000));
CREATE TABLE bench_mixed (id bigint PRIMARY KEY, ts timestamp NULL, amount decimal(12,2), email varchar(64), note varchar(80));
INSERT INTO bench_mixed SELECT seq, TIMESTAMP'2024-01-01 00:00:00' + INTERVAL (seq % 5000000) * 7 SECOND,
  ROUND(RAND() * 100000, 2), CONCAT('user', FLOOR(RAND() * 1000000), '@example.com'),
  CONCAT(MD5(seq), ' ', SUBSTR(MD5(RAND()), 1, FLOOR(RAND() * 32)))
FROM seq_1_to_${rows};
SQL
  stop_server "$d"
  rm -f "$d"/data/mysql-bin.*
  mkdir -p "$benchdir"
  rm -rf "$tpl.tmp"
  mv "$d/data" "$tpl.tmp"
  mv "$tpl.tmp" "$tpl"
}

if [ "${BENCH_MY_LAG_ONLY:-0}" = 1 ]; then
  # The lag part alone, on an empty server: prints "n p50 p90 p99 max
  # missing rows/s" and writes no report.
  work=$(mktemp -d "${TMPDIR:-/tmp}/amber-bench-my.XXXXXX")
  chmod 755 "$work"
  . "$root/docs/bench-lib.sh"
  export AMBER_PASSWORD=bench-password
  new_server
  sqlq "$srv" "RESET MASTER" >/dev/null
  say "MariaDB $(sqlq "$srv" "SELECT VERSION()"), amber at $(binary_commit "$amber")"
  run_lag "$srv" "mysql://bench:$pw@localhost/app?socket=$srv/sock"
  echo "$lag $lag_tps"
  exit 0
fi
[ -d "$tpl" ] || make_template
say "data set: $tpl ($(du -sm "$tpl" | cut -f1) MiB on disk)"
if [ "${BENCH_DATA_ONLY:-0}" = 1 ]; then exit 0; fi

src=$(mktemp -d /tmp/amber-bench-my.XXXXXX)
servers+=("$src")
chmod 755 "$src"
cp -a "$tpl" "$src/data"
start_server "$src"
sqlq "$src" "RESET MASTER" >/dev/null
dsn="mysql://bench:$pw@localhost/app?socket=$src/sock"
data_bytes=$(sqlq "$src" "SELECT SUM(data_length + index_length) FROM information_schema.TABLES WHERE table_schema = 'app'")
version=$(sqlq "$src" "SELECT VERSION()")
sum_src=$(sqlq "$src" "CHECKSUM TABLE app.bench_mixed, app.pgbench_accounts EXTENDED" | awk '{printf "%s ", $2}')

# ---------------------------------------------------------------------------
# Measuring: as docs/bench.sh.

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
work=$(mktemp -d "${TMPDIR:-/tmp}/amber-bench-my.XXXXXX")
chmod 755 "$work"
declare -A best bestcpu maxrss all stored
. "$root/docs/bench-lib.sh"
amber_ver=$(binary_commit "$amber") # now: the checkout may move while this runs
measure() {
  local key=$1; shift
  local t0 t1 wall cpu u s rss
  wait_quiet
  t0=$(date +%s.%N)
  /usr/bin/time -f '%U %S %M' -o "$work/time" "$@"
  t1=$(date +%s.%N)
  wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}')
  read -r u s rss <"$work/time"
  cpu=$(awk -v u="$u" -v s="$s" 'BEGIN{printf "%.2f", u+s}')
  all[$key]="${all[$key]:+${all[$key]} / }$wall"
  if [ -z "${best[$key]:-}" ] || awk -v a="$wall" -v b="${best[$key]}" 'BEGIN{exit !(a<b)}'; then
    best[$key]=$wall bestcpu[$key]=$cpu
  fi
  if [ -z "${maxrss[$key]:-}" ] || [ "$rss" -gt "${maxrss[$key]}" ]; then maxrss[$key]=$rss; fi
  say "$key: ${wall}s wall, ${cpu}s CPU, peak RSS $((rss / 1024)) MiB"
}
# sh -c wrappers: /usr/bin/time measures the whole pipeline.
export MYSQL_BENCH_PW=$pw
export AMBER_PASSWORD=bench-password

# check DIR LABEL: the restored server's tables equal the source's.
check() {
  local got
  got=$(sqlq "$1" "CHECKSUM TABLE app.bench_mixed, app.pgbench_accounts EXTENDED" | awk '{printf "%s ", $2}')
  [ "$got" = "$sum_src" ] || die "$2 restored different rows (CHECKSUM TABLE $got, want $sum_src)"
}

run_logical() {
  local r="$work/amber-repo" d
  rm -rf "$r" "$work/amber-cache" "$work/dump.sql.zst" "$work/mydumper"
  export AMBER_REPO="$r" AMBER_CACHE_DIR="$work/amber-cache"
  "$amber" repo init --json >/dev/null
  measure amber_logical "$amber" backup --engine mysql --dsn "$dsn" --mode logical --json >"$work/logical.json"
  # The same with S2, lz4's kind of codec, into a repository of its own.
  export AMBER_REPO="$work/amber-repo-s2"
  rm -rf "$AMBER_REPO"
  "$amber" repo init --json >/dev/null
  measure amber_logical_s2 "$amber" backup --engine mysql --dsn "$dsn" --mode logical --compression s2 --json >/dev/null
  stored[amber_logical_s2]=$(du -sb "$AMBER_REPO" | cut -f1)
  rm -rf "$AMBER_REPO"
  export AMBER_REPO="$r"
  measure mariadb_dump sh -c "mariadb-dump --no-defaults --socket='$src/sock' -uroot --single-transaction app | zstd -q -3 >'$work/dump.sql.zst'"
  measure mydumper mydumper --socket "$src/sock" -u root -t 2 -B app -o "$work/mydumper"
  stored[amber_logical]=$(du -sb "$r" | cut -f1)
  stored[mariadb_dump]=$(stat -c %s "$work/dump.sql.zst")
  stored[mydumper]=$(du -sb "$work/mydumper" | cut -f1)
  id=$(grep -o '"id": *"[0-9a-f]*"' "$work/logical.json" | head -1 | grep -o '[0-9a-f]\{16,\}')
  sql_bytes=$(grep -o '"bytes_in": *[0-9]*' "$work/logical.json" | grep -o '[0-9]*$')
  lock_ms=$("$amber" cat manifest "$id" | grep -o '"lock_ms": *"[0-9]*"' | grep -o '[0-9]*"$' | tr -d '"' || echo '?')

  new_server
  d=$srv
  measure amber_logical_restore "$amber" restore --engine mysql --dsn "mysql://bench:$pw@localhost/app?socket=$d/sock" --backup latest \
    --option restore_threads="$restore_threads"
  check "$d" "amber restore"
  stop_server "$d"
  new_server
  d=$srv
  measure client_restore sh -c "zstd -q -dc '$work/dump.sql.zst' | mariadb --no-defaults --socket='$d/sock' -uroot app"
  check "$d" "mariadb < mariadb-dump"
  stop_server "$d"
  new_server
  d=$srv
  measure myloader myloader --socket "$d/sock" -u root -t 2 -B app -o -d "$work/mydumper"
  check "$d" "myloader"
  stop_server "$d"
}

run_physical() {
  local r="$work/amber-phys" d
  rm -rf "$r" "$work/amber-cache-phys" "$work/backup.xb.zst"
  export AMBER_REPO="$r" AMBER_CACHE_DIR="$work/amber-cache-phys"
  "$amber" repo init --json >/dev/null
  measure amber_physical "$amber" backup --engine mysql --dsn "$dsn" --mode physical --json >/dev/null
  measure mariadb_backup sh -c "mariadb-backup --no-defaults --socket='$src/sock' --user=root --backup --stream=xbstream \
    --target-dir='$work/mb-target' --datadir='$src/data' 2>'$work/mb.log' | zstd -q -3 >'$work/backup.xb.zst'"
  rm -rf "$work/mb-target"
  stored[amber_physical]=$(du -sb "$r" | cut -f1)
  stored[mariadb_backup]=$(stat -c %s "$work/backup.xb.zst")

  d=$(mktemp -d /tmp/amber-bench-my.XXXXXX)
  servers+=("$d")
  chmod 755 "$d"
  measure amber_physical_restore "$amber" restore --engine mysql --data-dir "$d/data" --backup latest
  start_server "$d"
  check "$d" "amber restore --data-dir"
  stop_server "$d"
  rm -rf "$d/data"
  measure mariadb_backup_restore sh -c "mkdir '$d/data' && zstd -q -dc '$work/backup.xb.zst' | mbstream -x -C '$d/data' \
    && mariadb-backup --no-defaults --prepare --target-dir='$d/data' >'$work/prepare.log' 2>&1"
  start_server "$d"
  check "$d" "mbstream + mariadb-backup --prepare"
  stop_server "$d"
  rm -rf "$d/data"
}

for i in $(seq 1 "$runs"); do
  say "run $i of $runs"
  run_logical
  run_physical
done
run_lag "$src" "$dsn"
stop_server "$src"
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------------------
# The report: a MariaDB section appended to docs/bench.sh's report.

mb() { awk -v b="$1" 'BEGIN{printf "%.0f", b/1e6}'; }
rate() { awk -v b="$data_bytes" -v s="$1" 'BEGIN{printf "%.0f", b/1e6/s}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a/b}'; }
speed() { ratio "${best[$2]}" "${best[$1]}"; } # amber key, peer key: peer time / amber time
mib() { echo $(($1 / 1024)); }
met() { awk -v a="$1" -v g="$2" -v d="$3" 'BEGIN{ if ((d=="ge" && a>=g) || (d=="le" && a<=g)) print "**met**"; else print "**not met**"}'; }
util() { awk -v c="${bestcpu[$1]}" -v w="${best[$1]}" 'BEGIN{printf "%.2f", c/w}'; }

row() { # label key
  local st=""
  [ -n "${stored[$2]:-}" ] && st=$(mb "${stored[$2]}")
  printf '| %s | %s | %s | %s | %s | %s | %s MiB |\n' "$1" "${best[$2]}" "${all[$2]}" "$(rate "${best[$2]}")" \
    "${bestcpu[$2]}" "$st" "$(mib "${maxrss[$2]}")"
}

read -r lag_n lag_p50 lag_p90 lag_p99 lag_max lag_miss <<<"$lag"
peak=$(for k in amber_logical amber_logical_s2 amber_logical_restore amber_physical amber_physical_restore; do echo "${maxrss[$k]}"; done | sort -n | tail -1)
s_dump=$(speed amber_logical mariadb_dump) s_myd=$(speed amber_logical mydumper)
s2_dump=$(speed amber_logical_s2 mariadb_dump) s2_myd=$(speed amber_logical_s2 mydumper)
z2_dump=$(ratio "${stored[amber_logical_s2]}" "${stored[mariadb_dump]}")
s_rest=$(speed amber_logical_restore myloader) s_client=$(speed amber_logical_restore client_restore)
s_phys=$(speed amber_physical mariadb_backup) s_prest=$(speed amber_physical_restore mariadb_backup_restore)
z_phys=$(ratio "${stored[amber_physical]}" "${stored[mariadb_backup]}")

section() {
  cat <<EOF
<!-- bench-mysql.sh: begin -->
# MariaDB: amber's logical and physical backups against mariadb-dump, mydumper and mariadb-backup

Generated by \`make bench\` (docs/bench-mysql.sh) on $(date -u '+%Y-%m-%d %H:%M UTC'). The peers and amber ran side by
side in one run; absolute seconds drift between runs, the ratios are what this section is for.

## Set-up
- $(nproc) cores; load average (1, 5, 15 min) ${load_start} when measuring began, ${load_end} at the end. The machine
  is shared: other work ran alongside, $busy_starts of $measurements measurements started with the cores less than 90%
  idle after waiting ${BENCH_QUIET_WAIT:-30} s. Each time is the best of ${runs} run(s), each peak RSS the highest.
- MariaDB ${version} (Debian), socket only, 512 MiB buffer pool, binlog on (ROW); every restore goes into a fresh
  empty server and is checked equal to the source (\`CHECKSUM TABLE\` of bench_mixed and pgbench_accounts).
- amber at ${amber_ver}, repository on the local disk, compressed (zstd) and encrypted as always;
  mydumper $(mydumper --version 2>&1 | grep -o '[0-9][0-9.]*' | head -1); zstd $(zstd --version | grep -o 'v[0-9.]*' | head -1).
EOF
  if [ "$standard" = 1 ]; then
    echo "- Data set: the standard \"mixed\" set in MariaDB: bench_mixed, 6,150,000 rows, plus pgbench-shaped tables at scale 10"
  else
    echo "- Data set: **a reduced set, not the standard one**: bench_mixed ${rows} rows, pgbench-shaped tables at scale ${scale}"
  fi
  cat <<EOF
  (\`information_schema\`: $(mb "$data_bytes") MB of InnoDB data and indexes). MB/s below is that
  size per wall second, for every tool alike.

## Commands
- \`amber backup --engine mysql --mode logical\` (2 workers, one snapshot, tables above 64 MiB split into key ranges;
  once more with \`--compression s2\` into a repository of its own, in the row that says so)
  and \`amber restore --engine mysql --dsn\` (schema through one \`mariadb\` client session, then the data entries
  through ${restore_threads} sessions at once, \`restore_threads\`, then views, routines and triggers);
- \`mariadb-dump --single-transaction app | zstd -3\`, restored with \`zstd -dc | mariadb app\`;
- \`mydumper -t 2 -B app\` (uncompressed), restored with \`myloader -t 2\`;
- \`amber backup --engine mysql --mode physical\` (mariadb-backup --stream=xbstream inside) and
  \`amber restore --data-dir\` (unpack + \`--prepare\`);
- \`mariadb-backup --backup --stream=xbstream | zstd -3\`, restored with \`zstd -dc | mbstream -x\` +
  \`mariadb-backup --prepare\`.

## Results
| tool, operation | best s | all runs s | MB/s | CPU s | stored MB | peak RSS |
|---|---|---|---|---|---|---|
EOF
  row "amber logical backup" amber_logical
  row "amber logical backup, --compression s2" amber_logical_s2
  row "mariadb-dump \| zstd -3" mariadb_dump
  row "mydumper -t 2" mydumper
  row "amber logical restore" amber_logical_restore
  row "mariadb client (from the zstd dump)" client_restore
  row "myloader -t 2" myloader
  row "amber physical backup" amber_physical
  row "mariadb-backup --stream \| zstd -3" mariadb_backup
  row "amber physical restore (--data-dir)" amber_physical_restore
  row "mbstream -x + mariadb-backup --prepare" mariadb_backup_restore
  cat <<EOF

CPU s is user + system of the measured command (for amber: amber and its plugin; the server's own work is not
counted for any tool). The global read lock of amber's logical backup was held ${lock_ms} ms (\`lock_ms\`).

## Binlog archive lag under load
\`amber archive --engine mysql\` (default --flush-interval) into a repository on the local disk while two sessions
insert rows in autocommit for ${lag_seconds} s (${lag_tps} rows/s); a probe commits a marker every 100 ms and reads
\`SHOW MASTER STATUS\` after each commit. A marker's lag is the time from its \`NOW(6)\` (taken before its
commit) to the first listing of the repository whose durable segments reach that position, so it is over-stated
rather than under-stated. ${lag_n} markers: p50 ${lag_p50} s, p90 ${lag_p90} s, p99 ${lag_p99} s, max ${lag_max} s;
${lag_miss} never durable.

## Goals (issue #9), ratios from this run
| goal | measured | |
|---|---|---|
| logical backup ≥ 2× mariadb-dump \| zstd -3 | ${s_dump}× | $(met "$s_dump" 2 ge) |
| logical backup ≥ mydumper -t 2 | ${s_myd}× | $(met "$s_myd" 1 ge) |
| the same two, amber with \`--compression s2\` (S2 against zstd -3 and against no compression: not equal settings) | ${s2_dump}× mariadb-dump \| zstd -3 (stored ${z2_dump}× its size), ${s2_myd}× mydumper | $(met "$s2_dump" 2 ge), $(met "$s2_myd" 1 ge) |
| logical restore ≥ myloader -t 2 | ${s_rest}× (${s_client}× the single mariadb client) | $(met "$s_rest" 1 ge) |
| physical backup ≥ mariadb-backup \| zstd | ${s_phys}× | $(met "$s_phys" 1 ge) |
| physical backup stored ≤ mariadb-backup \| zstd's size | ${z_phys}× | $(met "$z_phys" 1 le) |
| physical restore (no goal) against mbstream + prepare | ${s_prest}× | |
| global lock < 1 s | ${lock_ms} ms | $(met "${lock_ms/\?/99999}" 1000 le) |
| amber's peak RSS ≤ 256 MiB | $(mib "$peak") MiB | $(met "$(mib "$peak")" 256 le) |
| archive lag p99 ≤ 1 s under load, at the default --flush-interval | ${lag_p99} s | $(met "$lag_p99" 1 le) |

## What limits it
- amber kept $(util amber_logical) cores busy on the logical backup (mydumper $(util mydumper), mariadb-dump|zstd
  $(util mariadb_dump)); $(util amber_physical) on the physical backup (mariadb-backup|zstd $(util mariadb_backup)). Every byte amber
  stores is chunked, hashed, compressed and encrypted, which the peers do not do (mydumper does not even compress).
- amber's dump is $(mb "$sql_bytes") MB of SQL for $(mb "$data_bytes") MB of InnoDB data: like mariadb-dump it writes
  text as escaped string literals in multi-row INSERTs of about 1 MiB (only binary, BLOB and BIT values, and text
  whose bytes are not valid in the dump's utf8mb4 session, as hex), and every byte of it is chunked, hashed,
  compressed and encrypted.
- amber's logical restore kept $(util amber_logical_restore) cores busy (myloader $(util myloader)); the restore
  is bounded by the server, which parses and inserts the rows of ${restore_threads} sessions (myloader: 2 threads) and
  writes its binlog (kept on: see docs/engines/mysql.md), on the same cores as the tools. The data sessions load
  the key ranges of a split table at once; a table that is not split loads in one session.
- mydumper runs without \`--rows\` or \`--chunk-filesize\`: it writes each table as one file, so myloader -t 2 loads
  bench_mixed, most of the data, in one thread.
- On $(nproc) shared cores the server, the tool and amber compete for the same CPUs; the ratios here are of one run.
<!-- bench-mysql.sh: end -->
EOF
}

# An earlier MariaDB section is replaced where it stands; else the section
# is appended.
write_section "$out" bench-mysql.sh MariaDB
