#!/usr/bin/env bash
# make demo: a first look at Amber on a throwaway local repository.
set -euo pipefail
amber=${AMBER:-$(pwd)/bin/amber}
work=$(mktemp -d /tmp/amber-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
export AMBER_REPO="$work/repo" AMBER_PASSWORD="demo-password" AMBER_CACHE_DIR="$work/cache"
say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
# die: the demo failed; say why and stop with a non-zero status.
die() { printf '\n\033[1;31mDEMO FAILED: %s\033[0m\n' "$*" >&2; exit 1; }

say "Create an encrypted repository in a local directory"
run "$amber" repo init

say "Make 64 MiB of sample data (a stand-in for a database dump)"
head -c $((48 << 20)) /dev/urandom > "$work/dump"
(set +o pipefail; yes "INSERT INTO orders VALUES (42, 'amber', 19.99, now());" | head -c $((16 << 20)) >> "$work/dump")
ls -l "$work/dump" | awk '{print $5 " bytes"}'

say "Back it up: chunked, deduplicated, compressed and encrypted before it is stored"
run "$amber" backup --stdin --name orders --tag env=demo < "$work/dump"

say "Change 2 MiB in the middle and back up again: only the changed chunks are stored"
dd if=/dev/urandom of="$work/dump" bs=1M count=2 seek=20 conv=notrunc status=none
run "$amber" backup --stdin --name orders --tag env=demo < "$work/dump"

say "List backups"
run "$amber" ls

say "Verify every byte in the repository"
run "$amber" verify --read-data

say "Restore the latest backup and compare it with the original"
"$amber" restore --backup latest --stdout > "$work/restored"
cmp -s "$work/dump" "$work/restored" || die "the restored copy differs from the original"
echo "restored copy is byte-identical"

say "Flip one byte of a stored pack: verify must name it (exit status 3) and restore must refuse"
# The largest pack: every backup here uses it.
pack=$(find "$AMBER_REPO/data" -type f -printf '%s %p\n' | sort -rn | head -1 | cut -d' ' -f2-)
[ -n "$pack" ] || die "no pack under $AMBER_REPO/data to damage"
byte=$(od -An -tu1 -j 1000 -N 1 "$pack" | tr -d ' ')
[ -n "$byte" ] || die "pack $pack is shorter than 1001 bytes"
chmod u+w "$pack"
# XOR with 0xff, so the byte really changes whatever it was.
printf "\\$(printf '%03o' $((byte ^ 255)))" | dd of="$pack" bs=1 seek=1000 conv=notrunc status=none
echo "flipped byte 1000 of ${pack#"$AMBER_REPO"/}"
printf '$ %s\n' "$amber verify --read-data"
rc=0; "$amber" verify --read-data > "$work/verify.out" 2>&1 || rc=$?
cat "$work/verify.out"
[ "$rc" = 3 ] || die "verify --read-data exited $rc after a stored byte was flipped; want 3 (problems found): the damage went undetected"
grep -q "PROBLEM .*$(basename "$pack")" "$work/verify.out" || die "verify did not name the damaged pack ${pack#"$AMBER_REPO"/}"
echo "(verify exited 3 and named the damaged pack, as it should)"
printf '$ %s\n' "$amber restore --backup latest --stdout > damaged"
rc=0; "$amber" restore --backup latest --stdout > "$work/damaged" || rc=$?
[ "$rc" != 0 ] || die "restore of a damaged backup exited 0"
cmp -s "$work/dump" "$work/damaged" && die "restore of a damaged backup gave the whole original back: the flipped byte went unnoticed"
echo "(restore refused with exit $rc: no unauthenticated byte was written)"

# --- PostgreSQL: physical backup, continuous WAL archiving, point-in-time restore ---
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
if [ -z "$PGBIN" ]; then
  say "PostgreSQL is not installed (make deps installs it): skipping the database part"
  exit 0
fi
# PostgreSQL refuses to run as root: run it (and amber, whose restore_command
# it calls) as the postgres user.
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- env AMBER_REPO="$AMBER_REPO" AMBER_PASSWORD="$AMBER_PASSWORD" AMBER_CACHE_DIR=- "$@"; else "$@"; fi; }
# descendant PID NAME: the first process named NAME below PID.
descendant() {
  local p kids
  for p in $(pgrep -P "$1"); do
    [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$2" ] && { echo "$p"; return; }
    kids=$(descendant "$p" "$2")
    [ -n "$kids" ] && { echo "$kids"; return; }
  done
  return 0
}
pg=$(mktemp -d /tmp/amber-demo-pg.XXXXXX)
chmod 755 "$pg"; [ "$(id -u)" = 0 ] && chown postgres: "$pg"
export AMBER_REPO="$pg/repo"
port=$(( 20000 + RANDOM % 20000 )); port2=$(( port + 1 ))
cleanup_pg() {
  as_pg "$PGBIN/pg_ctl" -D "$pg/data" -m immediate stop >/dev/null 2>&1 || true
  as_pg "$PGBIN/pg_ctl" -D "$pg/restored" -m immediate stop >/dev/null 2>&1 || true
  [ -n "${archiver:-}" ] && kill "$archiver" 2>/dev/null || true
  rm -rf "$pg" "$work"
}
trap cleanup_pg EXIT
psql_() { as_pg "$PGBIN/psql" -X -q -At -h 127.0.0.1 -U amber -d postgres "$@"; }

say "Start a throwaway PostgreSQL server on port $port"
as_pg "$PGBIN/initdb" -D "$pg/data" -U amber --auth=trust >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$pg/data" -l "$pg/server.log" -w start \
  -o "-c listen_addresses=127.0.0.1 -p $port -k $pg -c wal_level=replica -c max_wal_senders=5" >/dev/null
dsn="host=127.0.0.1 port=$port user=amber dbname=postgres"
psql_ -p "$port" -c "CREATE TABLE orders (id int PRIMARY KEY, item text, placed timestamptz DEFAULT now());
  INSERT INTO orders SELECT g, 'item ' || g FROM generate_series(1, 10000) g;"
echo "orders: $(psql_ -p "$port" -c 'SELECT count(*) FROM orders') rows"

say "Create a repository and take a physical backup (BASE_BACKUP over the replication protocol)"
as_pg "$amber" repo init
as_pg "$amber" backup --engine postgres --dsn "$dsn" --mode physical --name orders

say "Archive WAL continuously (a replication slot; partial segments made durable every 500 ms)"
as_pg "$amber" archive --engine postgres --dsn "$dsn" 2> "$pg/archive.log" &
archiver=$!
sleep 1
psql_ -p "$port" -c "INSERT INTO orders SELECT g, 'late item ' || g FROM generate_series(10001, 10500) g;"
sleep 1.2
target=$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)
echo "all good at $target: $(psql_ -p "$port" -c 'SELECT count(*) FROM orders') orders"
sleep 1.2
say "Oops: someone deletes most orders"
psql_ -p "$port" -c "DELETE FROM orders WHERE id > 100;"
echo "orders now: $(psql_ -p "$port" -c 'SELECT count(*) FROM orders')"
sleep 2
# SIGTERM to amber itself (under runuser it is not $archiver but its descendant).
amberpid=$(descendant "$archiver" amber)
[ -n "$amberpid" ] || die "amber archive is no longer running: $(cat "$pg/archive.log")"
kill -TERM "$amberpid"; wait "$archiver" || true; archiver=
sed -e 's/Session terminated, killing shell...//' -e 's/ *\.\.\.killed\.//' -e '/^\s*$/d' -e 's/^/    /' "$pg/archive.log"

say "The repository: backups and the recoverable window"
as_pg "$amber" ls

say "Restore to $target, just before the mistake, into a new data directory"
as_pg "$amber" restore --engine postgres --data-dir "$pg/restored" --to-time "$target"

say "Start PostgreSQL on it: it fetches WAL from the repository and stops at the target"
as_pg "$PGBIN/pg_ctl" -D "$pg/restored" -l "$pg/restored.log" -w start -o "-p $port2 -k $pg" >/dev/null
for _ in $(seq 1 100); do [ "$(psql_ -p "$port2" -c 'SELECT pg_is_in_recovery()' 2>/dev/null)" = f ] && break; sleep 0.2; done
n=$(psql_ -p "$port2" -c 'SELECT count(*) FROM orders')
echo "restored server has $n orders (the original had 10500 before the delete)"
[ "$n" = 10500 ] || die "the restored server has $n orders, want 10500: the point-in-time restore missed its target"

say "Done. Everything happened in $work and $pg, now removed."
