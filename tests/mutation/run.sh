#!/bin/bash
# The suite's teeth, measured: plants each bug of tests/mutation/mutants/*.mut
# (one realistic bug on a promise each) in a copy of the tree, builds only the
# test programs that should catch it, runs them, and fails if one survives.
#
#   tests/mutation/run.sh [REGEX]     (make mutation)
#
# REGEX picks mutants by file name (default: all). The copy (tracked and
# untracked, not ignored, files of this worktree) goes to a temporary folder;
# the working tree is never touched. Before any mutant, the same tests must
# pass on the unchanged copy. A mutant that no longer applies (its lines
# changed: mutant.py says where it looked) is reported STALE and fails the
# run at the end, by name; the others still run. A mutant marked "pending:"
# (its catching test is not written yet) that survives is reported, not
# failed. Prints a table: mutant, result, the tests that failed, their
# seconds, the build's seconds; then, per mutant, the first check that failed.
# JOBS (default: nproc) is the build's parallelism; tests run one at a time.
# KEEP_LOGS=1 keeps each mutant's build and test log (they are kept on a failure).
set -u
SRC=$(cd "$(dirname "$0")/../.." && pwd)
MUT_DIR=${MUT_DIR:-$SRC/tests/mutation/mutants} # another folder: a test of this runner
PICK=${1:-.}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
TMP=$(mktemp -d /tmp/fg-mutation-XXXXXX)
KEEP=${KEEP_LOGS:-0}
cleanup() {
    if [ "$KEEP" = 1 ]; then
        echo "logs kept in $TMP/logs"
        rm -rf "$TMP/src" "$TMP/orig" "$TMP/build"
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
mkdir -p "$TMP/src" "$TMP/orig" "$TMP/logs"

say() { printf '%s\n' "$*" >&2; }

# The copy: what this worktree holds now, committed or not, without build dirs.
(cd "$SRC" && git ls-files -co --exclude-standard | while IFS= read -r p; do
    [ -e "$p" ] && printf '%s\n' "$p"
done | tar -T - -cf -) | tar -xf - -C "$TMP/src" || { say "cannot copy the tree"; exit 2; }
cp -a "$TMP/src/." "$TMP/orig/"
B=$TMP/build

mutants=()
for f in "$MUT_DIR"/*.mut; do
    if basename "$f" .mut | grep -Eq -- "$PICK"; then
        mutants+=("$f")
    fi
done
[ ${#mutants[@]} -gt 0 ] || { say "no mutant matches '$PICK'"; exit 2; }

say "configuring $B"
# shellcheck disable=SC2086 # CMAKE_FLAGS: words (e.g. the compiler launcher)
cmake -S "$TMP/src" -B "$B" -DFLASHGATE_WERROR=ON ${CMAKE_FLAGS:-} >"$TMP/logs/cmake.log" 2>&1 ||
    { KEEP=1; say "cmake failed (logs/cmake.log)"; exit 2; }

# ctest names of a regex.
tests_of() { (cd "$B" && ctest -N -R "$1" 2>/dev/null | sed -n 's/^ *Test *#[0-9]*: //p'); }
# The build targets of ctest names: a unit or contract test's program has its
# name; an integration test runs the binaries (the mutant's "build:", by
# default flashgate and flashgate-spool).
targets_of() { # names... (M_BUILD from the mutant)
    local t out="" integ=0
    for t in "$@"; do
        case $t in
        unit.* | contract.*) out="$out $t" ;;
        *) integ=1 ;;
        esac
    done
    if [ -n "$M_BUILD" ]; then
        out="$out $M_BUILD"
    elif [ "$integ" = 1 ]; then
        out="$out flashgate flashgate-spool"
    fi
    echo "$out"
}

# A stale mutant is set aside (reported and failed at the end); the baseline
# is every test a mutant that applies relies on, passing on the unchanged tree.
# (One regex of names: CMake's regexes take at most 9 groups.)
rows=()
cases=()
stale=()
runnable=()
baseline=""
btargets=""
for f in "${mutants[@]}"; do
    eval "$(python3 "$SRC/tests/mutation/mutant.py" show "$f")" || exit 2
    if ! why=$(python3 "$SRC/tests/mutation/mutant.py" check "$f" "$TMP/src" 2>&1); then
        stale+=("$M_NAME")
        rows+=("$M_NAME|STALE|$(echo "$why" | head -1 | cut -c1-200)|-|-")
        say "STALE $why"
        continue
    fi
    runnable+=("$f")
    names=$(tests_of "$M_TESTS" | tr '\n' ' ')
    baseline="$baseline $names"
    # shellcheck disable=SC2086
    btargets="$btargets $(targets_of $names)"
done
uniq_words() { echo "$*" | tr ' ' '\n' | sed '/^$/d' | sort -u | tr '\n' ' '; }
baseline=$(uniq_words "$baseline")
btargets=$(uniq_words "$btargets")
if [ ${#runnable[@]} -gt 0 ]; then
    [ -n "$baseline" ] || { say "no test matches any mutant's tests"; exit 2; }
    all_regex="^($(echo "$baseline" | sed 's/ $//; s/\./\\./g; s/ /|/g'))\$"
    say "building $btargets"
    t0=$(date +%s)
    # shellcheck disable=SC2086
    nice cmake --build "$B" -j"$JOBS" --target $btargets >"$TMP/logs/build-baseline.log" 2>&1 ||
        { KEEP=1; say "baseline build failed (logs/build-baseline.log)"; exit 2; }
    say "built in $(($(date +%s) - t0)) s; baseline run"
    (cd "$B" && nice ctest -R "$all_regex" --output-on-failure --timeout 600) >"$TMP/logs/baseline.log" 2>&1 ||
        { KEEP=1; say "the tests fail on the unchanged tree (logs/baseline.log)"; tail -20 "$TMP/logs/baseline.log" >&2; exit 2; }
    say "baseline passes: $(grep -c ' Passed ' "$TMP/logs/baseline.log") tests"
fi

# The first line of a test log that says which check failed: a cmocka
# assertion or fail_msg ("ERROR: ...", "file.c:12: error: ..."), an
# integration test's "FAIL: ..." (fg.py check/eq), a Python traceback's last
# line, a sanitizer's report.
first_check() {
    local loc msg
    loc=$(grep -m1 -oE '[A-Za-z0-9_./-]+\.(c|py):[0-9]+: error: ' "$1" | sed -E 's/: error: $//; s|.*/||')
    msg=$(grep -m1 -E '^[0-9]+: (FAIL: |ERROR: |\[  ERROR   \] )|^(FAIL: |ERROR: |\[  ERROR   \] )|^(([0-9]+: )?cmocka: )?(\[  ERROR   \] --- )?[^[ ].* != |^[0-9]*:? ?[A-Za-z]*Error: |runtime error: |ERROR: AddressSanitizer' "$1" |
        sed -E 's/^[0-9]+: //; s/^cmocka: //; s/^\[  ERROR   \] --- //')
    echo "${loc:+$loc: }$msg" | cut -c1-160
}

survivors=0
for f in "${runnable[@]}"; do
    eval "$(python3 "$SRC/tests/mutation/mutant.py" show "$f")"
    log=$TMP/logs/$M_NAME.log
    changed=$(python3 "$SRC/tests/mutation/mutant.py" apply "$f" "$TMP/src" 2>"$log")
    if [ -z "$changed" ]; then
        rows+=("$M_NAME|NOT APPLIED|$(head -1 "$log")|-|-")
        survivors=$((survivors + 1))
        continue
    fi
    names=$(tests_of "$M_TESTS" | tr '\n' ' ')
    # shellcheck disable=SC2086
    targets=$(targets_of $names)
    t0=$(date +%s%N)
    # shellcheck disable=SC2086
    if [ -z "${names// /}" ] && [ -n "$M_PENDING" ]; then
        result="expected: unit test pending"; caught="(no test matches yet)"; tsec=-; bsec=-
    elif [ -z "${names// /}" ]; then
        result="NO TEST"; caught="no test matches $M_TESTS"; tsec=-; bsec=-
    elif ! nice cmake --build "$B" -j"$JOBS" --target $targets >>"$log" 2>&1; then
        result="BUILD FAILED"; caught="see $M_NAME.log"; tsec=-
        bsec=$((($(date +%s%N) - t0) / 1000000000))
    else
        bsec=$((($(date +%s%N) - t0) / 1000000000))
        (cd "$B" && nice ctest -R "$M_TESTS" --output-on-failure --timeout 600) >>"$log" 2>&1
        # "1/2 Test #7: unit.oq_relay ......***Failed   31.25 sec"
        failed=$(grep -E '^ *[0-9]+/[0-9]+ Test +#[0-9]+: ' "$log" | grep -v ' Passed ' |
            sed -E 's/^.*Test +#[0-9]+: ([^ ]+) .* ([0-9.]+) sec$/\1 \2/')
        if [ -n "$failed" ]; then
            result="caught"
            caught=$(echo "$failed" | awk '{print $1}' | tr '\n' ' ' | sed 's/ $//')
            tsec=$(echo "$failed" | awk 'NR==1 || $2 < m {m = $2} END {printf "%.1f", m}')
            fcases=$(grep -E '^([0-9]+: )?\[  FAILED  \] [A-Za-z_0-9]+$' "$log" | sed 's/^.* //' |
                sort -u | tr '\n' ' ')
            cases+=("$M_NAME: ${fcases:+[$fcases] }$(first_check "$log")")
        elif [ -n "$M_PENDING" ]; then
            result="expected: unit test pending"; caught="-"; tsec=-
        else
            result="SURVIVED"; caught="-"; tsec=-
        fi
    fi
    case $result in caught | "expected: unit test pending") ;; *) survivors=$((survivors + 1)) ;; esac
    rows+=("$M_NAME|$result|$caught|$tsec|$bsec")
    say "$M_NAME: $result${caught:+ ($caught)}"
    for rel in $changed; do # back to the unchanged file (a new mtime: rebuilt next time)
        cp "$TMP/orig/$rel" "$TMP/src/$rel" && touch "$TMP/src/$rel"
    done
done

printf '\n%-40s %-12s %-60s %7s %7s\n' "mutant" "result" "caught by" "test s" "build s"
for r in "${rows[@]}"; do
    IFS='|' read -r n res by ts bs <<<"$r"
    printf '%-40s %-12s %-60s %7s %7s\n' "$n" "$res" "$by" "$ts" "$bs"
done
echo "test s: the shortest run among the programs that failed (ctest's time of it)"
echo "the check that failed first, per mutant (and the cmocka cases that failed):"
for c in "${cases[@]}"; do
    echo "  $c"
done
rc=0
if [ "$survivors" -gt 0 ]; then
    echo "FAIL: $survivors mutant(s) survived or could not be run"
    rc=1
fi
if [ ${#stale[@]} -gt 0 ]; then
    echo "FAIL: ${#stale[@]} stale mutant(s), no longer applying: ${stale[*]}"
    echo "      (python3 tests/mutation/mutant.py check-all tests/mutation/mutants . says where each looked)"
    rc=1
fi
if [ "$rc" != 0 ]; then
    KEEP=1
    exit 1
fi
echo "every mutant was caught (pending ones listed as such)"
