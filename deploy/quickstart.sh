#!/bin/sh
# `make run`: flashgate on its embedded defaults on this machine, then a
# rehearsal of a flash sale against it.
#
#   - flashgate: in-memory stock, embedded Kafka broker (librdkafka's mock
#     cluster, memory only), public API on 0.0.0.0:8080, admin API on
#     127.0.0.1:9090, data in ./data (admin token in ./data/admin.token)
#   - flashgate-settle: settles the orders into ./data/orders.db (SQLite)
#   - flashgate-load: the standard scenario (1,000 units, 100,000 users),
#     audit of every promise, report in loadtest/results/<time>/report.html
#
# Buyers are verified (identity.mode=jwt, the default): flashgate generates
# ./data/identity.key at its first start and verifies tokens against its public
# half; flashgate-load mints one token per simulated account from that key
# (--identity-key, the data dir's key whatever the scenario names) and every
# request of the account carries it as Authorization: Bearer.
#
# Then both keep serving until Ctrl-C (QUICKSTART_EXIT=1: stop after the
# rehearsal). The rehearsal's crowd arrives with X-Forwarded-For addresses
# from the local load tester, so 127.0.0.1 is a trusted proxy here.
#
# Each run rehearses a sale of its own, "rehearsal-<scenario>-<start time>":
# ./data outlives a run (spool, order table, orders.db), and the scenario's
# crowd is fixed by its seed, so under the scenario's own sale id a second
# run's every buy would carry the first run's Idempotency-Key and be answered
# with the first run's order, which the fresh embedded broker never saw.
#
# Ctrl-C reaches only this script: the servers run in a session of their own
# and are stopped in dependency order, flashgate-settle (a consumer of the
# embedded broker) before flashgate (which hosts it), so settlement leaves its
# group while the broker is still there. A clean stop exits 0.
#
# For tests and a second copy on one machine: QUICKSTART_HOST (0.0.0.0),
# QUICKSTART_PORT (8080), QUICKSTART_ADMIN_PORT (9090), QUICKSTART_SCENARIO
# (loadtest/scenarios/standard.json), QUICKSTART_RESULTS (loadtest/results),
# FLASHGATE_DATA_DIR (./data), FLASHGATE_BIN (build/).
set -eu
SRC=$(cd "$(dirname "$0")/.." && pwd)
BIN=${FLASHGATE_BIN:-$SRC/build}
DATA=${FLASHGATE_DATA_DIR:-$SRC/data}
HOST=${QUICKSTART_HOST:-0.0.0.0}
PORT=${QUICKSTART_PORT:-8080}
ADMIN_PORT=${QUICKSTART_ADMIN_PORT:-9090}
SCENARIO=${QUICKSTART_SCENARIO:-$SRC/loadtest/scenarios/standard.json}
RESULTS=${QUICKSTART_RESULTS:-$SRC/loadtest/results}
mkdir -p "$DATA"
LOGS=$DATA/logs
mkdir -p "$LOGS"

fg_pid=""
settle_pid=""
# stop_one PID: SIGTERM, then wait until it has exited (not our child's
# `wait` alone: the servers run under setsid, still our children).
stop_one() {
    [ -n "$1" ] || return 0
    kill "$1" 2>/dev/null || return 0
    wait "$1" 2>/dev/null || true
}
stop() {
    trap - INT TERM HUP EXIT
    stop_one "$settle_pid"
    settle_pid=""
    stop_one "$fg_pid"
    fg_pid=""
}
trap 'echo; echo "quickstart: stopping flashgate-settle, then flashgate"; stop; exit 0' INT TERM HUP
trap stop EXIT

setsid "$BIN/flashgate" --data-dir "$DATA" --listen "$HOST:$PORT" \
    --admin-listen "127.0.0.1:$ADMIN_PORT" --server-trusted-proxies 127.0.0.1/32 \
    >"$LOGS/flashgate.log" 2>&1 &
fg_pid=$!
i=0
until curl -fsS -o /dev/null "http://127.0.0.1:$PORT/readyz" 2>/dev/null; do
    i=$((i + 1))
    if [ $i -gt 100 ] || ! kill -0 "$fg_pid" 2>/dev/null; then
        echo "quickstart: flashgate did not start; its log:" >&2
        tail -20 "$LOGS/flashgate.log" >&2
        exit 1
    fi
    sleep 0.1
done
setsid "$BIN/flashgate-settle" --data-dir "$DATA" >"$LOGS/settle.log" 2>&1 &
settle_pid=$!
TOKEN_FILE=$DATA/admin.token
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
NAME=$(basename "$SCENARIO" .json)
SALE=rehearsal-$NAME-$STAMP
echo "quickstart: flashgate is up: http://127.0.0.1:$PORT (admin http://127.0.0.1:$ADMIN_PORT, token in $TOKEN_FILE)"
echo "quickstart: Kafka bootstrap $(cat "$DATA/kafka.bootstrap"), orders settle into $DATA/orders.db"
echo "quickstart: logs in $LOGS"
echo "quickstart: rehearsing the $NAME sale as $SALE (the standard one takes about 30 s)..."
OUT=$RESULTS/$STAMP
rc=0
"$BIN/flashgate-load" --scenario "$SCENARIO" --sale "$SALE" \
    --target "http://127.0.0.1:$PORT" --admin "http://127.0.0.1:$ADMIN_PORT" \
    --admin-token "@$TOKEN_FILE" --kafka-brokers "$DATA/kafka.bootstrap" \
    --db "$DATA/orders.db" --identity-key "$DATA/identity.key" --out "$OUT" || rc=$?
echo
echo "quickstart: rehearsal report: $OUT/report.html (figures: $OUT/report.json)"
[ $rc -eq 0 ] && echo "quickstart: audit PASS" || echo "quickstart: flashgate-load exited $rc (1 = audit FAIL)"
if [ "${QUICKSTART_EXIT:-0}" = 1 ]; then
    stop
    exit $rc
fi
cat <<TXT

flashgate keeps running. Try a sale of your own (README.md walks through it):
  T=\$(cat $TOKEN_FILE)
  curl -s -X PUT -H "Authorization: Bearer \$T" localhost:$ADMIN_PORT/admin/v1/sales/demo -d '{"stock":2,"per_user_limit":1}'
  A=\$($BIN/flashgate-token --data-dir $DATA alice)
  curl -s -X POST -H 'Content-Type: application/json' -H "Authorization: Bearer \$A" localhost:$PORT/v1/sales/demo/orders -d '{"qty":1}'
  curl -s localhost:$PORT/v1/sales/demo
Ctrl-C stops flashgate-settle and flashgate.
TXT
# Returns when a server exits on its own (or a signal's trap runs first).
wait "$fg_pid"
