#!/usr/bin/env bash
# `make bench`: measures `amber backup --stdin` and `amber restore --stdout`
# side by side with `restic backup --stdin` / `restic dump` (restic 0.18.1,
# built by `make deps` from conformance/tools/restic, once with its default
# `--compression auto` and once with `--compression off`) and `zstd -1` on the
# same plain pg_dump of the standard "mixed" data set, in one run, and writes
# docs/benchmarks.md from the figures.
#
# The dump is made once (a throwaway PostgreSQL 15 cluster) and cached under
# .deps/bench/. Environment:
#   BENCH_ROWS   rows of bench_mixed (default 6150000, the standard set)
#   BENCH_SCALE  pgbench scale (default 10)
#   BENCH_RUNS   runs of each measurement (default 2; the table shows the best
#                time, and the peak RSS of all runs)
#   BENCH_DATA_ONLY=1  make (or find) the cached dump and stop
#   BENCH_QUIET_WAIT   seconds to wait for idle cores before each measurement (30)
#   BENCH_OUT    report path (default docs/benchmarks.md; a smaller data set
#                writes .deps/bench/benchmarks-quick.md unless this is set)
#   AMBER_DEPS   the deps folder (default .deps; `make` sets it)
#   BENCH_ONLY=restic  measure only this section (restic and zstd), keeping the
#                report's other sections as they are
#   BENCH_DIR    the cache of dumps and quick reports (default $AMBER_DEPS/bench)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
deps=${AMBER_DEPS:-$root/.deps}
benchdir=${BENCH_DIR:-$deps/bench}
export PATH="$root/bin:$deps/bin:$PATH"

rows=${BENCH_ROWS:-6150000}
scale=${BENCH_SCALE:-10}
runs=${BENCH_RUNS:-2}
standard=0
if [ "$rows" = 6150000 ] && [ "$scale" = 10 ]; then standard=1; fi
if [ "$standard" = 1 ]; then
  dump="$benchdir/mixed.sql"
  out=${BENCH_OUT:-$root/docs/benchmarks.md}
else
  dump="$benchdir/mixed-s${scale}-r${rows}.sql"
  out=${BENCH_OUT:-$benchdir/benchmarks-quick.md}
fi
pgbin=/usr/lib/postgresql/15/bin

say() { printf 'bench: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

for tool in amber zstd "$pgbin/initdb" /usr/bin/time; do
  command -v "$tool" >/dev/null || die "$tool not found: run \`make deps\` (and \`make build\` for amber)"
done
amber=$(command -v amber)
# restic: the version pinned in conformance/tools/restic, never another on PATH.
restic=$deps/bin/restic
restic_pin=$(awk '$1 == "github.com/restic/restic" { print $2 }' "$root/conformance/tools/restic/go.mod")
[ -x "$restic" ] || die "restic ${restic_pin} not found in $deps/bin: run \`make deps\` (conformance/tools/restic builds it)"
restic_ver=$("$restic" version | awk '{print $2}')
[ "v$restic_ver" = "$restic_pin" ] || die "$restic is restic $restic_ver, want ${restic_pin#v}: run \`make deps\`"

# ---------------------------------------------------------------------------
# The data set: pgbench -i -s 10 plus bench_mixed, dumped with pg_dump -Fp.

make_dump() {
  local tmp port sock
  tmp=$(mktemp -d /tmp/amber-bench-pg.XXXXXX)
  chmod 755 "$tmp"
  chown postgres: "$tmp"
  sock="$tmp"
  # A random port that nothing listens on; the server listens on its unix
  # socket in $tmp only, so the port just names the socket.
  while :; do
    port=$((20000 + RANDOM % 40000))
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || break
  done
  trap "runuser -u postgres -- $pgbin/pg_ctl -D '$tmp/data' -m immediate stop >/dev/null 2>&1 || true; rm -rf '$tmp'" EXIT
  say "creating the data set (pgbench -s $scale, bench_mixed $rows rows) in a throwaway cluster on port $port"
  runuser -u postgres -- "$pgbin/initdb" -D "$tmp/data" -U postgres --auth=trust -E UTF8 --locale=C >/dev/null
  # Settings that only speed up loading; they do not change the data.
  runuser -u postgres -- "$pgbin/pg_ctl" -D "$tmp/data" -l "$tmp/server.log" -w start -o \
    "-p $port -k $sock -c listen_addresses= -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
     -c wal_level=minimal -c max_wal_senders=0 -c max_wal_size=8GB -c shared_buffers=512MB \
     -c maintenance_work_mem=512MB" >/dev/null
  local conn=(-h "$sock" -p "$port" -U postgres)
  runuser -u postgres -- "$pgbin/pgbench" "${conn[@]}" -i -q -s "$scale" postgres >/dev/null 2>&1
  runuser -u postgres -- "$pgbin/psql" "${conn[@]}" -X -q -v ON_ERROR_STOP=1 postgres >/dev/null <<SQL
CREATE TABLE bench_mixed (id bigint PRIMARY KEY, ts timestamptz, amount numeric(12,2), email text, note text);
INSERT INTO bench_mixed SELECT g, timestamptz '2024-01-01' + (g % 5000000) * interval '7 seconds',
  round((random()*100000)::numeric, 2), 'user' || (random()*1000000)::int || '@example.com',
  md5(g::text) || ' ' || substr(md5(random()::text), 1, (random()*32)::int)
FROM generate_series(1, $rows) g;
SQL
  say "pg_dump -Fp to $dump"
  mkdir -p "$(dirname "$dump")"
  runuser -u postgres -- "$pgbin/pg_dump" "${conn[@]}" -Fp postgres >"$dump.tmp"
  grep -q 'PostgreSQL database dump complete' <(tail -c 200 "$dump.tmp") || die "pg_dump output is incomplete"
  mv "$dump.tmp" "$dump"
  runuser -u postgres -- "$pgbin/pg_ctl" -D "$tmp/data" -m fast -w stop >/dev/null
  rm -rf "$tmp"
  trap - EXIT
}

if [ -s "$dump" ]; then
  say "reusing the cached dump $dump"
else
  make_dump
fi
size=$(stat -c %s "$dump")
mb() { awk -v b="$1" 'BEGIN{printf "%.1f", b/1e6}'; }
say "input: $(mb "$size") MB"
if [ "${BENCH_DATA_ONLY:-0}" = 1 ]; then exit 0; fi

# ---------------------------------------------------------------------------
# Measuring. Every command reads the same file, with the page cache warm for
# all alike; wall time from date, CPU and peak RSS from /usr/bin/time.

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
work=$(mktemp -d "${TMPDIR:-/tmp}/amber-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
cat "$dump" >/dev/null

declare -A best bestcpu maxrss all
. "$root/docs/bench-lib.sh"
# measure KEY CMD...: runs CMD (stdin/stdout as given by the caller), keeps
# the best wall time of the runs for KEY and the CPU time of that run, and
# the peak RSS over all runs.
measure() {
  local key=$1; shift
  local t0 t1 wall cpu rss
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

export RESTIC_PASSWORD=bench-password AMBER_PASSWORD=bench-password
declare -A stored added

run_zstd() {
  measure zstd zstd -q -1 -T1 -c "$dump" >/dev/null
}

# run_restic auto|off: restic's --compression. auto, its default, compresses
# with zstd at its default level (3); off stores data uncompressed. restic
# 0.18.1 has no level below auto (auto|off|max); amber compresses at zstd's
# fastest level (1) by default and at level 3 with --compression default,
# the run that does the same compression work as restic's auto.
run_restic() {
  local level=$1 k=restic
  [ "$level" = auto ] || k=restic$level
  local r="$work/$k"
  rm -rf "$r" "$work/$k-cache"
  export RESTIC_REPOSITORY="$r" RESTIC_CACHE_DIR="$work/$k-cache"
  "$restic" init -q >/dev/null
  measure "${k}_new" "$restic" --compression "$level" backup -q --json --stdin --stdin-filename mixed.sql <"$dump" >"$work/$k-new.json"
  measure "${k}_unchanged" "$restic" --compression "$level" backup -q --json --stdin --stdin-filename mixed.sql <"$dump" >"$work/$k-unchanged.json"
  measure "${k}_restore" "$restic" dump latest /mixed.sql >/dev/null
  if [ "$level" = auto ]; then measure restic_open "$restic" snapshots -q >/dev/null; fi
  stored[$k]=$(du -sb "$r" | cut -f1)
  added[${k}_new]=$(grep -o '"data_added":[0-9]*' "$work/$k-new.json" | tail -1 | cut -d: -f2)
  added[${k}_unchanged]=$(grep -o '"data_added":[0-9]*' "$work/$k-unchanged.json" | tail -1 | cut -d: -f2)
}

# run_amber fastest|default: amber's --compression (fastest, zstd level 1,
# is its default; default is zstd level 3, restic auto's level).
run_amber() {
  local level=${1:-fastest} k=amber
  [ "$level" = fastest ] || k=amber$level
  local r="$work/$k"
  rm -rf "$r" "$work/$k-cache"
  export AMBER_REPO="$r" AMBER_CACHE_DIR="$work/$k-cache" AMBER_COMPRESSION="$level"
  "$amber" repo init --json >/dev/null
  measure "${k}_new" "$amber" backup --stdin --name mixed --json <"$dump" >"$work/$k-new.json"
  measure "${k}_unchanged" "$amber" backup --stdin --name mixed --json <"$dump" >"$work/$k-unchanged.json"
  measure "${k}_restore" "$amber" restore --backup latest --stdout >/dev/null
  if [ "$level" = fastest ]; then measure amber_open "$amber" ls -q >/dev/null; fi
  stored[$k]=$(du -sb "$r" | cut -f1)
  added[${k}_new]=$(grep -o '"bytes_added": *[0-9]*' "$work/$k-new.json" | grep -o '[0-9]*$')
  added[${k}_unchanged]=$(grep -o '"bytes_added": *[0-9]*' "$work/$k-unchanged.json" | grep -o '[0-9]*$')
  unset AMBER_COMPRESSION
}

# Alternate the order between runs so that neither tool always goes first.
for i in $(seq 1 "$runs"); do
  say "run $i of $runs"
  run_zstd
  if [ $((i % 2)) = 1 ]; then run_restic auto; run_restic off; run_amber fastest; run_amber default
  else run_amber default; run_amber fastest; run_restic off; run_restic auto; fi
done

# Sizes and correctness, outside the timings: every restore must give back
# the input byte for byte.
zstd -q -1 -T1 -c "$dump" >"$work/mixed.sql.zst"
stored[zstd]=$(stat -c %s "$work/mixed.sql.zst")
rm -f "$work/mixed.sql.zst"
want=$(sha256sum <"$dump" | cut -d' ' -f1)
for k in amber amberdefault; do
  got=$(AMBER_REPO="$work/$k" "$amber" restore --backup latest --stdout | sha256sum | cut -d' ' -f1)
  [ "$got" = "$want" ] || die "$k restored different bytes (sha256 $got, want $want)"
done
for k in restic resticoff; do
  got=$(RESTIC_REPOSITORY="$work/$k" RESTIC_CACHE_DIR="$work/$k-cache" "$restic" dump latest /mixed.sql | sha256sum | cut -d' ' -f1)
  [ "$got" = "$want" ] || die "$k restored different bytes (sha256 $got, want $want)"
done
restic_repo_version=$(RESTIC_REPOSITORY="$work/restic" "$restic" cat config --no-cache | grep -o '"version": *[0-9]*' | grep -o '[0-9]*$')

# ---------------------------------------------------------------------------
# The report.

rate() { awk -v b="$size" -v s="$1" 'BEGIN{printf "%.0f", b/1e6/s}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a/b}'; }
# speed ratio of amber over restic for an operation: restic time / amber time
# (restic's default, --compression auto; speedup_off: --compression off)
speedup() { ratio "${best[restic_$1]}" "${best[amber_$1]}"; }
speedup_off() { ratio "${best[resticoff_$1]}" "${best[amber_$1]}"; }
util() { awk -v c="${bestcpu[$1]}" -v w="${best[$1]}" 'BEGIN{printf "%.2f", c/w}'; }
mib() { echo $(( $1 / 1024 )); }
met() { awk -v a="$1" -v g="$2" -v d="$3" 'BEGIN{ if ((d=="ge" && a>=g) || (d=="le" && a<=g)) print "**met**"; else print "**not met**"}'; }

nproc=$(nproc)
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
cpu_model=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
mem=$(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo)
zstd_ver=$(zstd --version | grep -o 'v[0-9.]*' | head -1)
amber_ver=$(binary_commit "$amber")
fs=$(df -T "$work" | awk 'NR==2{print $2}')

sp_new=$(speedup new) sp_unch=$(speedup unchanged) sp_rest=$(speedup restore)
spo_new=$(speedup_off new) spo_unch=$(speedup_off unchanged) spo_rest=$(speedup_off restore)
size_ratio=$(ratio "${stored[amber]}" "${stored[restic]}")
zstd_rate=$(rate "${best[zstd]}")
amber_new_rate=$(rate "${best[amber_new]}")
amber_unch_rate=$(rate "${best[amber_unchanged]}")
ceiling=$(awk -v b="$size" -v c="${bestcpu[zstd]}" -v n="$nproc" 'BEGIN{printf "%.0f", b/1e6/c*n}')
u_new=$(util amber_new) u_unch=$(util amber_unchanged) u_rest=$(util amber_restore)
peak=$(for k in amber_new amber_unchanged amber_restore amberdefault_new amberdefault_unchanged amberdefault_restore; do echo "${maxrss[$k]}"; done | sort -n | tail -1)

row() { # label key stored-bytes ratio
  local st=""
  [ -n "$3" ] && st=$(mb "$3")
  local r="$(rate "${best[$2]}")"
  case $2 in *_open) r="" ;; esac
  printf '| %s | %s | %s | %s | %s | %s | %s MiB | %s |\n' "$1" "${best[$2]}" "${all[$2]}" "$r" \
    "${bestcpu[$2]}" "$st" "$(mib "${maxrss[$2]}")" "$4"
}

cpu_ratio() { ratio "${bestcpu[restic_$1]}" "${bestcpu[amber_$1]}"; }
cr_new=$(cpu_ratio new) cr_unch=$(cpu_ratio unchanged) cr_rest=$(cpu_ratio restore)
cpu_ratio_off() { ratio "${bestcpu[resticoff_$1]}" "${bestcpu[amber_$1]}"; }
cro_new=$(cpu_ratio_off new) cro_unch=$(cpu_ratio_off unchanged)
# At equal compression work: amber --compression default against restic auto.
eq() { ratio "${best[restic_$1]}" "${best[amberdefault_$1]}"; }
eqcpu() { ratio "${bestcpu[restic_$1]}" "${bestcpu[amberdefault_$1]}"; }
eq_new=$(eq new) eq_unch=$(eq unchanged) eq_rest=$(eq restore)
eqc_new=$(eqcpu new) eqc_unch=$(eqcpu unchanged)
eq_size=$(ratio "${stored[amberdefault]}" "${stored[restic]}")
percore() { awk -v b="$size" -v c="${bestcpu[$1]}" 'BEGIN{printf "%.0f", b/1e6/c}'; }
u_zstd=$(util zstd)
# argon2id's default memory, from the code (KiB in sidecar/repo's DefaultKDF).
kdf_mib=$(grep -o 'DefaultKDF = KDFParams{[^}]*Memory: [0-9]* \* 1024' "$root/sidecar/repo/crypto.go" | grep -o 'Memory: [0-9]*' | grep -o '[0-9]*$' || echo '?')

limits() {
  # Derived from the figures of this run.
  if awk -v u="$u_zstd" 'BEGIN{exit !(u < 0.9)}' || [ "$busy_starts" -gt 0 ]; then
    echo "- **The machine was not quiet.** ${busy_starts} of ${measurements} measurements started with the cores less than"
    echo "  90% idle after waiting ${BENCH_QUIET_WAIT:-30} s (\`zstd -1 -T1\` got ${u_zstd} of a core in its best run). Wall"
    echo "  times, and so the speed ratios, are skewed by other work; the CPU-time ratios below much less so."
  fi
  echo "- **Where the time goes, per byte.** Per CPU-second, amber ingests new data at $(percore amber_new) MB/s, unchanged"
  echo "  data at $(percore amber_unchanged) MB/s and restores at $(percore amber_restore) MB/s; restic at $(percore restic_new),"
  echo "  $(percore restic_unchanged) and $(percore restic_restore) MB/s; C zstd -1 alone at $(percore zstd) MB/s. amber thus spends"
  echo "  ${cr_new}× less CPU than restic on new data, ${cr_unch}× less on unchanged data, ${cr_rest}× less on restore."
  echo "- **What bounds the speed ratio.** amber kept ${u_new} (new), ${u_unch} (unchanged) and ${u_rest} (restore) of the"
  echo "  ${nproc} cores busy; restic $(util restic_new), $(util restic_unchanged) and $(util restic_restore). When both tools keep"
  echo "  all ${nproc} cores busy, the speed ratio can only be the CPU-time ratio above, so on ${nproc} cores the goals"
  echo "  (2.5× and 3×) need amber to spend that much less CPU per byte than restic; amber's extra margin otherwise comes"
  echo "  only from using the cores better than restic does."
  if awk -v u="$u_new" -v n="$nproc" 'BEGIN{exit !(u >= 0.85*n)}'; then
    echo "- **New data is CPU-bound** on all ${nproc} cores: every new byte is chunked (FastCDC), hashed (keyed BLAKE3),"
    echo "  compressed (Go zstd, fastest) and sealed (AES-256-GCM); for scale, C \`zstd -1\`"
    echo "  alone on ${nproc} cores would reach about ${ceiling} MB/s."
  elif awk -v u="$u_new" 'BEGIN{exit !(u >= 0.9)}'; then
    echo "- **New data uses ${u_new} of ${nproc} cores**: part of the pipeline is serial (one goroutine reads and"
    echo "  chunks the stream in order), so the compression workers are not always fed."
  fi
  if awk -v u="$u_unch" -v n="$nproc" 'BEGIN{exit !(u < 0.85*n && u >= 0.9)}'; then
    echo "- **Unchanged data uses ${u_unch} of ${nproc} cores**: with nothing to compress or write, the work left is"
    echo "  reading, chunking and hashing, and chunking runs in one goroutine (the hashing is spread over the cores)."
  fi
  echo "- **Fixed costs.** Opening the repository alone (\`amber ls\`: key derivation with argon2id, index) took"
  echo "  ${best[amber_open]} s wall and ${bestcpu[amber_open]} s CPU (restic's \`snapshots\`, scrypt: ${best[restic_open]} s), a"
  echo "  $(awk -v o="${best[amber_open]}" -v u="${best[amber_unchanged]}" 'BEGIN{printf "%.0f", 100*o/u}')% share of amber's unchanged backup of ${best[amber_unchanged]} s; a larger input would dilute it."
  echo "  The argon2id memory (${kdf_mib} MiB by default) is much of why every amber command peaks at ~$(mib "${maxrss[amber_open]}") MiB RSS."
  echo "- **Compression work.** restic's default \`--compression auto\` compresses with zstd at its default level (3),"
  echo "  more work per byte than amber's default, zstd's fastest level (1). At equal work (amber \`--compression default\`,"
  echo "  level 3, against restic auto) amber ingests new data at ${eq_new}× restic's speed (${eqc_new}× less CPU), unchanged"
  echo "  data at ${eq_unch}× (${eqc_unch}×), restores at ${eq_rest}×, and stores ${eq_size}× restic's size."
}

# A speed goal is met only if the wall-time ratio meets it. When the machine
# was busy and the CPU-time ratio disagrees, the verdict says so.
speed_goal() { # wall-ratio cpu-ratio goal
  local wall cpu
  wall=$(met "$1" "$3" ge) cpu=$(met "$2" "$3" ge)
  if [ "$wall" = "$cpu" ] || [ "$busy_starts" = 0 ]; then echo "$wall"; return; fi
  if [ "$wall" = "**met**" ]; then
    echo "**met on wall time only**: the machine was busy and the CPU-time ratio ($2×) falls short; unreliable"
  else
    echo "**not met on wall time**; the machine was busy and the CPU-time ratio ($2×) would meet it"
  fi
}
goal_new=$(speed_goal "$sp_new" "$cr_new" 2.5)
goal_unch=$(speed_goal "$sp_unch" "$cr_unch" 3)
goal_size=$(met "$size_ratio" 1 le)
goal_rss=$(met "$(mib "$peak")" 256 le)

{
  cat <<EOF
# Benchmarks: amber backup --stdin against restic and zstd

<!-- Generated by \`make bench\` (docs/bench.sh). Do not edit by hand: run \`make bench\` again. -->

Generated by \`make bench\` on $(date -u '+%Y-%m-%d %H:%M UTC'). Regenerate it with \`make bench\`; never edit it by
hand. Absolute seconds drift between runs and machines; the ratios are measured side by side in one run.

## Machine and versions
- ${nproc} cores, ${cpu_model}, ${mem} RAM; the repositories on ${fs} in \`${TMPDIR:-/tmp}\`.
- Load average (1, 5, 15 min) ${load_start} when measuring began, ${load_end} at the end: the machine is shared,
  so other work may have run alongside; each time is the best of ${runs} runs and each peak RSS the highest, and
  both tools ran in every run.
- amber at ${amber_ver}; restic ${restic_ver} (built from github.com/restic/restic@${restic_pin} by \`make deps\`;
  repository v${restic_repo_version}); zstd ${zstd_ver}.

## Compression levels
- amber: zstd at its fastest level (Go zstd \`SpeedFastest\`, about zstd level 1) for backup data, its default; and,
  in a second set of runs, \`--compression default\` (Go zstd \`SpeedDefault\`, about level 3): the same compression
  work as restic's auto, for the equal-work ratios. Its small metadata objects (manifests, index) use level 3.
- restic, \`--compression auto\` (its default): zstd at its default level (Go zstd \`SpeedDefault\`, about level 3).
- restic, \`--compression off\`: no compression of backup data (metadata still compressed). restic ${restic_ver} offers
  only \`auto|off|max\`: no restic run compresses at amber's default level, so amber also runs at restic's.
- zstd: \`-1\` (level 1), one thread: the cost of compression alone at amber's level.

## Data set
EOF
  if [ "$standard" = 1 ]; then
    echo "The standard \"mixed\" data set: \`pgbench -i -s 10\` plus the table below (6,150,000 rows of realistically"
    echo "compressible data), dumped with \`pg_dump -Fp\` from a throwaway PostgreSQL 15 cluster to one file of"
  else
    echo "**A reduced data set, not the standard one** (pgbench scale ${scale}, ${rows} rows of bench_mixed), dumped with"
    echo "\`pg_dump -Fp\` from a throwaway PostgreSQL 15 cluster to one file of"
  fi
  cat <<EOF
**$(mb "$size") MB** (cached in \`${dump#"$root"/}\`; every tool reads that same file, with the page cache warmed
for all alike before timing):
\`\`\`sql
CREATE TABLE bench_mixed (id bigint PRIMARY KEY, ts timestamptz, amount numeric(12,2), email text, note text);
INSERT INTO bench_mixed SELECT g, timestamptz '2024-01-01' + (g % 5000000) * interval '7 seconds',
  round((random()*100000)::numeric, 2), 'user' || (random()*1000000)::int || '@example.com',
  md5(g::text) || ' ' || substr(md5(random()::text), 1, (random()*32)::int)
FROM generate_series(1, ${rows}) g;
\`\`\`

## Commands
Each measured ${runs} times in this run (the order of restic and amber alternates between runs); the table shows
the **best** (shortest) run, the other column every run. MB/s is input MB (10^6 bytes) per wall second.
- \`zstd -q -1 -T1 -c mixed.sql > /dev/null\` (one core; the stored size from a second run into a file)
- \`restic init\`, then \`restic --compression auto|off backup --stdin --stdin-filename mixed.sql < mixed.sql\` twice
  (new data, then unchanged), then \`restic dump latest /mixed.sql > /dev/null\`; a fresh repository and cache
  directory each run, for each of the two compression settings
- \`amber repo init\`, then \`amber backup --stdin --name mixed --json < mixed.sql\` twice, then
  \`amber restore --backup latest --stdout > /dev/null\`; a fresh repository and cache directory each run, with
  \`AMBER_COMPRESSION\` unset (fastest) and \`=default\` (zstd level 3)
- Both tools use their local metadata cache (the default), pointed at a fresh directory next to the repository.
- Wall time from \`date\`; CPU time (user + system) and peak RSS from \`/usr/bin/time -f '%U %S %M'\`. Times and
  CPU are those of the best run; peak RSS is the highest of all runs.
- After timing, every restore was checked to give back the input byte for byte (SHA-256).

## Results
| tool, operation | best s | all runs s | MB/s | CPU s | stored MB | peak RSS (all runs) | amber vs restic auto; vs restic off |
|---|---|---|---|---|---|---|---|
EOF
  row "zstd -1 -T1 (one core, ceiling)" zstd "${stored[zstd]}" ""
  row "restic backup, new data, auto (zstd 3)" restic_new "${stored[restic]}" ""
  row "restic backup, new data, off (no compression)" resticoff_new "${stored[resticoff]}" ""
  row "amber backup, new data (zstd 1)" amber_new "${stored[amber]}" "${sp_new}× speed, $(ratio "${stored[amber]}" "${stored[restic]}")× size; ${spo_new}× speed, $(ratio "${stored[amber]}" "${stored[resticoff]}")× size"
  row "restic backup, unchanged, auto" restic_unchanged "" ""
  row "restic backup, unchanged, off" resticoff_unchanged "" ""
  row "amber backup, new data, --compression default (zstd 3)" amberdefault_new "${stored[amberdefault]}" "${eq_new}× speed, ${eq_size}× size (equal work: vs restic auto)"
  row "amber backup, unchanged" amber_unchanged "" "${sp_unch}× speed; ${spo_unch}× speed"
  row "amber backup, unchanged, --compression default" amberdefault_unchanged "" "${eq_unch}× speed (vs restic auto)"
  row "restic dump (restore), auto repository" restic_restore "" ""
  row "restic dump (restore), off repository" resticoff_restore "" ""
  row "amber restore" amber_restore "" "${sp_rest}× speed; ${spo_rest}× speed"
  row "amber restore, --compression default repository" amberdefault_restore "" "${eq_rest}× speed (vs restic auto)"
  row "restic snapshots (open only)" restic_open "" ""
  row "amber ls (open only)" amber_open "" ""
  cat <<EOF

Stored MB is the repository's size (\`du -sb\`) after both backups. Data added by the second (unchanged) backup:
restic $(mb "${added[restic_unchanged]:-0}") MB (auto) and $(mb "${added[resticoff_unchanged]:-0}") MB (off), amber $(mb "${added[amber_unchanged]:-0}") MB.

## Goals (issue #2)
Judged against restic as it runs by default (\`--compression auto\`); the fourth column gives the ratios against
\`--compression off\`, which does less compression work than amber (see Compression levels).

| goal | measured (wall time) | CPU-time ratio | against restic off (wall, CPU) | |
|---|---|---|---|---|
| ingest of new data ≥ 2.5× restic's speed | ${sp_new}× | ${cr_new}× | ${spo_new}×, ${cro_new}× | ${goal_new} |
| ingest of unchanged data ≥ 3× restic's speed | ${sp_unch}× | ${cr_unch}× | ${spo_unch}×, ${cro_unch}× | ${goal_unch} |
| repository no larger than restic's | ${size_ratio}× restic's | | | ${goal_size} |
| amber's peak RSS during backup or restore (highest of all runs) ≤ 256 MiB | $(mib "$peak") MiB | | | ${goal_rss} |

CPU time (user + system) per operation, restic's over amber's: new data ${cr_new}×, unchanged ${cr_unch}×,
restore ${cr_rest}×. On a quiet machine where both tools keep every core busy, this is the speed ratio too.

Restore has no goal in the issue; amber restores at ${sp_rest}× restic's speed.

## What limits it
EOF
  limits
} >"$out.tmp"
if [ "${BENCH_ONLY:-}" = restic ] && [ -f "$out" ]; then
  # Only this section was measured: keep the other sections of the report
  # as their own runs wrote them (each names its date and commit).
  # From the PostgreSQL section's begin marker (or its heading, where an
  # earlier run of this lost the marker) on.
  { echo; awk '/^<!-- bench-postgres.sh: begin -->$/ || /^# PostgreSQL: amber against pgBackRest/{on=1} on' "$out"; } >>"$out.tmp"
fi
mv "$out.tmp" "$out"
say "wrote ${out#"$root"/}"
cat "$out"
if [ "${BENCH_ONLY:-}" = restic ]; then exit 0; fi
BENCH_OUT="$out" bash "$root/docs/bench-postgres.sh" # PostgreSQL section (issue 13), appended to $out
BENCH_OUT="$out" bash "$root/docs/bench-pg-files.sh" # PostgreSQL backups that read the data directory, appended to $out
BENCH_OUT="$out" bash "$root/docs/bench-mysql.sh" # MariaDB section (issue #9), appended to $out
# amber-controller at scale (300 StatefulSets × 3 pods faked by kwok, in
# namespaces of 30 and in one namespace): its section, appended to $out by
# the test itself (controller/internal/scale).
AMBER_TEST_REQUIRE_ALL=1 AMBER_SCALE_STATEFULSETS=300 AMBER_SCALE_PER_NAMESPACE=30,300 AMBER_SCALE_REPORT="$out" \
  go test ./controller/internal/scale -run '^TestControllerScale$' -count=1 -v -timeout 30m
# Restore into a clone StatefulSet on the real-kubelet test bed (RTO split
# into scheduling, data transfer, recovery; `amber restore` on the host for
# comparison): its section, written into $out by the test itself.
AMBER_TEST_REQUIRE_ALL=1 AMBER_RESTORE_REPORT="$out" \
  go test ./conformance -run '^TestKubernetesRestoreClone$' -count=1 -v -timeout 30m
