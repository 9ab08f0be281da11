#!/bin/sh
# tsan_reports.sh DIR CMD [ARG...]: run one concurrency test (a script that starts
# TSan-built gateways) with every ThreadSanitizer report of every process it starts
# written under DIR (TSAN_OPTIONS log_path, one file per process), and fail when
# there is one, whatever the test itself concluded.
#
# Why: a gateway test judges a gateway by its answers. A report kills the gateway
# (halt_on_error=1, exit 66) and the test fails only when it still talks to it;
# a report during the stop at its end (SIGTERM: the admin listener, the workers
# and the helper threads wind down together) was unseen, as fg.py's stop() hands
# the exit code back and most tests do not read it.
set -u
dir=$1
shift
rm -rf "$dir"
mkdir -p "$dir"
TSAN_OPTIONS="${TSAN_OPTIONS:-}:log_path=$dir/tsan"
export TSAN_OPTIONS
"$@"
rc=$?
found=0
for f in "$dir"/tsan.*; do
    [ -e "$f" ] || continue
    found=1
    echo "=== ThreadSanitizer report ($f) ==="
    cat "$f"
done
if [ "$found" = 1 ]; then
    echo "FAIL: ThreadSanitizer reported (above) in a process this test started"
    case $rc in 0 | 77) rc=1 ;; esac
fi
exit "$rc"
