#!/usr/bin/env bash
# `make bench`, clone restore part (issue 11): the RTO of a Restore of the
# standard "mixed" data set into a clone StatefulSet on the real-kubelet test
# bed (request → the clone's pod Ready), split into scheduling, data transfer
# and recovery as the Restore's status reports them, side by side with
# `amber restore` of the same backup from the same repository on the host, and
# the host's server started on it until it accepts connections.
#
# It starts its own cluster (conformance/cmd/amber-testcluster, as `make
# cluster` does: amber-controller on the node, MinIO on the node's address as
# the repository), runs the example PostgreSQL 15 StatefulSet of docs/examples
# with one replica and the sidecar, loads the data set into it, takes a
# physical Backup, runs pgbench for a while (archived WAL), then in each run:
# a Restore to the backup and one to a point in time after that WAL, each
# against `amber restore` with the same target on the host (the order
# alternates between runs). Everything it made goes at the end, on failure
# too. Appends its section to the report (replacing an earlier one).
#
# Needs root, `make deps` and `make build`. Environment:
#   BENCH_RUNS     runs (default 2; the report shows every run and the best)
#   BENCH_ROWS, BENCH_SCALE  data set (default: the standard 6150000 rows, scale 10)
#   BENCH_PITR_SECONDS  pgbench seconds after the backup, the WAL a point-in-time
#                  restore replays (default 30; 0 skips the point-in-time restores)
#   AMBER_DEPS, BENCH_DIR  the deps folder (default .deps) and the data set cache
#                  (default $AMBER_DEPS/bench; docs/bench.sh's cached dump is loaded
#                  when it is there, else the data set is generated in the pod)
#   BENCH_OUT      report (default docs/benchmarks.md for the standard set,
#                  $BENCH_DIR/benchmarks-quick.md otherwise)
#   BENCH_K8S_KEEP=1  leave the cluster running at the end (for a look; then
#                  `amber-testcluster down -dir <the directory it prints>`)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
deps=${AMBER_DEPS:-$root/.deps}
benchdir=${BENCH_DIR:-$deps/bench}
export PATH="$root/bin:$deps/bin:$PATH"
export AMBER_DEPS=$deps

rows=${BENCH_ROWS:-6150000}
scale=${BENCH_SCALE:-10}
runs=${BENCH_RUNS:-2}
pitr_seconds=${BENCH_PITR_SECONDS:-30}
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
ns=bench

say() { printf 'bench-k8s-restore: %s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { say "$*"; exit 1; }
# wait_for SECONDS WHAT CMD...: runs CMD every second until it succeeds.
wait_for() {
  local deadline=$((SECONDS + $1)) what=$2
  shift 2
  until "$@"; do
    [ "$SECONDS" -lt "$deadline" ] || die "$what: not done in time"
    sleep 1
  done
}

[ "$(id -u)" = 0 ] || die "needs root (the cluster's kubelet and containerd; the host's PostgreSQL runs as postgres)"
for tool in amber amber-plugin-postgres go kubectl jq "$pgbin/psql" "$pgbin/pgbench" "$pgbin/pg_ctl" "$deps/bin/minio" "$deps/bin/kube-apiserver" "$deps/bin/kubelet"; do
  command -v "$tool" >/dev/null || die "$tool not found: run \`make deps\` (and \`make build\` for amber; kubectl and jq are Debian packages)"
done
amber=$(command -v amber)
. "$root/docs/bench-lib.sh"
amber_ver=$(binary_commit "$amber")

# ---------------------------------------------------------------------------
# Equal footing for the CLI. The test bed puts all the cluster's pods under
# one cgroup (/amber-k8s-N) which, in the CPU controller, weighs as much as
# one busy process of the host's: on a shared machine a pod gets far less CPU
# than a multi-threaded host process. The CLI's restore and its server run in
# a cgroup of their own beside it with the same weight, so both sides compete
# with the rest of the machine alike. cg_enter moves this shell (and what it
# starts afterwards) there, cg_leave back.

cpu_cgroup_mount() {
  if [ -f /sys/fs/cgroup/cpu/cpu.shares ]; then echo /sys/fs/cgroup/cpu
  elif [ -f /sys/fs/cgroup/cgroup.controllers ]; then echo /sys/fs/cgroup
  fi
}
cg_weight_file() { if [ -f "$1/cpu.shares" ]; then echo "$1/cpu.shares"; else echo "$1/cpu.weight"; fi; }
cg_home=""
cg_enter() {
  [ -n "$clicg" ] || return 0
  cg_home=$(cpu_cgroup_mount)$(awk -F: '$2 == "cpu" || $2 ~ /(^|,)cpu(,|$)/ || ($1 == 0 && $2 == "") {print $3; exit}' /proc/self/cgroup)
  echo $$ >"$clicg/cgroup.procs"
}
cg_leave() {
  [ -n "$cg_home" ] || return 0
  echo $$ >"$cg_home/cgroup.procs" 2>/dev/null || true
  cg_home=""
}

# ---------------------------------------------------------------------------
# Clean-up: whatever happens, the host's servers, the cluster and the files go.

work=$(mktemp -d "${TMPDIR:-/tmp}/amber-bench-k8s.XXXXXX")
chmod 755 "$work"
clusterdir=$work/cluster
tc=$work/amber-testcluster
hostpg=()
clicg=""
cleanup() {
  local rc=$? d
  trap - EXIT INT TERM
  cg_leave
  for d in "${hostpg[@]}"; do
    runuser -u postgres -- "$pgbin/pg_ctl" -D "$d" -m immediate stop >/dev/null 2>&1 || true
  done
  if [ -n "$clicg" ]; then rmdir "$clicg" 2>/dev/null || true; fi
  if [ "${BENCH_K8S_KEEP:-0}" = 1 ] && [ -f "$clusterdir/ready" ]; then
    say "BENCH_K8S_KEEP=1: the cluster keeps running; stop it with: $tc down -dir $clusterdir && rm -rf $work"
    exit "$rc"
  fi
  if [ -x "$tc" ] && [ -d "$clusterdir" ]; then
    "$tc" down -dir "$clusterdir" >&2 || say "amber-testcluster down failed; run it again: $tc down -dir $clusterdir"
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------
# The cluster: what `make cluster` starts, in a directory of this run.

say "building amber-testcluster and starting the cluster in $clusterdir (images: PostgreSQL 15 and amber from this checkout)"
go build -o "$tc" ./conformance/cmd/amber-testcluster
t0=$(date +%s)
"$tc" up -dir "$clusterdir" >"$work/cluster-up.log" 2>&1 || { cat "$work/cluster-up.log" >&2; die "the cluster did not start"; }
say "cluster up in $(($(date +%s) - t0)) s"
export KUBECONFIG=$clusterdir/kubeconfig
set -a
# shellcheck source=/dev/null
. "$clusterdir/repository.env"
set +a
repo_url=${AMBER_REPOSITORY/amber\/demo/amber\/bench}
export AMBER_REPO=$repo_url
# The repository's password and storage keys, for the CLI and for the host's
# server's restore_command, as files (never in a child's environment).
creds=$work/credentials
mkdir -m 700 "$creds"
printf '%s' "bench-password" >"$creds/password"
printf '%s' "$AWS_ACCESS_KEY_ID" >"$creds/AWS_ACCESS_KEY_ID"
printf '%s' "$AWS_SECRET_ACCESS_KEY" >"$creds/AWS_SECRET_ACCESS_KEY"
chown -R postgres: "$creds"
chmod 600 "$creds"/*
unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AMBER_REPOSITORY
export AMBER_PASSWORD_FILE=$creds/password AMBER_CREDENTIALS_DIR=$creds
export AMBER_CACHE_DIR=$work/amber-cache
amber repo init >/dev/null

k() { kubectl -n "$ns" "$@"; }
kubectl create namespace "$ns" >/dev/null
kubectl -n "$ns" create secret generic pg-backup --from-file=password="$creds/password" \
  --from-literal=dsn='host=127.0.0.1 port=5432 user=postgres dbname=postgres sslmode=disable' \
  --from-file=AWS_ACCESS_KEY_ID="$creds/AWS_ACCESS_KEY_ID" --from-file=AWS_SECRET_ACCESS_KEY="$creds/AWS_SECRET_ACCESS_KEY" >/dev/null
# The example with one replica, its schedule suspended (the benchmark asks
# for its one backup).
sed -e "s|\${AMBER_REPOSITORY}|$repo_url|" -e 's|replicas: 3|replicas: 1|' \
  -e 's|schedule: "0 \*/6 \* \* \*".*|schedule: "@daily"\n  suspend: true|' \
  docs/examples/postgres-statefulset.yaml | k apply -f - >/dev/null
wait_for 300 "pod pg-0 created" k get pod pg-0 -o name >/dev/null 2>&1
k wait --for=condition=Ready pod/pg-0 --timeout=5m >/dev/null
pgip=$(k get pod pg-0 -o jsonpath='{.status.podIP}')
k patch configmap pg-topology --type merge -p "{\"data\":{\"primary_ip\":\"$pgip\"}}" >/dev/null
say "pg-0 ready at $pgip"
cgmount=$(cpu_cgroup_mount)
cluster_weight=""
cgnote="no CPU cgroup controller found: the CLI ran in the shell's cgroup, the pods under the cluster's"
# The cluster's slot N: its pods are on 198.18.N.0/24, its cgroups under /amber-k8s-N.
slot=$(grep -o '198\.18\.[0-9]*\.0/24' "$clusterdir/ready" | head -1 | cut -d. -f3)
slot_cg=$cgmount/amber-k8s-$slot
if [ -n "$cgmount" ] && [ -n "$slot" ] && [ -d "$slot_cg" ]; then
  cluster_weight=$(cat "$(cg_weight_file "$slot_cg")")
  clicg=$cgmount/amber-bench-cli-$$
  if mkdir "$clicg" 2>/dev/null && echo "$cluster_weight" >"$(cg_weight_file "$clicg")"; then
    cgnote="the CLI's restore and its server ran in a CPU cgroup of their own (\`$(basename "$clicg")\`) with the weight of the cluster's (\`$(basename "$slot_cg")\`: $(basename "$(cg_weight_file "$slot_cg")") ${cluster_weight}), beside it"
  else
    clicg=""
  fi
fi
say "$cgnote"

archiving() { k get backuppolicy pg -o json | jq -e '.status.archivers // [] | any(.pod == "pg-0")' >/dev/null; }
wait_for 180 "pg-0 archiving WAL" archiving

# ---------------------------------------------------------------------------
# The data set, loaded into pg-0 from the host: docs/bench.sh's cached dump
# when it is there (the same bytes as the other sections), else generated by
# the same statements docs/bench.sh makes it with.

psql_pg() { "$pgbin/psql" -X -q -v ON_ERROR_STOP=1 -h "$pgip" -U postgres "$@"; }
t0=$(date +%s)
if [ -s "$dump" ]; then
  loaded="docs/bench.sh's cached dump (\`${dump#"$root"/}\`, $(awk -v b="$(stat -c %s "$dump")" 'BEGIN{printf "%.0f", b/1e6}') MB), loaded with psql"
  say "loading $dump into pg-0"
  psql_pg -f "$dump" postgres >/dev/null
else
  loaded="generated in the pod's server by docs/bench.sh's statements (\`pgbench -i -s ${scale}\` and the INSERT below; no cached dump in \`${benchdir#"$root"/}\`)"
  say "no cached dump at $dump: generating the data set in pg-0 (pgbench -i -s $scale, bench_mixed $rows rows)"
  "$pgbin/pgbench" -h "$pgip" -U postgres -i -q -s "$scale" postgres >/dev/null 2>&1
  psql_pg postgres >/dev/null <<SQL
CREATE TABLE bench_mixed (id bigint PRIMARY KEY, ts timestamptz, amount numeric(12,2), email text, note text);
INSERT INTO bench_mixed SELECT g, timestamptz '2024-01-01' + (g % 5000000) * interval '7 seconds',
  round((random()*100000)::numeric, 2), 'user' || (random()*1000000)::int || '@example.com',
  md5(g::text) || ' ' || substr(md5(random()::text), 1, (random()*32)::int)
FROM generate_series(1, $rows) g;
SQL
fi
psql_pg -c 'VACUUM ANALYZE' postgres
psql_pg -c 'CHECKPOINT' postgres
db_bytes=$(psql_pg -At -c 'SELECT sum(pg_database_size(oid)) FROM pg_database' postgres)
mixed_rows=$(psql_pg -At -c 'SELECT count(*) FROM bench_mixed' postgres)
load_s=$(($(date +%s) - t0))
say "data set loaded in ${load_s} s: $(awk -v b="$db_bytes" 'BEGIN{printf "%.0f", b/1e6}') MB in the databases"

# ---------------------------------------------------------------------------
# The physical backup, through a Backup.

# status OBJ NAME PATH: a field of an object's status.
status() { k get "$1" "$2" -o jsonpath="{.status.$3}"; }
backup_done() { case $(status backup base phase) in Succeeded | Failed) return 0 ;; esac; return 1; }
t0=$(date +%s)
k create -f - >/dev/null <<EOF
apiVersion: amber.dev/v1alpha1
kind: Backup
metadata: {name: base}
spec: {policyRef: {name: pg}}
EOF
wait_for 1200 "Backup base" backup_done
[ "$(status backup base phase)" = Succeeded ] || die "Backup base failed: $(status backup base error)"
backup_s=$(($(date +%s) - t0))
backup_id=$(status backup base backupID)
backup_bytes=$(status backup base bytesAdded)
ls_json=$(amber ls --json)
backup_pos=$(jq -r --arg id "$backup_id" '.backups[] | select(.id == $id) | .position // empty' <<<"$ls_json")
backup_in=$(jq -r --arg id "$backup_id" '.backups[] | select(.id == $id) | .bytes_in' <<<"$ls_json")
say "Backup base: ${backup_id:0:12} in ${backup_s} s, $backup_in bytes read, $backup_bytes stored, consistent at $backup_pos"

# WAL after the backup for the point-in-time restores: pgbench on pg-0,
# then a target on a whole second (a Restore's pointInTime has whole seconds)
# that the archive must reach.
target=""
if [ "$pitr_seconds" -gt 0 ]; then
  say "pgbench -c 2 -T $pitr_seconds on pg-0 (WAL for the point-in-time restores)"
  "$pgbin/pgbench" -h "$pgip" -U postgres -c 2 -j 2 -T "$pitr_seconds" -n postgres >"$work/pgbench.log" 2>&1
  pitr_tps=$(awk '/^tps/{printf "%.0f", $3; exit}' "$work/pgbench.log")
  sleep 1.1
  target=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  psql_pg -c "SELECT pg_switch_wal()" postgres >/dev/null
  epoch() { jq -n --arg t "$1" '$t | sub("\\.[0-9]+"; "") | sub("\\+00:00$"; "Z") | fromdateiso8601'; }
  reached() { amber ls --json | jq -e --argjson t "$(epoch "$target")" \
    'any(.windows[]?; .latest_time | sub("\\.[0-9]+"; "") | sub("\\+00:00$"; "Z") | fromdateiso8601 >= $t)' >/dev/null; }
  wait_for 300 "the archive reaching $target" reached
  # amber's PostgreSQL positions carry the timeline: 1/0/3000100 is LSN 0/3000100.
  wal_bytes=$(psql_pg -At -c "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '${backup_pos#*/}')::bigint" postgres || echo 0)
  say "target $target reached by the archive; $(awk -v b="$wal_bytes" 'BEGIN{printf "%.0f", b/1e6}') MB of WAL since the backup"
fi

# ---------------------------------------------------------------------------
# Measuring.

cat "$amber" "$(command -v amber-plugin-postgres)" >/dev/null
declare -A res      # res[KIND,RUN,FIELD]
loads=()
port=$((20000 + RANDOM % 40000))

# clone KIND RUN: a Restore (KIND backup: to the backup; pitr: to $target),
# its status figures, then the clone deleted.
clone() {
  local kind=$1 run=$2 name="r-$1-$2" spec pod cname t msg
  spec="policyRef: {name: pg}, sourceStatefulSet: pg, backupID: \"$backup_id\""
  [ "$kind" = pitr ] && spec="$spec, pointInTime: \"$target\""
  loads+=("$(cut -d' ' -f1 /proc/loadavg)")
  say "run $run: Restore $name ($kind)"
  k create -f - >/dev/null <<EOF
apiVersion: amber.dev/v1alpha1
kind: Restore
metadata: {name: $name}
spec: {$spec}
EOF
  restore_done() { case $(status restore "$name" phase) in Succeeded | Failed) return 0 ;; esac; return 1; }
  wait_for 1200 "Restore $name" restore_done
  [ "$(status restore "$name" phase)" = Succeeded ] || die "Restore $name failed: $(status restore "$name" error)"
  k get restore "$name" -o json >"$work/$name.json"
  cname=$(jq -r .status.cloneName "$work/$name.json")
  pod=$cname-0
  k get pod "$pod" -o json >"$work/$name-pod.json"
  k get statefulset "$cname" -o json >"$work/$name-sts.json"
  # Seconds of a duration as metav1.Duration prints it (Go's
  # time.Duration: 14s, 1m2.5s, 1h0m3s; the timings are whole seconds).
  secs() { awk -v d="$1" 'BEGIN{ s=0; n=split(d, p, /[hms]/); split(d, u, /[0-9.]+/)
    for (i=1; i<n; i++) s += p[i] * (u[i+1]=="h" ? 3600 : u[i+1]=="m" ? 60 : u[i+1]=="ms" ? 0.001 : 1); printf "%.1f", s }'; }
  res[$kind,$run,rto]=$(secs "$(jq -r .status.rto "$work/$name.json")")
  res[$kind,$run,sched]=$(secs "$(jq -r .status.timings.scheduling "$work/$name.json")")
  res[$kind,$run,xfer]=$(secs "$(jq -r .status.timings.dataTransfer "$work/$name.json")")
  res[$kind,$run,recov]=$(secs "$(jq -r .status.timings.recovery "$work/$name.json")")
  # The init container's own report (amber restore --report-file): its
  # duration, finer than the container's whole-second times.
  msg=$(jq -r '.status.initContainerStatuses[] | select(.name == "amber-restore") | .state.terminated.message // empty' "$work/$name-pod.json")
  res[$kind,$run,xfer_in]=$( (jq -r '.duration_s // empty' <<<"$msg" 2>/dev/null || true) | awk 'NF{printf "%.1f", $1}')
  # Where scheduling went: whole-second timestamps of each step.
  local created sts_at pod_at sched_at init_at
  created=$(jq -r .metadata.creationTimestamp "$work/$name.json")
  sts_at=$(jq -r .metadata.creationTimestamp "$work/$name-sts.json")
  pod_at=$(jq -r .metadata.creationTimestamp "$work/$name-pod.json")
  sched_at=$(jq -r '.status.conditions[] | select(.type == "PodScheduled") | .lastTransitionTime' "$work/$name-pod.json")
  init_at=$(jq -r '.status.initContainerStatuses[] | select(.name == "amber-restore") | .state.terminated.startedAt' "$work/$name-pod.json")
  since() { echo $(($(date -d "$2" +%s) - $(date -d "$1" +%s))); }
  res[$kind,$run,steps]="$(since "$created" "$sts_at") / $(since "$sts_at" "$pod_at") / $(since "$pod_at" "$sched_at") / $(since "$sched_at" "$init_at")"
  res[$kind,$run,resources]=$(jq -c '.spec.initContainers[] | select(.name == "amber-restore") | .resources' "$work/$name-pod.json")
  res[$kind,$run,args]=$(jq -r '.spec.initContainers[] | select(.name == "amber-restore") | .args | join(" ")' "$work/$name-pod.json")
  say "run $run: Restore $name: RTO ${res[$kind,$run,rto]} s = scheduling ${res[$kind,$run,sched]} + data transfer ${res[$kind,$run,xfer]} (amber restore's own ${res[$kind,$run,xfer_in]:-?}) + recovery ${res[$kind,$run,recov]}"
  k delete restore "$name" --wait=false >/dev/null
  k delete statefulset,service -l "amber.dev/restore=$name" --wait=true >/dev/null
  k delete pvc -l "amber.dev/restore=$name" --wait=true --timeout=3m >/dev/null || true
}

# cli KIND RUN: amber restore with the clone's target into an empty
# directory on the host (timed), then its server started until it accepts
# connections (timed from the restore's start).
cli() {
  local kind=$1 run=$2 dir="$work/cli-$1-$2" t0 t1 t2 args=(--backup "$backup_id")
  if [ "$kind" = pitr ]; then args+=(--to-time "$target"); else args+=(--to-position "$backup_pos"); fi
  loads+=("$(cut -d' ' -f1 /proc/loadavg)")
  say "run $run: amber restore on the host ($kind) into $dir"
  # The server runs as postgres: its directory (socket, log) is its own.
  mkdir -p "$dir"
  chown postgres: "$dir"
  cg_enter
  t0=$(date +%s.%N)
  amber restore --engine postgres --data-dir "$dir/data" "${args[@]}" --report-file "$dir.report" >/dev/null
  t1=$(date +%s.%N)
  res[cli$kind,$run,xfer]=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}')
  res[cli$kind,$run,xfer_in]=$(jq -r '.duration_s' "$dir.report" | awk '{printf "%.1f", $1}')
  hostpg+=("$dir/data")
  # The storage keys only, as the clone's database container gets them; its
  # restore_command names its own key file (in data.amber, from the restore).
  runuser -u postgres -- env -u AMBER_PASSWORD_FILE AMBER_CREDENTIALS_DIR="$creds" AMBER_CACHE_DIR=- \
    "$pgbin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -o "-p $port -k $dir -c listen_addresses=" -W start >/dev/null
  local deadline=$((SECONDS + 900))
  until "$pgbin/pg_isready" -q -h "$dir" -p "$port"; do
    if grep -q 'PANIC\|database system is shut down' "$dir/server.log" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
      tail -20 "$dir/server.log" >&2
      die "the host's server on the restored $kind data did not accept connections"
    fi
    sleep 0.1
  done
  t2=$(date +%s.%N)
  res[cli$kind,$run,recov]=$(awk -v a="$t1" -v b="$t2" 'BEGIN{printf "%.1f", b-a}')
  res[cli$kind,$run,rto]=$(awk -v a="$t0" -v b="$t2" 'BEGIN{printf "%.1f", b-a}')
  say "run $run: amber restore ($kind) ${res[cli$kind,$run,xfer]} s (its own ${res[cli$kind,$run,xfer_in]} s), server accepting connections ${res[cli$kind,$run,recov]} s later"
  cg_leave
  runuser -u postgres -- "$pgbin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  unset 'hostpg[-1]'
  rm -rf "$dir" "$dir.report"
  # The same restore without the metadata cache, as the init container
  # runs it (AMBER_CACHE_DIR=-): data transfer only.
  mkdir -p "$dir"
  cg_enter
  t0=$(date +%s.%N)
  AMBER_CACHE_DIR=- amber restore --engine postgres --data-dir "$dir/data" "${args[@]}" --report-file "$dir.report" >/dev/null
  t1=$(date +%s.%N)
  cg_leave
  res[clinocache$kind,$run,xfer]=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}')
  res[clinocache$kind,$run,xfer_in]=$(jq -r '.duration_s' "$dir.report" | awk '{printf "%.1f", $1}')
  say "run $run: amber restore ($kind) without the cache ${res[clinocache$kind,$run,xfer]} s (its own ${res[clinocache$kind,$run,xfer_in]} s)"
  rm -rf "$dir" "$dir.report"
}

kinds=(backup)
[ -n "$target" ] && kinds+=(pitr)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
t_start=$(date -u '+%H:%M')
for run in $(seq 1 "$runs"); do
  for kind in "${kinds[@]}"; do
    if [ $((run % 2)) = 1 ]; then clone "$kind" "$run"; cli "$kind" "$run"; else cli "$kind" "$run"; clone "$kind" "$run"; fi
  done
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
t_end=$(date -u '+%H:%M')
say "load average (1 min) at the start of each measurement: ${loads[*]}"

# ---------------------------------------------------------------------------
# The report.

min_of() { # KEY FIELD: the smallest over the runs
  local r v best=""
  for r in $(seq 1 "$runs"); do
    v=${res[$1,$r,$2]:-}
    [ -n "$v" ] || continue
    if [ -z "$best" ] || awk -v a="$v" -v b="$best" 'BEGIN{exit !(a<b)}'; then best=$v; fi
  done
  echo "${best:--}"
}
# pairs KEY: each run's data transfer with amber restore's own duration in brackets.
pairs() { local r s=""; for r in $(seq 1 "$runs"); do s="${s:+$s / }${res[$1,$r,xfer]:--} (${res[$1,$r,xfer_in]:--})"; done; echo "$s"; }
all_of() { local r s=""; for r in $(seq 1 "$runs"); do s="${s:+$s / }${res[$1,$r,$2]:--}"; done; echo "$s"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b > 0) printf "%.2f", a/b; else print "-" }'; }
mb() { awk -v b="$1" 'BEGIN{printf "%.0f", b/1e6}'; }
# best_run KIND: the run with the shortest RTO.
best_run() {
  local r best="" br=1
  for r in $(seq 1 "$runs"); do
    if [ -z "$best" ] || awk -v a="${res[$1,$r,rto]}" -v b="$best" 'BEGIN{exit !(a<b)}'; then best=${res[$1,$r,rto]} br=$r; fi
  done
  echo "$br"
}

section() {
  local kind label cb
  cat <<EOF
<!-- bench-k8s-restore.sh: begin -->
# Restore of the standard data set into a clone StatefulSet: RTO on the real-kubelet test bed (issue 11)

Generated by \`make bench\` (docs/bench-k8s-restore.sh, runnable alone: \`sudo bash docs/bench-k8s-restore.sh\`) on
$(date -u '+%Y-%m-%d'), measured ${t_start}–${t_end} UTC; amber at ${amber_ver}.
The clone's figures are the Restore's own status (\`status.rto\`, \`status.timings\`): the kubelet's container times,
whole seconds.

## Set-up
EOF
  if [ "$standard" = 1 ]; then
    echo "- **The standard \"mixed\" data set** (pgbench scale 10 and bench_mixed, ${mixed_rows} rows): ${loaded}. The"
  else
    echo "- **A reduced data set, not the standard one** (pgbench scale ${scale}, bench_mixed ${mixed_rows} rows): ${loaded}. The"
  fi
  cat <<EOF
  databases hold $(mb "$db_bytes") MB (\`pg_database_size\`); loading took ${load_s} s.
- The example PostgreSQL 15 StatefulSet of docs/examples with one replica and the amber sidecar, archiving WAL; its
  physical backup by a Backup (\`policyRef: pg\`) took ${backup_s} s, read $(mb "$backup_in") MB and stored $(mb "$backup_bytes") MB.
EOF
  if [ -n "$target" ]; then
    echo "- Then \`pgbench -c 2 -j 2 -T ${pitr_seconds}\` on the original (${pitr_tps} tps): $(mb "$wal_bytes") MB of WAL after the backup, archived by the"
    echo "  sidecar; the point-in-time target is the whole second after it ended."
  fi
  cat <<EOF
- One-node cluster as \`make cluster\` starts it (kube-apiserver, kube-controller-manager, kube-scheduler, a real
  kubelet with containerd, amber-controller as a host process) and its MinIO on the node's address as the
  repository (\`${repo_url%%\?*}\`), all on this machine; the amber and PostgreSQL images loaded beforehand (no pull).
- $(nproc) cores shared with other work. Load average (1, 5, 15 min) ${load_start} when measuring began, ${load_end} at
  the end; the 1-minute load at the start of each measurement, in order: ${loads[*]}.

## Commands
- Clone: \`kubectl create\` of a Restore \`{policyRef: pg, sourceStatefulSet: pg, backupID: <the backup>}\`, and for
  the point in time the same with \`pointInTime: <target>\`; waited for \`status.phase: Succeeded\`; then the clone
  (StatefulSet, Service, PVC) deleted. Its init container ran \`amber ${res[backup,1,args]}\`.
- CLI, on the host, same repository, same target: \`amber restore --engine postgres --data-dir <empty dir> --backup
  <the backup> --to-position <its consistent position>\` (point in time: \`--to-time <target>\`), timed with \`date\`;
  then \`pg_ctl start\` (as postgres) on it, timed until \`pg_isready\` answers: the clone's readiness probe.
  ${cgnote^}.
  Repository password and storage keys from files (\`AMBER_PASSWORD_FILE\`, \`AMBER_CREDENTIALS_DIR\`), as in the pod;
  the metadata cache at its default (a directory warmed by the earlier \`amber ls\`), where the pod has none; then
  the same restore again without the cache (\`AMBER_CACHE_DIR=-\`, as the pod), data transfer only.
- ${runs} runs; odd runs restore the clone first, even runs the CLI first.

## Results
EOF
  for kind in "${kinds[@]}"; do
    if [ "$kind" = backup ]; then label="to the backup (its consistent position)"; else label="to a point in time ${pitr_seconds} s of pgbench after the backup"; fi
    cb=$(best_run "$kind")
    cat <<EOF
### Restore ${label}
| | clone: best run (${cb}) | clone: all runs | CLI on the host: best | CLI: all runs |
|---|---|---|---|---|
| RTO: request → ready (accepts connections) | ${res[$kind,$cb,rto]} s | $(all_of "$kind" rto) | $(min_of "cli$kind" rto) s | $(all_of "cli$kind" rto) |
| scheduling: Restore created → restoring container starts | ${res[$kind,$cb,sched]} s | $(all_of "$kind" sched) | — | — |
| data transfer: the restoring container's run / \`amber restore\` | ${res[$kind,$cb,xfer]} s | $(all_of "$kind" xfer) | $(min_of "cli$kind" xfer) s | $(all_of "cli$kind" xfer) |
| … of which \`amber restore\`'s own \`duration_s\` (its report) | ${res[$kind,$cb,xfer_in]:--} s | $(all_of "$kind" xfer_in) | $(min_of "cli$kind" xfer_in) s | $(all_of "cli$kind" xfer_in) |
| data transfer, CLI without the metadata cache (\`AMBER_CACHE_DIR=-\`, as the pod); its own \`duration_s\` in brackets | | | $(min_of "clinocache$kind" xfer) s ($(min_of "clinocache$kind" xfer_in) s) | $(pairs "clinocache$kind") |
| recovery: restore done → ready (PostgreSQL starts, fetches and replays WAL) | ${res[$kind,$cb,recov]} s | $(all_of "$kind" recov) | $(min_of "cli$kind" recov) s | $(all_of "cli$kind" recov) |

Scheduling by step (whole seconds; Restore → StatefulSet / → pod / → scheduled / → container started), per run:
$(for r in $(seq 1 "$runs"); do printf '%s' "run $r: ${res[$kind,$r,steps]} s; "; done | sed 's/; $//').

**Data transfer, clone / CLI: $(ratio "$(min_of "$kind" xfer)" "$(min_of "cli$kind" xfer)")** (best of each; per run: $(for r in $(seq 1 "$runs"); do printf '%s ' "$(ratio "${res[$kind,$r,xfer]}" "${res[cli$kind,$r,xfer]}")"; done | sed 's/ $//')); on
\`amber restore\`'s own duration: $(ratio "$(min_of "$kind" xfer_in)" "$(min_of "cli$kind" xfer_in)"); against the CLI without the cache: $(ratio "$(min_of "$kind" xfer)" "$(min_of "clinocache$kind" xfer)"). Ready, clone / CLI: $(ratio "${res[$kind,$cb,rto]}" "$(min_of "cli$kind" rto)").

EOF
  done
  local goal="**not met**" g_in
  if awk -v a="$(min_of backup xfer)" -v b="$(min_of clibackup xfer)" 'BEGIN{exit !(a <= b + 1)}'; then goal="**met**"; fi
  cat <<EOF
Goal (issue 11): the clone's data transfer at least as fast as \`amber restore\` on the CLI: ${goal} (restore to the
backup, best runs, within the kubelet's one-second resolution: $(min_of backup xfer) s against $(min_of clibackup xfer) s).

## What bounds each phase
- **Scheduling** ($(min_of backup sched) s at best): no image pull here (the images are in containerd already; a
  cluster pulling amber's image adds that pull once per node). The rest is the controller's reconcile (finding the
  workload in the repository and creating the clone), the StatefulSet controller creating the pod, the claim
  provisioned and bound (a directory here; a cloud disk takes longer) before the scheduler binds the pod, and the
  kubelet's pod sandbox and volume mounts: the steps above.
- **Data transfer**: the init container runs \`amber restore\` $(case ${res[backup,1,resources]} in '{}' | null | '') echo "with no CPU or memory limit, so Go uses every core (GOMAXPROCS = $(nproc))," ;; *) echo "with \`resources: ${res[backup,1,resources]}\`" ;; esac)
  and no metadata cache (\`AMBER_CACHE_DIR=-\`); it reads the repository from MinIO over the pod network, decrypts, decompresses
  and writes into the claim's directory. Its container time exceeds \`amber restore\`'s own duration by what comes
  before the restore proper: the container's start, opening the repository (key derivation) and copying amber
  and the plugin into the pod (\`--install-to\`). On the host the same
  restore reads the same MinIO over loopback: the two differ by the pod network, the container start, the cache,
  and the one-second rounding of the container's times; their CPU weight is the same (see Commands).
- **Recovery**: PostgreSQL starting on the restored directory, fetching WAL from the repository through
  \`restore_command\` (\`amber log-fetch\`, one process per segment) and replaying it up to the target, then the
  readiness probe (\`pg_isready\` every 2 s: up to 2 s of the clone's figure is the probe's period). To the
  backup it replays only the WAL written during the backup; to the point in time also the $(mb "${wal_bytes:-0}") MB after it.
<!-- bench-k8s-restore.sh: end -->
EOF
}

mkdir -p "$(dirname "$out")"
touch "$out"
awk '/^<!-- bench-k8s-restore.sh: begin -->$/{skip=1} !skip{print} /^<!-- bench-k8s-restore.sh: end -->$/{skip=0}' "$out" >"$out.tmp"
if [ -s "$out.tmp" ]; then
  { printf '%s\n\n' "$(cat "$out.tmp")"; section; } >"$out.new"
else
  section >"$out.new"
fi
rm -f "$out.tmp"
mv "$out.new" "$out"
say "wrote the clone restore section of ${out#"$root"/}"
