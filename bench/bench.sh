#!/bin/sh
# flashgate benchmarks: nginx `return 200` against flashgate's buy path, with
# wrk (closed loop) and flashgate-load (open loop), plus settlement and the Redis
# backend. Everything on 127.0.0.1, bounded in time, stopped by PID at the end.
#
#   sh bench/bench.sh                 # full run (~5 min)
#   BENCH_QUICK=1 sh bench/bench.sh   # ~1 min smoke pass
# then bench/bench_identity.py: the identity section (jwt against none and nginx, ~4 min;
# ~30 s quick), and bench/bench_mem.py: bytes of gateway memory per accepted order (1M
# orders; 50k with BENCH_QUICK=1, ~5 s).
#
# Environment: FLASHGATE_BIN (dir with flashgate, flashgate-settle,
# flashgate-load; default build/), BENCH_REPS (3), BENCH_SECONDS (5),
# BENCH_QUICK (0). See bench/README.md for how to read the figures.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
for t in python3 wrk; do
    command -v "$t" >/dev/null 2>&1 || { echo "bench: $t not found (deploy/ installs it)" >&2; exit 2; }
done
case "${BENCH_ONLY:-}" in
mem|identity) ;;
*) python3 "$HERE/bench.py" "$@" ;;
esac
# what verified buyer identity costs, against none and nginx (BENCH_ONLY=identity: alone)
case "${BENCH_ONLY:-}" in
""|identity) python3 "$HERE/bench_identity.py" ;;
esac
# gateway memory per accepted order, same run (BENCH_ONLY=mem: alone)
case "${BENCH_ONLY:-}" in
""|mem) exec python3 "$HERE/bench_mem.py" ;;
esac
