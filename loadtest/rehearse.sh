#!/usr/bin/env bash
# Dress rehearsal of a flash sale on this machine: starts flashgate (embedded
# Kafka broker, in-memory stock) and, when built, flashgate-settle on loopback
# in a temp data dir, runs a scenario (default: standard, a 1,000-unit sale
# stormed by 100,000 users) with flashgate-load, audits the invariants and
# prints where the report is. Stops what it started. Buyers are verified
# (identity.mode=jwt, the default): flashgate-load mints every account's token
# from the gateway's data-dir key (--identity-key), whatever the scenario names;
# with FLASHGATE_REHEARSAL_ARGS="--identity-mode none" it sends none.
#
#   loadtest/rehearse.sh [SCENARIO.json] [extra flashgate-load flags...]
#
# FLASHGATE_BIN: directory holding flashgate, flashgate-settle, flashgate-load
# (default: build/ beside this repository, else the first build*/ that has them).
# FLASHGATE_REHEARSAL_ARGS: extra flags for flashgate (e.g. "--threads 2").
set -u
SRC=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${FLASHGATE_BIN:-}" ]; then
    FLASHGATE_BIN=$SRC/build
    if [ ! -x "$FLASHGATE_BIN/flashgate-load" ]; then
        for d in "$SRC"/build*/; do
            if [ -x "$d/flashgate" ] && [ -x "$d/flashgate-load" ]; then FLASHGATE_BIN=${d%/}; break; fi
        done
    fi
fi
FG=$FLASHGATE_BIN/flashgate
LOAD=$FLASHGATE_BIN/flashgate-load
SETTLE=$FLASHGATE_BIN/flashgate-settle
for b in "$FG" "$LOAD"; do
    if [ ! -x "$b" ]; then
        echo "rehearse: $b not found; build first (cmake -S . -B build && cmake --build build)" >&2
        exit 2
    fi
done
SCENARIO=${1:-$SRC/loadtest/scenarios/standard.json}
[ $# -gt 0 ] && shift

TMP=$(mktemp -d /tmp/flashgate-rehearsal-XXXXXX)
TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

PORT=$(free_port)
ADMIN=$(free_port)
"$FG" --listen 127.0.0.1:$PORT --admin-listen 127.0.0.1:$ADMIN --data-dir "$TMP/data" \
    --admin-token "$TOKEN" --server-trusted-proxies 127.0.0.1/32 --log-level warn \
    ${FLASHGATE_REHEARSAL_ARGS:-} >"$TMP/flashgate.log" 2>&1 &
PIDS+=($!)
ready=0
for _ in $(seq 1 100); do
    if curl -fsS -o /dev/null "http://127.0.0.1:$PORT/readyz" 2>/dev/null; then ready=1; break; fi
    sleep 0.1
done
if [ $ready -ne 1 ]; then
    echo "rehearse: flashgate did not become ready:" >&2
    tail -20 "$TMP/flashgate.log" >&2
    exit 3
fi
AUDIT=()
for _ in $(seq 1 20); do [ -s "$TMP/data/kafka.bootstrap" ] && break; sleep 0.1; done
if [ -s "$TMP/data/kafka.bootstrap" ]; then
    AUDIT+=(--kafka-brokers "$TMP/data/kafka.bootstrap")
    if [ -x "$SETTLE" ]; then
        "$SETTLE" --data-dir "$TMP/data" --log-level warn >"$TMP/settle.log" 2>&1 &
        PIDS+=($!)
        AUDIT+=(--db "$TMP/data/orders.db")
    fi
fi
echo "rehearse: flashgate on 127.0.0.1:$PORT (admin $ADMIN), data in $TMP/data" >&2
OUT=$SRC/loadtest/results/$(date -u +%Y%m%dT%H%M%SZ)
# the gateway's own key; none when FLASHGATE_REHEARSAL_ARGS chose another mode
KEY=$TMP/data/identity.key
[ -f "$KEY" ] || KEY=""
"$LOAD" --scenario "$SCENARIO" --target "http://127.0.0.1:$PORT" \
    --admin "http://127.0.0.1:$ADMIN" --admin-token "$TOKEN" "${AUDIT[@]}" \
    --identity-key "$KEY" --out "$OUT" "$@"
rc=$?
echo
echo "rehearse: report in $OUT/report.html (figures in $OUT/report.json)"
[ $rc -eq 0 ] && echo "rehearse: audit PASS" || echo "rehearse: flashgate-load exited $rc (1 = audit FAIL)"
exit $rc
