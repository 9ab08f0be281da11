# PostgreSQL for integration scripts: source this file, then
#   pg_start            # sets PG_URL, PG_PORT, PG_DIR, PG_PID; returns non-zero on failure
#   pg_stop             # fast shutdown by PID, removes PG_DIR
# pg_available returns 0 when the server binaries are installed (a test fails without them).
# As root, initdb and postgres run as "nobody" (they refuse to run as root).

pg_bindir() {
    if [ -n "${FLASHGATE_PG_BIN:-}" ]; then echo "$FLASHGATE_PG_BIN"; return 0; fi
    for v in 17 16 15; do
        if [ -x "/usr/lib/postgresql/$v/bin/postgres" ]; then
            echo "/usr/lib/postgresql/$v/bin"; return 0
        fi
    done
    return 1
}

pg_available() { pg_bindir >/dev/null; }

_pg_as_user() {
    if [ "$(id -u)" = 0 ]; then
        setpriv --reuid=nobody --regid=nogroup --clear-groups -- "$@"
    else
        "$@"
    fi
}

_pg_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null \
        || echo $((20000 + RANDOM % 20000))
}

pg_start() {
    local bin
    bin=$(pg_bindir) || { echo "pg_start: PostgreSQL not installed" >&2; return 1; }
    PG_DIR=$(mktemp -d /tmp/pg_sh.XXXXXX)
    [ "$(id -u)" = 0 ] && chown nobody:nogroup "$PG_DIR"
    if ! _pg_as_user "$bin/initdb" -D "$PG_DIR/data" -U postgres -A trust -E UTF8 \
            --no-sync --no-instructions >"$PG_DIR/initdb.log" 2>&1; then
        echo "pg_start: initdb failed" >&2; tail -n 20 "$PG_DIR/initdb.log" >&2
        rm -rf "$PG_DIR"; return 1
    fi
    PG_PORT=$(_pg_free_port)
    _pg_as_user "$bin/postgres" -D "$PG_DIR/data" -k "$PG_DIR" -p "$PG_PORT" -h 127.0.0.1 -F \
        -c max_connections=50 >"$PG_DIR/postgres.log" 2>&1 &
    PG_PID=$!
    PG_URL="postgresql://postgres@127.0.0.1:$PG_PORT/postgres"
    local i
    for i in $(seq 1 300); do
        if "$bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; then return 0; fi
        kill -0 "$PG_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "pg_start: postgres did not start" >&2; tail -n 20 "$PG_DIR/postgres.log" >&2
    pg_stop; return 1
}

pg_stop() {
    if [ -n "${PG_PID:-}" ]; then
        kill -INT "$PG_PID" 2>/dev/null
        local i
        for i in $(seq 1 100); do kill -0 "$PG_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$PG_PID" 2>/dev/null
        wait "$PG_PID" 2>/dev/null
        PG_PID=
    fi
    [ -n "${PG_DIR:-}" ] && rm -rf "$PG_DIR"
    PG_DIR=
}
