#!/bin/sh
# The gateway's interfaces, checked on the sources and on the built library.
#
# 1. The gateway sees the other modules through their public interfaces only:
#    no gateway file includes hiredis, and a project include outside gateway/
#    and common/ is one of the public headers below (inventory/inv_redis.h,
#    inv_backend.h, inv_redis_lua.h, queue/oq_embedded.h, settle/... are private).
# 2. The gateway's folders are layers (docs/design.md "The gateway's folders"):
#    a folder includes the headers of the folders LAYERS lets it use, and no
#    other (gateway/main.c, above them all, may include any).
# 3. The same on the symbols (nm on the built library: what the code calls,
#    whatever it includes): each folder's undefined gw_* symbols are defined in
#    its own folder or one it may use. The transport (edge) reaches the layers
#    above only through the functions declared in gateway/edge/gw_upcall.h.
# Together, 2 and 3 say that the folders form a directed acyclic graph.
#
# Usage: gateway_interfaces.sh <source dir> [<libflashgate_gateway.a>]
#        gateway_interfaces.sh --selftest <source dir> <libflashgate_gateway.a>
#   Without the library, only 1 and 2 are checked. --selftest plants a
#   violation of each kind in a copy and fails unless the check catches each.

# folder: the folders it may use, besides itself. "gen" is the generated
# dashboard source (gw_dashboard_assets.c), which the admin API serves.
LAYERS='
base:
edge: base
overload: base edge
proxy: base edge overload
buy: base edge overload
http: base edge overload proxy buy
ctl: base edge overload proxy buy http gen
'

allowed() { # allowed <from> <to>: 0 if folder <from> may use folder <to>
    [ "$1" = "$2" ] && return 0
    [ "$1" = main ] && return 0
    printf '%s\n' "$LAYERS" | awk -v f="$1" -v t="$2" -F': *' '
        $1 == f { n = split($2, a, " "); for (i = 1; i <= n; i++) if (a[i] == t) ok = 1 }
        END { exit ok ? 0 : 1 }'
}

check() { # check <source dir> [<library>]
    src=$1
    lib=$2
    bad=0
    if grep -rnE --include='*.[ch]' '^[[:space:]]*#[[:space:]]*include[[:space:]]*<hiredis/' "$src"/gateway; then
        echo "gateway includes hiredis: speak Redis through inventory/inv_fleet.h" >&2
        bad=1
    fi
    if grep -rnE --include='*.[ch]' '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$src"/gateway |
        grep -vE '"(gateway(/[a-z]+)?|common)/[a-z_]+\.h"|"inventory/inv(_fleet)?\.h"|"identity/id\.h"|"queue/oq_(order|relay|spool)\.h"'; then
        echo "gateway includes another module's private header" >&2
        bad=1
    fi

    # 2. includes between folders
    folders=$(printf '%s\n' "$LAYERS" | sed -n 's/^\([a-z]*\):.*/\1/p')
    for f in $(cd "$src" && find gateway -name '*.[ch]' | sort); do
        case $f in
        gateway/*/*) from=$(echo "$f" | cut -d/ -f2) ;;
        *) from=main ;;
        esac
        if [ "$from" != main ] && ! printf '%s\n' $folders | grep -qx "$from"; then
            echo "$f: folder $from is not in the layers of $0" >&2
            bad=1
            continue
        fi
        for inc in $(sed -nE 's@^[[:space:]]*#[[:space:]]*include[[:space:]]*"gateway/([^"]*)".*@\1@p' "$src/$f"); do
            case $inc in
            */*) to=${inc%%/*} ;;
            *) to=top ;; # a header at gateway/'s top: none may exist
            esac
            if ! allowed "$from" "$to"; then
                echo "$f includes gateway/$inc: $from may not use $to" >&2
                bad=1
            fi
        done
    done

    # 3. symbols between folders
    if [ -n "$lib" ]; then
        if [ ! -f "$lib" ]; then
            echo "no library at $lib" >&2
            return 1
        fi
        upcalls=$(sed -nE 's/^[a-z].*[ *](gw_[a-z0-9_]+)\(.*/\1/p' "$src"/gateway/edge/gw_upcall.h | sort -u)
        if [ -z "$upcalls" ]; then
            echo "no upcalls read from gateway/edge/gw_upcall.h" >&2
            return 1
        fi
        # member -> folder, from where its source is
        tab=$(mktemp)
        (cd "$src" && find gateway -mindepth 2 -name '*.c') |
            awk -F/ '{ print $NF ".o", $2 }' >"$tab"
        # "member kind symbol" for every defined (T D B R ...) and undefined symbol
        syms=$(mktemp)
        nm -A "$lib" 2>/dev/null | sed -E 's/^[^:]*:([^:]*):[[:space:]]*[0-9a-f]*[[:space:]]+/\1 /' >"$syms"
        if [ ! -s "$syms" ]; then
            echo "nm read no symbols from $lib" >&2
            rm -f "$tab" "$syms"
            return 1
        fi
        out=$(awk -v upcalls="$upcalls" -v layers="$LAYERS" '
            FNR == NR { folder[$1] = $2; next }
            {
                f = ($1 in folder) ? folder[$1] : "gen"
                if ($2 == "U") { if ($3 ~ /^gw_/) { use[++n] = f " " $3 " " $1 } }
                else if ($2 ~ /^[TDBRCVW]$/) def[$3] = f
            }
            END {
                split(layers, l, "\n")
                for (i in l) if (l[i] ~ /:/) {
                    split(l[i], kv, ": *"); m = split(kv[2], a, " ")
                    for (j = 1; j <= m; j++) ok[kv[1] " " a[j]] = 1
                }
                m = split(upcalls, u, "\n"); for (j = 1; j <= m; j++) up[u[j]] = 1
                for (i = 1; i <= n; i++) {
                    split(use[i], x, " ")
                    if (!(x[2] in def)) continue # outside the library
                    to = def[x[2]]
                    if (to == x[1] || ok[x[1] " " to]) continue
                    if (x[1] == "edge" && (x[2] in up)) continue
                    printf "%s (%s) uses %s of %s: %s may not use %s%s\n", x[3], x[1], x[2], to, x[1], to,
                        x[1] == "edge" ? " (edge reaches up only through gateway/edge/gw_upcall.h)" : ""
                }
            }' "$tab" "$syms")
        rm -f "$tab" "$syms"
        if [ -n "$out" ]; then
            printf '%s\n' "$out" >&2
            bad=1
        fi
    fi
    return $bad
}

selftest() { # selftest <source dir> <library> (sh has no local variables: check sets src, lib)
    st_src=$1
    st_lib=$2
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    fail=0
    if ! check "$st_src" "$st_lib" 2>"$tmp/err"; then
        echo "selftest: the tree itself fails the check:" >&2
        cat "$tmp/err" >&2
        return 1
    fi
    plant() { # plant <name>: a fresh copy of the sources and the library in $tmp/<name>
        mkdir -p "$tmp/$1"
        cp -r "$st_src/gateway" "$tmp/$1/gateway"
        cp "$st_lib" "$tmp/$1/lib.a"
    }
    expect_fail() { # expect_fail <name> <what>: the check must fail on $tmp/<name>
        if check "$tmp/$1" "$tmp/$1/lib.a" 2>"$tmp/$1.err"; then
            echo "selftest: $2 was not caught" >&2
            fail=1
        else
            echo "selftest: caught $2: $(head -1 "$tmp/$1.err")"
        fi
    }
    # base includes a header of a layer above it
    plant inc
    echo '#include "gateway/http/gw_http.h"' >>"$tmp/inc/gateway/base/gw_reply.c"
    expect_fail inc "an include from base of http"
    # an object of base calls a function of http (no include needed to call it)
    plant sym
    printf 'void gw_workers_stop(void *srv);\nvoid gw_zz_plant(void *srv);\nvoid gw_zz_plant(void *srv) { gw_workers_stop(srv); }\n' \
        >"$tmp/sym/gateway/base/gw_zz_plant.c"
    ${CC:-cc} -c -o "$tmp/sym/gw_zz_plant.c.o" "$tmp/sym/gateway/base/gw_zz_plant.c" &&
        ar rc "$tmp/sym/lib.a" "$tmp/sym/gw_zz_plant.c.o" || return 1
    expect_fail sym "a call from base into http"
    # the edge calls a function of http that is not an upcall
    plant up
    printf 'void gw_workers_stop(void *srv);\nvoid gw_zz_edge(void *srv);\nvoid gw_zz_edge(void *srv) { gw_workers_stop(srv); }\n' \
        >"$tmp/up/gateway/edge/gw_zz_edge.c"
    ${CC:-cc} -c -o "$tmp/up/gw_zz_edge.c.o" "$tmp/up/gateway/edge/gw_zz_edge.c" &&
        ar rc "$tmp/up/lib.a" "$tmp/up/gw_zz_edge.c.o" || return 1
    expect_fail up "a call from edge into http outside the upcall list"
    return $fail
}

if [ "$1" = --selftest ]; then
    selftest "${2:?source dir}" "${3:?library}"
else
    check "${1:?source dir}" "$2"
fi
