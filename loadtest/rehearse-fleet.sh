#!/usr/bin/env bash
# Dress rehearsal on a fleet: a redis-server, three flashgate gateways sharing
# it (--inventory redis://...; the first runs the embedded Kafka broker, the
# other two publish to it) and flashgate-settle, all on loopback in a temp dir;
# runs a scenario with the three gateways as its targets (round robin), audits
# (stock through the first gateway's admin API, the topic, the database) and
# stops what it started. The scenario's own targets and admin are overridden.
# Buyers are verified (identity.mode=jwt, the default) against one key for the
# whole fleet, as a shop's login service would sign: flashgate-token generates
# it in $TMP/keys, every gateway reads its public JWK set (identity.jwks_file,
# so none trusts its own data-dir key) and flashgate-load mints with it.
#
#   loadtest/rehearse-fleet.sh [SCENARIO.json] [extra flashgate-load flags...]
#
# FLASHGATE_BIN: directory holding flashgate, flashgate-settle, flashgate-load
# (default: build/ beside this repository). FLASHGATE_REHEARSAL_ARGS: extra
# flags for every gateway.
set -u
SRC=$(cd "$(dirname "$0")/.." && pwd)
FLASHGATE_BIN=${FLASHGATE_BIN:-$SRC/build}
case $FLASHGATE_BIN in /*) ;; *) FLASHGATE_BIN=$PWD/$FLASHGATE_BIN ;; esac
FG=$FLASHGATE_BIN/flashgate
LOAD=$FLASHGATE_BIN/flashgate-load
SETTLE=$FLASHGATE_BIN/flashgate-settle
REDIS=$(command -v redis-server || true)
for b in "$FG" "$LOAD" "$SETTLE" "$FLASHGATE_BIN/flashgate-token" "$REDIS"; do
    if [ ! -x "$b" ]; then
        echo "rehearse-fleet: ${b:-redis-server} not found (build first; redis-server from deploy/install-deps.sh)" >&2
        exit 2
    fi
done
SCENARIO=${1:-$SRC/loadtest/scenarios/bot-heavy-fair.json}
[ $# -gt 0 ] && shift

TMP=$(mktemp -d /tmp/flashgate-fleet-XXXXXX)
TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_url() {
    for _ in $(seq 1 150); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

RPORT=$(free_port)
mkdir -p "$TMP/redis"
"$REDIS" --port "$RPORT" --bind 127.0.0.1 --dir "$TMP/redis" --save '' --appendonly no \
    >"$TMP/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 50); do
    (exec 3<>/dev/tcp/127.0.0.1/$RPORT) 2>/dev/null && break
    sleep 0.1
done

mkdir -p "$TMP/keys"
if ! "$FLASHGATE_BIN/flashgate-token" --data-dir "$TMP/keys" --init --jwks >"$TMP/jwks.json"; then
    echo "rehearse-fleet: flashgate-token could not make the fleet's key" >&2
    exit 3
fi

TARGETS=""
ADMIN=""
for i in 1 2 3; do
    port=$(free_port)
    admin=$(free_port)
    brokers=()
    [ "$i" -gt 1 ] && brokers=(--kafka-brokers "$(cat "$TMP/g1/kafka.bootstrap")")
    "$FG" --listen 127.0.0.1:$port --admin-listen 127.0.0.1:$admin --data-dir "$TMP/g$i" \
        --inventory "redis://127.0.0.1:$RPORT" --admin-token "$TOKEN" \
        --server-trusted-proxies 127.0.0.1/32 --log-level warn "${brokers[@]}" \
        --identity-jwks-file "$TMP/jwks.json" \
        ${FLASHGATE_REHEARSAL_ARGS:-} >"$TMP/g$i.log" 2>&1 &
    PIDS+=($!)
    if ! wait_url "http://127.0.0.1:$port/readyz"; then
        echo "rehearse-fleet: gateway $i did not become ready:" >&2
        tail -20 "$TMP/g$i.log" >&2
        exit 3
    fi
    if [ "$i" -eq 1 ]; then
        ADMIN=http://127.0.0.1:$admin
        for _ in $(seq 1 100); do [ -s "$TMP/g1/kafka.bootstrap" ] && break; sleep 0.1; done
        if [ ! -s "$TMP/g1/kafka.bootstrap" ]; then
            echo "rehearse-fleet: gateway 1 wrote no kafka.bootstrap (embedded broker not up)" >&2
            exit 3
        fi
    fi
    TARGETS=${TARGETS:+$TARGETS,}http://127.0.0.1:$port
done
"$SETTLE" --data-dir "$TMP/g1" --log-level warn >"$TMP/settle.log" 2>&1 &
PIDS+=($!)
echo "rehearse-fleet: gateways $TARGETS on redis 127.0.0.1:$RPORT, data in $TMP" >&2
OUT=$SRC/loadtest/results/fleet-$(date -u +%Y%m%dT%H%M%SZ)
"$LOAD" --scenario "$SCENARIO" --target "$TARGETS" --admin "$ADMIN" --admin-token "$TOKEN" \
    --kafka-brokers "$TMP/g1/kafka.bootstrap" --db "$TMP/g1/orders.db" \
    --identity-key "$TMP/keys/identity.key" --out "$OUT" "$@"
rc=$?
echo
echo "rehearse-fleet: report in $OUT/report.html (figures in $OUT/report.json)"
[ $rc -eq 0 ] && echo "rehearse-fleet: audit PASS" || echo "rehearse-fleet: flashgate-load exited $rc (1 = audit FAIL)"
exit $rc
