#!/usr/bin/env bash
# The claim under a pinned horizon: `jq-bench pinned` on a private
# PostgreSQL cluster with autovacuum on (the machine's CI cluster runs
# without it), started here and removed afterwards.
#   BIN=<release bin dir> benches/scripts/pinned.sh --rate 400 --minutes 8 --hold-after-s 60 --hold-s 300
set -eu
BIN=${BIN:?release bin dir with jq-server and jq-bench}
PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}
DIR=$(mktemp -d /tmp/jq-pinned.XXXXXX)
PORT=${PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}
RUNAS=()
if [ "$(id -u)" = 0 ]; then chown -R postgres "$DIR"; RUNAS=(runuser -u postgres --); fi
"${RUNAS[@]}" "$PGBIN/initdb" -D "$DIR/data" -U postgres -A trust >/dev/null
"${RUNAS[@]}" "$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/log" -w start \
  -o "-p $PORT -k $DIR -c listen_addresses=127.0.0.1 -c autovacuum=on -c shared_buffers=256MB -c max_connections=200" >/dev/null
trap '"${RUNAS[@]}" "$PGBIN/pg_ctl" -D "$DIR/data" -m fast stop >/dev/null; rm -rf "$DIR"' EXIT
echo "private cluster on port $PORT (autovacuum on)"
"$BIN/jq-bench" --db-url "postgres://postgres@127.0.0.1:$PORT/postgres" --server-bin "$BIN/jq-server" pinned "$@"
