#!/usr/bin/env bash
# Test services for CI, sourced by .ci/run: a PostgreSQL server on loopback (the store's tests run
# against it as well as SQLite) and Debian's Chromium (the report's browser test). Installs what is
# missing, starts PostgreSQL in a throw-away cluster, exports the variables the tests read.
set -euo pipefail

need=()
compgen -G "/usr/lib/postgresql/*/bin/initdb" > /dev/null || need+=(postgresql)
command -v chromium > /dev/null || need+=(chromium)
if ((${#need[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" > /dev/null
fi

PG_BIN=$(dirname "$(ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")
PG_PORT=${PG_PORT:-54329}
PG_DIR=$(mktemp -d /tmp/bastion-pg.XXXXXX)
chown postgres "$PG_DIR"
runuser -u postgres -- "$PG_BIN/initdb" -D "$PG_DIR/data" -A trust -U postgres > /dev/null
runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_DIR" start > /dev/null
trap 'runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast stop > /dev/null; rm -rf "$PG_DIR"' EXIT
runuser -u postgres -- "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" bastion_test

export BASTION_TEST_POSTGRES="postgresql+psycopg://postgres@127.0.0.1:$PG_PORT/bastion_test"
export BASTION_TEST_CHROMIUM=$(command -v chromium)
