#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests of the PostgreSQL history store.
#
#   scripts/pg.sh start    initdb into a temp directory, start on a free loopback port, create
#                          the database `persona_test`; prints its URL
#   scripts/pg.sh url      the URL of the running cluster
#   scripts/pg.sh status   exit 0 when it answers
#   scripts/pg.sh stop     stop it and delete its directory
#
# PostgreSQL refuses to run as root: as root, the cluster runs as the `postgres` user. Nothing
# outside the temp directory is touched; the state lives in $CACHE/pg/state.
#
# Env: PERSONA_PG_BIN  the PostgreSQL bin directory (default: the newest /usr/lib/postgresql/*/bin)
set -euo pipefail
CACHE="${PERSONA_CACHE_DIR:-${XDG_CACHE_HOME:-${HOME:?HOME is not set}/.cache}/persona}"
STATE="$CACHE/pg/state"
BIN="${PERSONA_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}"
[ -x "$BIN/initdb" ] || { echo "pg: no PostgreSQL found (set PERSONA_PG_BIN to its bin directory; Debian: apt-get install postgresql)" >&2; exit 1; }

as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

url_of() { echo "postgres://postgres@127.0.0.1:$1/persona_test"; }

case "${1:-}" in
  start)
    if [ -f "$STATE" ] && "$0" status >/dev/null 2>&1; then "$0" url; exit 0; fi
    mkdir -p "$(dirname "$STATE")"
    dir="$(mktemp -d /tmp/persona-pg.XXXXXX)"
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    as_owner "$BIN/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
    as_owner "$BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null \
      || { cat "$dir/server.log" >&2; exit 1; }
    as_owner "$BIN/createdb" -h 127.0.0.1 -p "$port" -U postgres persona_test
    printf '%s %s\n' "$dir" "$port" >"$STATE"
    url_of "$port"
    ;;
  url)
    [ -f "$STATE" ] || { echo "pg: not started (scripts/pg.sh start)" >&2; exit 1; }
    read -r _ port <"$STATE"; url_of "$port"
    ;;
  status)
    [ -f "$STATE" ] || exit 1
    read -r _ port <"$STATE"
    "$BIN/pg_isready" -q -h 127.0.0.1 -p "$port"
    ;;
  stop)
    [ -f "$STATE" ] || exit 0
    read -r dir _ <"$STATE"
    as_owner "$BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$dir" "$STATE"
    ;;
  *) echo "usage: scripts/pg.sh start|url|status|stop" >&2; exit 2 ;;
esac
