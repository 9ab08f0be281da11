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
# Then both keep serving until Ctrl-C (QUICKSTART_EXIT=1: stop after the
# rehearsal). The rehearsal's crowd arrives with X-Forwarded-For addresses
# from the local load tester, so 127.0.0.1 is a trusted proxy here.
set -eu
SRC=$(cd "$(dirname "$0")/.." && pwd)
BIN=${FLASHGATE_BIN:-$SRC/build}
DATA=${FLASHGATE_DATA_DIR:-$SRC/data}
mkdir -p "$DATA"
LOGS=$DATA/logs
mkdir -p "$LOGS"

pids=""
stop() {
    for p in $pids; do kill "$p" 2>/dev/null || true; done
    for p in $pids; do wait "$p" 2>/dev/null || true; done
}
trap 'stop; exit 130' INT TERM
trap stop EXIT

"$BIN/flashgate" --data-dir "$DATA" --server-trusted-proxies 127.0.0.1/32 \
    >"$LOGS/flashgate.log" 2>&1 &
pids="$!"
i=0
until curl -fsS -o /dev/null http://127.0.0.1:8080/readyz 2>/dev/null; do
    i=$((i + 1))
    if [ $i -gt 100 ] || ! kill -0 "$pids" 2>/dev/null; then
        echo "quickstart: flashgate did not start; its log:" >&2
        tail -20 "$LOGS/flashgate.log" >&2
        exit 1
    fi
    sleep 0.1
done
"$BIN/flashgate-settle" --data-dir "$DATA" >"$LOGS/settle.log" 2>&1 &
pids="$pids $!"
TOKEN_FILE=$DATA/admin.token
echo "quickstart: flashgate is up: http://127.0.0.1:8080 (admin http://127.0.0.1:9090, token in $TOKEN_FILE)"
echo "quickstart: Kafka bootstrap $(cat "$DATA/kafka.bootstrap"), orders settle into $DATA/orders.db"
echo "quickstart: logs in $LOGS"
echo "quickstart: rehearsing the standard sale (about 30 s)..."
OUT=$SRC/loadtest/results/$(date -u +%Y%m%dT%H%M%SZ)
rc=0
"$BIN/flashgate-load" --scenario "$SRC/loadtest/scenarios/standard.json" \
    --target http://127.0.0.1:8080 --admin http://127.0.0.1:9090 --admin-token "@$TOKEN_FILE" \
    --kafka-brokers "$DATA/kafka.bootstrap" --db "$DATA/orders.db" --out "$OUT" || rc=$?
echo
echo "quickstart: rehearsal report: $OUT/report.html (figures: $OUT/report.json)"
[ $rc -eq 0 ] && echo "quickstart: audit PASS" || echo "quickstart: flashgate-load exited $rc (1 = audit FAIL)"
if [ "${QUICKSTART_EXIT:-0}" = 1 ]; then
    exit $rc
fi
cat <<TXT

flashgate keeps running. Try a sale of your own (README.md walks through it):
  T=\$(cat $TOKEN_FILE)
  curl -s -X PUT -H "Authorization: Bearer \$T" localhost:9090/admin/v1/sales/demo -d '{"stock":2,"per_user_limit":1}'
  curl -s -X POST -H 'Content-Type: application/json' localhost:8080/v1/sales/demo/orders -d '{"user_id":"alice"}'
  curl -s localhost:8080/v1/sales/demo
Ctrl-C stops flashgate and flashgate-settle.
TXT
wait
