#!/bin/sh
# Static analysis, clean or failing: cppcheck (warnings, performance,
# portability; suppressions in tests/lint/cppcheck.supp or inline with a
# reason), clang-tidy (.clang-tidy: clang's analyzer and bugprone-*; every
# warning an error) and Redocly's lint of docs/openapi.yaml
# (tests/openapi/lint.sh). Usage: tests/lint/run.sh BUILD_DIR (needs its
# compile_commands.json, which every CMake build here writes).
set -eu
build=${1:-build}
src=$(cd "$(dirname "$0")/../.." && pwd)
cd "$src"
dirs="common gateway inventory queue settle loadtest identity sim"
jobs=$(nproc 2>/dev/null || echo 2)
echo "lint: cppcheck $(cppcheck --version | cut -d' ' -f2)"
cppcheck --enable=warning,performance,portability --inline-suppr --std=c11 -q -I . \
    -D_GNU_SOURCE --suppress=missingIncludeSystem --suppressions-list=tests/lint/cppcheck.supp \
    --error-exitcode=1 -j "$jobs" $(for d in $dirs; do [ -d "$d" ] && echo "$d"; done)
echo "lint: clang-tidy $(clang-tidy --version | sed -n 's/.*version \([0-9.]*\).*/\1/p' | head -1)"
re="^$src/($(echo $dirs | tr ' ' '|'))/"
# The files of these folders, each once per set of -D/-U flags: clang-tidy analyses
# a file once for every entry the database has for it, and the simulator compiles
# ten of gateway/'s files again with the same defines (only its include paths added).
db=$(mktemp -d)
trap 'rm -rf "$db"' EXIT
python3 - "$build/compile_commands.json" "$re" "$db/compile_commands.json" <<'PY'
import json, re, shlex, sys
entries, keep, seen = json.load(open(sys.argv[1])), [], set()
for e in entries:
    args = e.get("arguments") or shlex.split(e["command"])
    key = (e["file"], tuple(a for a in args if a.startswith(("-D", "-U"))))
    if re.match(sys.argv[2], e["file"]) and key not in seen:
        seen.add(key)
        keep.append(e)
json.dump(keep, open(sys.argv[3], "w"))
sys.exit(0 if keep else "lint: no file of the folders in " + sys.argv[1])
PY
# gcc's link-time optimisation flags (release builds, CMakeLists.txt) are not clang's
out=$(run-clang-tidy -p "$db" -j "$jobs" -quiet \
    -extra-arg=-Wno-ignored-optimization-argument "$re" 2>&1) || true
if echo "$out" | grep -E "(warning|error): " >/dev/null; then
    echo "$out" | grep -E -A3 "(warning|error): " >&2
    echo "lint: clang-tidy found problems" >&2
    exit 1
fi
sh "$src/tests/openapi/lint.sh" "$build"
echo "lint: clean"
