#!/bin/sh
# Runs every libFuzzer target for a bounded time, then every committed
# reproducer as a regression. Usage: tests/fuzz/run.sh BUILD_DIR [TARGET...]
#   FUZZ_SECONDS  time per target (default 10; CI's total stays ~60 s)
#   FUZZ_JOBS     targets fuzzed at once (default: the number of CPUs)
#   FUZZ_KEEP=1   keep the grown corpus in BUILD_DIR/fuzz/work (to seed better
#                 corpora by hand: commit only small, meaningful inputs)
# A crash prints the input's path (BUILD_DIR/fuzz/work/<target>/crash-*): copy
# it to tests/fuzz/crashes/<target>/ with a telling name and fix the bug; the
# unit.fuzz_<target> test replays it in every build from then on.
set -eu
build=$(cd "${1:?usage: run.sh BUILD_DIR [TARGET...]}" && pwd)
shift
src=$(cd "$(dirname "$0")" && pwd)
secs=${FUZZ_SECONDS:-10}
targets=${*:-$(cd "$build/fuzz" && ls fuzz_* | sed 's/^fuzz_//')}
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:allocator_may_return_null=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
jobs=${FUZZ_JOBS:-$(nproc 2>/dev/null || echo 2)}

# One target: its reproducers, then the fuzzer for $secs. Writes its table
# row to $work/row and fails (exit 1) on a crash or a failing reproducer.
fuzz_one() {
    t=$1
    bin=$build/fuzz/fuzz_$t
    work=$build/fuzz/work/$t
    rm -rf "$work"
    mkdir -p "$work/corpus"
    cp "$src/corpus/$t/"* "$work/corpus/" 2>/dev/null || true
    log=$work/log
    result=ok
    rc=0
    if [ -d "$src/crashes/$t" ] && ls "$src/crashes/$t/"* >/dev/null 2>&1; then
        if ! "$bin" -runs=0 "$src/crashes/$t/"* >"$work/replay.log" 2>&1; then
            result="REPRODUCER FAILS (see $work/replay.log)"
            rc=1
        fi
    fi
    if ! (cd "$work" && "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=1024 \
            -max_len=4096 -print_final_stats=1 corpus >"$log" 2>&1); then
        crash=$(ls "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-* 2>/dev/null |
                head -1 || true)
        result="CRASH ${crash:-see $log}"
        rc=1
        tail -40 "$log" >&2
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    ncorp=$(ls "$work/corpus" | wc -l)
    printf '%-10s %8s %8s %10s  %s\n' "$t" "$secs" "${runs:-?}" "$ncorp" "$result" >"$work/row"
    [ "${FUZZ_KEEP:-0}" = 1 ] || rm -rf "$work/corpus"
    return $rc
}

# $jobs targets at a time (each fuzzer is one process on one core: CI's two
# cores run two, and the stage takes half the time for the same fuzzing).
fail=0
pids=""
n=0
for t in $targets; do
    fuzz_one "$t" &
    pids="$pids $!"
    n=$((n + 1))
    if [ "$n" -ge "$jobs" ]; then
        for p in $pids; do wait "$p" || fail=1; done
        pids=""
        n=0
    fi
done
for p in $pids; do wait "$p" || fail=1; done
printf '%-10s %8s %8s %10s  %s\n' target seconds runs corpus result
for t in $targets; do
    cat "$build/fuzz/work/$t/row" 2>/dev/null || printf '%-10s %s\n' "$t" "no result"
done
exit $fail
