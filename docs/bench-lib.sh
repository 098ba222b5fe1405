# Shared by docs/bench.sh and docs/bench-postgres.sh (sourced, not run).
# The caller defines say() and may set quiet_default (seconds, default 30).

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
