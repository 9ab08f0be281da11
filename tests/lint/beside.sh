#!/bin/sh
# Runs the lint stage (tests/lint/run.sh BUILD_DIR) beside a command, on the CPU
# time the command leaves idle, then prints the lint's output and fails if either
# failed. Usage: tests/lint/beside.sh BUILD_DIR COMMAND [ARG...]
#
# make test runs its test stages as the command: their ctest runs wait on
# timers, servers and Kafka far more than they compute, while cppcheck and
# clang-tidy only compute. The lint runs at SCHED_IDLE (chrt -i; nice 19
# without chrt), so the kernel gives it a core only when no test wants one:
# the tests keep the CPU time they had without it (caches and memory bandwidth
# stay shared), and the lint checks the same files with the same tools as
# `make lint`. BUILD_DIR must be configured and
# built (clang-tidy reads its compile_commands.json and generated headers).
set -u
build=${1:?usage: beside.sh BUILD_DIR COMMAND [ARG...]}
shift
src=$(cd "$(dirname "$0")/../.." && pwd)
case $build in /*) ;; *) build=$(pwd)/$build ;; esac
# make -n runs the recipe line that calls $(MAKE), hence this script: print, run nothing
# (make's one-letter flags are the first word of MAKEFLAGS)
flags=${MAKEFLAGS:-}
flags=${flags%% *}
case $flags in --*) ;; *n*) exec "$@" ;; esac
log=$build/lint.log
idle="nice -n 19"
if command -v chrt >/dev/null && chrt -i 0 true 2>/dev/null; then
    idle="chrt -i 0"
fi
# A session of its own (setsid), so that a failing command stops the whole lint
# (run-clang-tidy's clang-tidy processes too) with one kill of its group.
setsid $idle sh "$src/tests/lint/run.sh" "$build" >"$log" 2>&1 &
lint=$!
trap 'kill -TERM -$lint 2>/dev/null || kill -TERM $lint 2>/dev/null' EXIT
trap 'exit 130' INT TERM HUP PIPE
"$@"
rc=$?
if [ "$rc" != 0 ]; then
    echo "lint: stopped (the command beside it failed; its log so far: $log)" >&2
    exit "$rc"
fi
wait "$lint"
lrc=$?
trap - EXIT
cat "$log"
exit "$lrc"
