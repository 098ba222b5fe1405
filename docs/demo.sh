#!/usr/bin/env bash
# make demo: a first look at Amber on a throwaway local repository.
set -euo pipefail
amber=${AMBER:-$(pwd)/bin/amber}
work=$(mktemp -d /tmp/amber-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
export AMBER_REPO="$work/repo" AMBER_PASSWORD="demo-password" AMBER_CACHE_DIR="$work/cache"
say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

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
if cmp -s "$work/dump" "$work/restored"; then echo "restored copy is byte-identical"; else echo "MISMATCH"; exit 1; fi

say "Flip one byte of a stored pack: verify names it, restore refuses"
pack=$(find "$AMBER_REPO/data" -type f | head -1)
chmod u+w "$pack"
printf '\xff' | dd of="$pack" bs=1 seek=1000 conv=notrunc status=none
"$amber" verify --read-data || echo "(verify exited $? as it should)"
"$amber" restore --backup latest --stdout > /dev/null || echo "(restore refused with exit $?: no unauthenticated byte was written)"

# --- PostgreSQL: physical backup, continuous WAL archiving, point-in-time restore ---
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
if [ -z "$PGBIN" ]; then
  say "PostgreSQL is not installed (make deps installs it): skipping the database part"
  exit 0
fi
# PostgreSQL refuses to run as root: run it (and amber, whose restore_command
# it calls) as the postgres user.
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- env AMBER_REPO="$AMBER_REPO" AMBER_PASSWORD="$AMBER_PASSWORD" AMBER_CACHE_DIR=- "$@"; else "$@"; fi; }
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
pkill -TERM -f -- "archive --engine postgres --dsn $dsn"; wait "$archiver" || true; archiver=
sed -e 's/Session terminated, killing shell...//' -e 's/ *\.\.\.killed\.//' -e '/^\s*$/d' -e 's/^/    /' "$pg/archive.log"

say "The repository: backups and the recoverable window"
as_pg "$amber" ls

say "Restore to $target, just before the mistake, into a new data directory"
as_pg "$amber" restore --engine postgres --data-dir "$pg/restored" --to-time "$target"

say "Start PostgreSQL on it: it fetches WAL from the repository and stops at the target"
as_pg "$PGBIN/pg_ctl" -D "$pg/restored" -l "$pg/restored.log" -w start -o "-p $port2 -k $pg" >/dev/null
for _ in $(seq 1 100); do [ "$(psql_ -p "$port2" -c 'SELECT pg_is_in_recovery()' 2>/dev/null)" = f ] && break; sleep 0.2; done
echo "restored server has $(psql_ -p "$port2" -c 'SELECT count(*) FROM orders') orders (the original had 10500 before the delete)"

say "Done. Everything happened in $work and $pg, now removed."
