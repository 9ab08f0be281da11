# Shell twin of ts_redis.c for integration scripts: a real redis-server on
# 127.0.0.1 at a free port in a temp dir, stopped by PID.
#
#   . "$FLASHGATE_SRC/tests/support/redis.sh"
#   redis_start [aof]        # fails (exit 1) if there is no redis-server
#   ... "redis://127.0.0.1:$REDIS_PORT" ...
#   redis_cli PING           # redis-cli against it
#   redis_restart            # same port and dir (AOF state reloads)
#   redis_pause / redis_resume   # SIGSTOP / SIGCONT
#   redis_stop               # SIGTERM, SIGKILL after 5 s; removes the dir
#
# Sets REDIS_PORT, REDIS_PID, REDIS_DIR. Add `trap redis_stop EXIT` (or call
# it from your own EXIT trap) so the server never outlives the script.

REDIS_SERVER_BIN=${FLASHGATE_REDIS_SERVER:-$(command -v redis-server 2>/dev/null || true)}
REDIS_PORT=
REDIS_PID=
REDIS_DIR=
REDIS_AOF=no

redis__free_port() {
    python3 - <<'EOF' 2>/dev/null || echo $((20000 + RANDOM % 20000))
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
EOF
}

redis__ping() {
    if command -v redis-cli >/dev/null 2>&1; then
        [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" PING 2>/dev/null)" = PONG ]
    else
        # no redis-cli: speak RESP with bash's /dev/tcp
        exec 9<>"/dev/tcp/127.0.0.1/$REDIS_PORT" 2>/dev/null || return 1
        printf 'PING\r\n' >&9
        local line
        read -r -t 1 line <&9
        exec 9>&-
        [ "${line%$'\r'}" = "+PONG" ]
    fi
}

redis__spawn() {
    "$REDIS_SERVER_BIN" --port "$REDIS_PORT" --bind 127.0.0.1 --save "" \
        --appendonly "$REDIS_AOF" --dir "$REDIS_DIR" --daemonize no \
        --logfile "$REDIS_DIR/redis.log" </dev/null >/dev/null 2>&1 &
    REDIS_PID=$!
    local i
    for i in $(seq 1 500); do
        if ! kill -0 "$REDIS_PID" 2>/dev/null; then
            REDIS_PID=
            return 1
        fi
        redis__ping && return 0
        sleep 0.02
    done
    kill -KILL "$REDIS_PID" 2>/dev/null
    wait "$REDIS_PID" 2>/dev/null
    REDIS_PID=
    return 1
}

redis_start() {
    if [ -z "$REDIS_SERVER_BIN" ] || [ ! -x "$REDIS_SERVER_BIN" ]; then
        echo "FAIL: no redis-server (deploy/install-deps.sh installs it)" >&2
        exit 1
    fi
    [ "${1:-}" = aof ] && REDIS_AOF=yes || REDIS_AOF=no
    REDIS_DIR=$(mktemp -d "${TMPDIR:-/tmp}/fg-redis-XXXXXX")
    local attempt
    for attempt in 1 2 3 4 5; do
        REDIS_PORT=$(redis__free_port)
        redis__spawn && return 0
    done
    echo "redis_start: could not start $REDIS_SERVER_BIN (see $REDIS_DIR/redis.log)" >&2
    return 1
}

# Stops the server by PID; keeps the dir when called as `redis_stop keep`.
redis_stop() {
    if [ -n "$REDIS_PID" ]; then
        kill -CONT "$REDIS_PID" 2>/dev/null
        kill -TERM "$REDIS_PID" 2>/dev/null
        local i
        for i in $(seq 1 250); do
            kill -0 "$REDIS_PID" 2>/dev/null || break
            sleep 0.02
        done
        kill -KILL "$REDIS_PID" 2>/dev/null
        wait "$REDIS_PID" 2>/dev/null
        REDIS_PID=
    fi
    if [ "${1:-}" != keep ] && [ -n "$REDIS_DIR" ]; then
        case "$REDIS_DIR" in
        */fg-redis-*) rm -rf "$REDIS_DIR" ;;
        esac
        REDIS_DIR=
    fi
    return 0
}

redis_restart() {
    redis_stop keep
    local i
    for i in $(seq 1 20); do
        redis__spawn && return 0
        sleep 0.1
    done
    return 1
}

redis_pause() { kill -STOP "$REDIS_PID"; }
redis_resume() { kill -CONT "$REDIS_PID"; }

redis_cli() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }
