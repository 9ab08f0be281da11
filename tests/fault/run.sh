#!/bin/bash
# The fault suite, one command: runs each fault scenario against the real
# binaries (loopback only, bounded in time) and prints a table. Every scenario
# asserts: no oversell, no lost 202 order, a clear error on the affected path,
# recovery without a restart (beyond the one a kill -9 scenario makes).
# Usage: tests/fault/run.sh [BUILD_DIR]    (also: make faults)
set -u
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
export FLASHGATE_BIN=$(cd "${1:-$src/build}" && pwd)
export FLASHGATE_SRC=$src
it=$src/tests/integration
# fault | scenario (test[:part]) | what the test asserts beyond the common promises
rows=(
  "kill -9 gateway mid-burst|13-kill9|spool replay rebuilds stock and per-user counts; sells exactly its stock"
  "kill -9 gateway + settle|31-queue-faults|B/C: every 202 settled exactly once after restarts"
  "Kafka broker down|31-queue-faults|A: 202s keep coming into the spool; all reach the DB once it is back"
  "Kafka broker slow (1.5 s rtt)|34-broker-slow|answers do not wait (max < 1 s); all settle once it is fast"
  "redis-server killed, restarted|61-fleet-faults|A: buy path 503 fast (fail closed), recovers by itself"
  "fleet gateway kill -9|61-fleet-faults|B: the others keep selling; no lost 202"
  "data dir disk full|17-disk-full|A: 503 names the spool; accepted again once space is freed"
  "file descriptors exhausted|17-disk-full|B: cap fits RLIMIT_NOFILE 256; 400 idle conns; every buy 202"
  "spool fills the disk, Kafka down|17-disk-full|C: once delivered, released segments free the disk; 202 again"
  "audit log's disk fails (EIO)|27-audit-read-error|GET audit and rollback 500, nothing changes; buys 202; changes done, unaudited"
  "wall clock stepped back 1 h|29-clock-step|ids unique and ordered across the step and a restart"
  "20,000-style slow connections|16-slow-conns|buyers all 202; slow conns closed by the head deadline"
)
declare -A result secs checks
fail=0
figs=$(mktemp)
for t in $(printf '%s\n' "${rows[@]}" | cut -d'|' -f2 | sort -u); do
    log=$(mktemp)
    start=$(date +%s.%N)
    timeout 600 python3 "$it/$t.py" >"$log" 2>&1
    rc=$?
    secs[$t]=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    checks[$t]=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -1)
    if [ $rc -eq 0 ]; then result[$t]=ok; else result[$t]=FAIL; fail=1; fi
    if [ $rc -ne 0 ]; then
        echo "---- $t failed (rc $rc):" >&2
        grep -E 'FAIL|Error|Traceback' "$log" | head -20 >&2
    fi
    grep -E '^(disk full|fds|clock step|slow broker|buyer|slow clients|guard|per-address):' "$log" |
        sed "s/^/  [$t] /" >>"$figs"
    rm -f "$log"
done
printf '\n%-32s %-19s %-6s %7s  %-18s %s\n' fault test result seconds checks "asserted"
for row in "${rows[@]}"; do
    IFS='|' read -r fault t what <<<"$row"
    printf '%-32s %-19s %-6s %7s  %-18s %s\n' "$fault" "$t" "${result[$t]}" "${secs[$t]}" \
        "${checks[$t]}" "$what"
done
echo
echo "figures:"
cat "$figs"
rm -f "$figs"
exit $fail
