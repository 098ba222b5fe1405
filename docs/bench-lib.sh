# Shared by the docs/bench*.sh scripts (sourced, not run).
# The caller defines say() and may set quiet_default (seconds, default 30).

# binary_commit BIN: the commit BIN was built from, as `go build` stamped it
# (`make build` builds with -buildvcs=auto), with "+ uncommitted changes" when
# the checkout had any. Without a stamp (built outside a git checkout), the
# checkout's HEAD now, marked as such: it may not be what BIN was built from.
binary_commit() {
  local info rev
  info=$(go version -m "$1" 2>/dev/null || true)
  rev=$(awk '$1 == "build" && $2 ~ /^vcs.revision=/ { sub(/^vcs.revision=/, "", $2); print substr($2, 1, 7) }' <<<"$info")
  if [ -n "$rev" ]; then
    grep -q 'vcs.modified=true' <<<"$info" && rev="$rev + uncommitted changes"
    echo "$rev (stamped in the binary that ran: \`go version -m\`)"
    return
  fi
  rev=$(git -C "${root:-.}" rev-parse --short HEAD 2>/dev/null || echo unknown)
  echo "$rev (the checkout's HEAD; the binary carries no commit stamp)"
}

# idle_frac: the fraction of all cores idle over the next second.
idle_frac() {
  local a b
  a=$(awk '/^cpu /{print $5+$6, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
  sleep 1
  b=$(awk '/^cpu /{print $5+$6, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
  awk -v a="$a" -v b="$b" 'BEGIN{split(a,x," "); split(b,y," "); d=y[2]-x[2]; printf "%.2f", (d>0 ? (y[1]-x[1])/d : 1)}'
}

# wait_quiet: the machine may be shared; wait up to BENCH_QUIET_WAIT seconds
# (default $quiet_default) for its cores to be at least 90% idle before a
# measurement, counting the measurements that started on a busy machine.
busy_starts=0 measurements=0
wait_quiet() {
  local deadline=$((SECONDS + ${BENCH_QUIET_WAIT:-${quiet_default:-30}})) idle
  measurements=$((measurements + 1))
  while :; do
    idle=$(idle_frac)
    awk -v i="$idle" 'BEGIN{exit !(i>=0.90)}' && return 0
    if [ "$SECONDS" -ge "$deadline" ]; then
      busy_starts=$((busy_starts + 1))
      say "cores only ${idle} idle after waiting; measuring anyway"
      return 0
    fi
  done
}

# pgbackrest_conf FILE WORK PGDATA SOCKET_DIR PORT writes the pgBackRest
# configuration the PostgreSQL benchmarks share: stanza bench for the server
# at PGDATA (socket SOCKET_DIR, port PORT, user postgres), its repository,
# log, lock and spool under WORK, process-max=2; owned by postgres.
pgbackrest_conf() {
  cat >"$1" <<CONF
[global]
repo1-path=$2/pgbackrest-repo
repo1-retention-full=99
process-max=2
start-fast=y
log-path=$2/pgbackrest-log
lock-path=$2/pgbackrest-lock
spool-path=$2/pgbackrest-spool
log-level-console=warn
log-level-file=off

[bench]
pg1-path=$3
pg1-socket-path=$4
pg1-port=$5
pg1-user=postgres
CONF
  chown postgres: "$1"
}

# write_section OUT MARK TITLE writes the section the caller's section()
# prints into OUT: in place of an earlier one between
# `<!-- MARK: begin -->` and `<!-- MARK: end -->`, else appended; then says
# so, naming it TITLE.
write_section() {
  local out=$1 mark=$2 title=$3
  touch "$out"
  section >"$out.section"
  if grep -q "^<!-- $mark: begin -->\$" "$out"; then
    awk -v sec="$out.section" -v b="<!-- $mark: begin -->" -v e="<!-- $mark: end -->" \
      '$0 == b {skip=1; while ((getline l < sec) > 0) print l} !skip{print} $0 == e {skip=0}' "$out" >"$out.new"
  else
    { printf '%s\n\n' "$(cat "$out")"; cat "$out.section"; } >"$out.new"
  fi
  rm -f "$out.section"
  mv "$out.new" "$out"
  say "wrote the $title section of ${out#"$root"/}"
}
