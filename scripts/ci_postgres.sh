# Sourced by .ci/run: start a throw-away PostgreSQL on a free loopback port as an unprivileged user and
# export RECOMMENDER_TEST_POSTGRES_URL, so tests/api/test_storage.py runs against it as well as SQLite.
# Without PostgreSQL (and no root to install Debian's package) it only prints why and the tests skip.
if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
    || echo "could not install postgresql: the PostgreSQL storage tests will be skipped" >&2
fi
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -n "$PG_BIN" ]; then
  PG_DIR=$(mktemp -d /tmp/recommender-pg.XXXXXX)
  PG_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }  # never as root
  [ "$(id -u)" = 0 ] && chown postgres "$PG_DIR"
  if as_pg "$PG_BIN/initdb" -D "$PG_DIR/data" -A trust -U recommender >/dev/null \
     && as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w \
          -o "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null \
     && as_pg "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U recommender recommender_test; then
    export RECOMMENDER_TEST_POSTGRES_URL="postgresql+psycopg://recommender@127.0.0.1:$PG_PORT/recommender_test"
    trap 'as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1; rm -rf "$PG_DIR"' EXIT
  else
    echo "could not start PostgreSQL (see $PG_DIR/log): the PostgreSQL storage tests will be skipped" >&2
  fi
fi
