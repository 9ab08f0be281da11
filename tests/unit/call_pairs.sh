#!/bin/sh
# Mutual call pairs between the .c files of one folder: file A calls a
# function defined in B and B calls one defined in A. Read with nm on the
# built objects (an undefined symbol of A that B defines as a text symbol);
# static functions are local to their file and do not count.
#
# Usage: call_pairs.sh <object dir> [--src DIR] [--max N] [<file.c>...]
#   <object dir>  the folder's objects, e.g. build/CMakeFiles/flashgate_gateway.dir/gateway/buy
#   --src DIR     the folder's sources: an object whose .c is gone (a file
#                 removed since the last full build) is left out.
#   <file.c>...   only pairs whose two files are both in this list (shell
#                 patterns allowed, e.g. 'gw_fair*.c'); without it, every file.
#   --max N       exit 1 when more than N pairs are found (a ceiling that a
#                 change cannot raise without editing the caller).
# Prints one line per pair, "A <-> B: A calls f, g; B calls h", then the count.
set -eu

[ $# -ge 1 ] || { echo "usage: $0 <object dir> [--max N] [<file.c>...]" >&2; exit 2; }
dir=$1
shift
max=
src=
while :; do
    case ${1:-} in
    --max) max=$2; shift 2 ;;
    --src) src=$2; shift 2 ;;
    *) break ;;
    esac
done

objs=
for o in "$dir"/*.c.o; do
    [ -e "$o" ] || { echo "call_pairs: no objects in $dir" >&2; exit 2; }
    f=${o##*/}
    f=${f%.o}
    keep=1
    [ -z "$src" ] || [ -e "$src/$f" ] || keep=0
    if [ "$keep" -gt 0 ] && [ $# -gt 0 ]; then
        keep=0
        for p in "$@"; do
            # shellcheck disable=SC2254
            case $f in $p) keep=1 ;; esac
        done
    fi
    [ "$keep" -gt 0 ] && objs="$objs $o"
done
[ -n "$objs" ] || { echo "call_pairs: no object matches" >&2; exit 2; }

# shellcheck disable=SC2086
out=$(nm -A $objs | sed -E 's/^([^:]*):[[:space:]]*[0-9a-f]*[[:space:]]+/\1 /' | awk '
    { f = $1; sub(/.*\//, "", f); sub(/\.o$/, "", f) }
    $2 == "U" { use[++n] = f " " $3; next }
    $2 == "T" { def[$3] = f }
    END {
        for (i = 1; i <= n; i++) {
            split(use[i], x, " ")
            if (!(x[2] in def) || def[x[2]] == x[1]) continue
            k = x[1] SUBSEP def[x[2]]
            if (k in calls) calls[k] = calls[k] ", " x[2]
            else calls[k] = x[2]
        }
        for (k in calls) {
            split(k, ab, SUBSEP)
            if (ab[1] >= ab[2] || !((ab[2], ab[1]) in calls)) continue
            print ab[1] " <-> " ab[2] ": " ab[1] " calls " calls[k] "; " ab[2] " calls " calls[ab[2], ab[1]]
        }
    }' | sort)
[ -n "$out" ] && printf '%s\n' "$out"
count=$(printf '%s' "$out" | grep -c . || true)
echo "mutual call pairs: $count"
if [ -n "$max" ] && [ "$count" -gt "$max" ]; then
    echo "call_pairs: $count pairs, more than the ceiling $max: break the new pair (see docs/design.md) rather than raise it" >&2
    exit 1
fi
