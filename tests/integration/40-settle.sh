#!/usr/bin/env bash
# flashgate-settle end to end with the real binary, kcat and the embedded broker:
#   orders (with copies) produced with kcat -> settle -> SQLite; kill -9 of settle
#   mid-run and a restart; every order settled once, an outcome for each; then the
#   broker restarts on a new port and settle finds it again through kafka.bootstrap.
#
# The broker is the gateway's embedded one (flashgate writes <data-dir>/kafka.bootstrap).
# FLASHGATE_IT_BROKER_CMD overrides it: a command that gets the data dir as its last
# argument, runs a broker and writes kafka.bootstrap there (e.g. a small oq_embedded
# program). Fails when the binaries or kcat are missing, or when the broker
# writes no kafka.bootstrap: a missing dependency or a failed start is a failure.
set -u
BIN=${FLASHGATE_BIN:-$(dirname "$0")/../../build}
SETTLE=$BIN/flashgate-settle
SRC=${FLASHGATE_SRC:-$(dirname "$0")/../..}
for t in kcat sqlite3 python3; do
    command -v $t >/dev/null || { echo "FAIL: $t not installed (deploy/install-deps.sh)"; exit 1; }
done
[ -x "$SETTLE" ] || { echo "FAIL: $SETTLE not built"; exit 1; }

TMP=$(mktemp -d /tmp/it-settle.XXXXXX)
BDIR=$TMP/broker
SDIR=$TMP/settle
DB=$SDIR/orders.db
mkdir -p "$BDIR" "$SDIR"
BROKER_PID=
SETTLE_PID=
cleanup() {
    [ -n "$SETTLE_PID" ] && kill -KILL "$SETTLE_PID" 2>/dev/null
    [ -n "$BROKER_PID" ] && kill -TERM "$BROKER_PID" 2>/dev/null && wait "$BROKER_PID" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; echo "--- settle log"; tail -n 30 "$TMP/settle.log" 2>/dev/null; exit 1; }

# Distinct free ports, all held open until all are picked: two separate picks can get the
# same port back (the first socket is closed before the second binds; seen once in CI:
# "server.admin_listen ... must differ from server.listen").
free_ports() { python3 -c 'import socket,sys
ss=[socket.socket() for _ in range(int(sys.argv[1]))]
for s in ss: s.bind(("127.0.0.1",0))
print(" ".join(str(s.getsockname()[1]) for s in ss))' "$1"; }

start_broker() {
    rm -f "$BDIR/kafka.bootstrap"
    if [ -n "${FLASHGATE_IT_BROKER_CMD:-}" ]; then
        $FLASHGATE_IT_BROKER_CMD "$BDIR" >>"$TMP/broker.log" 2>&1 &
    else
        [ -x "$BIN/flashgate" ] || { echo "FAIL: $BIN/flashgate not built"; exit 1; }
        local gport aport
        read -r gport aport <<< "$(free_ports 2)"
        "$BIN/flashgate" --listen "127.0.0.1:$gport" --admin-listen "127.0.0.1:$aport" \
            --admin-token it-settle-token-0123456789 --data-dir "$BDIR" --kafka-brokers embedded \
            >>"$TMP/broker.log" 2>&1 &
    fi
    BROKER_PID=$!
    for _ in $(seq 1 300); do
        [ -s "$BDIR/kafka.bootstrap" ] && { BOOT=$(cat "$BDIR/kafka.bootstrap"); return 0; }
        kill -0 "$BROKER_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "FAIL: the broker wrote no $BDIR/kafka.bootstrap in 30 s (embedded broker did not start)"
    tail -n 5 "$TMP/broker.log"
    exit 1
}

stop_broker() {
    kill -TERM "$BROKER_PID"; wait "$BROKER_PID" 2>/dev/null; BROKER_PID=
}

# produce FIRST LAST [COPIES]: orders FIRST..LAST, then COPIES copies of the first ones
produce() {
    python3 - "$1" "$2" "${3:-0}" <<'PY' | kcat -P -b "$BOOT" -t flashgate.orders -K '|' -z none \
        || fail "kcat produce"
import json, sys
a, b, copies = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
ids = list(range(a, b + 1)) + list(range(a, a + copies))
for i in ids:
    sale = "s%d" % (i % 5)
    print("%s|%s" % (sale, json.dumps({"order_id": "IT%06d" % i, "sale_id": sale,
          "user_id": "u%d" % i, "qty": 1, "accepted_at": 1700000000000 + i, "node": 1},
          separators=(",", ":"))))
PY
}

count() { sqlite3 "$DB" "SELECT count(*) FROM orders" 2>/dev/null || echo 0; }

wait_count() { # wait_count N SECONDS
    for _ in $(seq 1 $(( $2 * 10 ))); do
        [ "$(count)" -ge "$1" ] && return 0
        sleep 0.1
    done
    fail "database has $(count) orders, expected $1"
}

start_settle() {
    "$SETTLE" --kafka-brokers "@$BDIR/kafka.bootstrap" --data-dir "$SDIR" --log-level warn \
        --kafka-properties consumer.session.timeout.ms=6000 "$@" >>"$TMP/settle.log" 2>&1 &
    SETTLE_PID=$!
}

"$SETTLE" --version | grep -q flashgate-settle || fail "--version"
"$SETTLE" --no-such-flag >/dev/null 2>&1 && fail "unknown flag accepted"
# The sample config loads as it is and sets every key (unit.st_config checks that it
# is what the option table generates); a clean environment, so no FLASHGATE_* of the
# runner's can take a key from it.
SAMPLE=$SRC/deploy/flashgate-settle.conf.example
out=$(env -i PATH="$PATH" "$SETTLE" --config "$SAMPLE" --check-config 2>&1) \
    || fail "the sample config does not load: $out"
documented=$(grep -cE '^ *// [a-z0-9_.]+: ' "$SAMPLE")
keys=$(printf '%s\n' "$out" | grep -c ' = ')
[ "$keys" -gt 0 ] && [ "$keys" = "$documented" ] \
    || fail "--check-config printed $keys keys, $SAMPLE documents $documented: $out"
printf '%s\n' "$out" | grep -vF "  # file $SAMPLE" && fail "keys above not set by $SAMPLE"

# 1. settle starts before the broker (it waits for kafka.bootstrap), slowly; kill -9
#    mid-run, restart
start_settle --batch 50 --max-rate 300
sleep 1
kill -0 "$SETTLE_PID" || fail "settle exited while waiting for the broker"
start_broker
echo "broker at $BOOT"
produce 1 400 40
wait_count 100 30
kill -KILL "$SETTLE_PID"; wait "$SETTLE_PID" 2>/dev/null
echo "killed -9 at $(count) orders"
start_settle --batch 200
wait_count 400 40
sleep 1
[ "$(count)" = 400 ] || fail "expected 400 rows, got $(count)"
[ "$(sqlite3 "$DB" "SELECT count(*) FROM orders WHERE status='settled'")" = 400 ] || fail "status"

# 2. an outcome for every order
for _ in $(seq 1 50); do
    n=$(kcat -C -b "$BOOT" -t flashgate.outcomes -o beginning -e -q -f '%s\n' 2>/dev/null | python3 -c '
import json, sys
ids = set()
for line in sys.stdin:
    o = json.loads(line)
    if o["status"] == "settled": ids.add(o["order_id"])
print(len(ids))')
    [ "$n" = 400 ] && break
    sleep 0.2
done
[ "$n" = 400 ] || fail "outcomes cover $n of 400 orders"
echo "400 orders settled once, outcomes for all"

# 3. the broker restarts on a new port: settle re-reads kafka.bootstrap
OLD=$BOOT
stop_broker
start_broker
[ "$BOOT" != "$OLD" ] || echo "note: the broker came back on the same address"
produce 1001 1100
wait_count 500 60
echo "after the broker moved ($OLD -> $BOOT): $(count) orders"

kill -TERM "$SETTLE_PID"; wait "$SETTLE_PID"; rc=$?
SETTLE_PID=
[ "$rc" = 0 ] || fail "settle exit status $rc after SIGTERM"
[ "$(count)" = 500 ] || fail "expected 500 rows"
echo "1 passed, 0 failed"
