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

say "Done. Everything happened in $work, now removed."
