#!/bin/sh
# The overload benchmark: dependency-bound, CPU-bound and mixed
# page load at 1x, 2x, 5x and 10x of the measured capacity, protection on and
# off side by side. Caps processes with cgroup v1 cpu quotas (needs root).
#
#   sh bench/overload.sh            # full run (~12 min: 3 rounds of every load)
#   sh bench/overload.sh --quick    # ~3 min
#   sh bench/overload.sh --smoke    # ~20 s, no targets (what the test suite runs)
#
# FLASHGATE_BIN: directory with flashgate and flashgate-load (default build/).
# Results: bench/results/overload-<UTC>/ (overload.json, overload.png). See bench/README.md.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
for t in python3 redis-server gnuplot; do
    command -v "$t" >/dev/null 2>&1 || { echo "bench-overload: $t not found (deploy/install-deps.sh installs it)" >&2; exit 2; }
done
exec python3 "$HERE/overload.py" "$@"
