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
# 4. LAYERS itself is acyclic (no folder may use, through the folders it may
#    use, itself), so 2 and 3 say that the folders form a directed acyclic graph.
# 5. No cycle between the files of one folder (any folder of the project's
#    sources, FOLDERS): the include graph (a header that includes, through
#    others of its folder, itself) and, with nm on the built libraries, the
#    calls (an object that uses, through others of its folder, its own
#    symbols). Each cycle found is printed; one outside FILE_CYCLES fails, and
#    so does an entry of FILE_CYCLES that no cycle needs any more.
# 6. docs/design.md's table of the gateway's folders says what LAYERS says:
#    its "may use" column is LAYERS' list, its "header" column every header of
#    the folder.
# 7. The transport and the overload control compile without the types of the
#    folders above them: no file under gateway/edge/ or gateway/overload/
#    includes a header of buy, proxy, http or ctl, directly or through the
#    headers it includes (an include closure over the gateway's files, which
#    names the chain that reaches one).
#
# Usage: gateway_interfaces.sh <source dir> [<libflashgate_gateway.a> [<other library>...]]
#        gateway_interfaces.sh --selftest <source dir> <libflashgate_gateway.a>
#   Without the libraries, 3 and the calls of 5 are not checked; the other
#   libraries (inventory, queue, ...) only feed 5. --selftest plants a
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

# The folders whose files may not form a cycle (check 5).
FOLDERS='gateway/base gateway/edge gateway/overload gateway/proxy gateway/buy gateway/http
gateway/ctl common inventory queue settle identity loadtest sim'

# The cycles between the files of one folder that remain, each with why
# (docs/design.md "The gateway's folders" names them): "folder: files | why".
# A cycle found must lie within one entry's files.
FILE_CYCLES='
gateway/edge: gw_conn.c gw_h1.c | one connection state machine in two files: the guard asks the HTTP/1.1 layer for the socket and to kill it, the layer tells the guard each state change
'

# " from:to ..." for every use LAYERS allows, read once (no process per include)
ALLOWED_PAIRS=" $(printf '%s\n' "$LAYERS" | awk -F': *' '
    /:/ { n = split($2, a, " "); for (i = 1; i <= n; i++) printf "%s:%s ", $1, a[i] }') "

allowed() { # allowed <from> <to>: 0 if folder <from> may use folder <to>
    [ "$1" = "$2" ] && return 0
    [ "$1" = main ] && return 0
    case $ALLOWED_PAIRS in
    *" $1:$2 "*) return 0 ;;
    esac
    return 1
}

layers_cycle() { # prints the folders of LAYERS that reach themselves, if any
    printf '%s\n' "$LAYERS" | awk -F': *' '
        /:/ { v[++n] = $1; m = split($2, a, " "); for (i = 1; i <= m; i++) r[$1, a[i]] = 1 }
        END {
            for (k = 1; k <= n; k++) for (i = 1; i <= n; i++) if (r[v[i], v[k]])
                for (j = 1; j <= n; j++) if (r[v[k], v[j]]) r[v[i], v[j]] = 1
            for (i = 1; i <= n; i++) if (r[v[i], v[i]]) out = out " " v[i]
            if (out != "") print substr(out, 2)
        }'
}

file_edges() { # file_edges <source dir> [<library>...]: "folder from to why" within one folder
    fe_src=$1
    shift
    # one awk over every file (a process per file is slow on a loaded machine)
    (cd "$fe_src" && for d in $FOLDERS; do [ -d "$d" ] && ls -d "$d"/*.[ch] 2>/dev/null; done) |
        (cd "$fe_src" && xargs awk '
            /^[[:space:]]*#[[:space:]]*include[[:space:]]*"/ {
                inc = $0; sub(/^[^"]*"/, "", inc); sub(/".*/, "", inc)
                d = FILENAME; sub(/\/[^\/]*$/, "", d)
                f = FILENAME; sub(/.*\//, "", f)
                id = inc; sub(/\/[^\/]*$/, "", id)
                if (id == d) { sub(/.*\//, "", inc); print d, f, inc, "includes" }
            }')
    [ $# -gt 0 ] || return 0
    fe_tab=$(mktemp)
    for d in $FOLDERS; do
        [ -d "$fe_src/$d" ] || continue
        (cd "$fe_src/$d" && ls -- *.c 2>/dev/null) | awk -v d="$d" '{ print $1 ".o", d }'
    done >"$fe_tab"
    for l in "$@"; do
        nm -A "$l" 2>/dev/null
    done | sed -E 's/^[^:]*:([^:]*):[[:space:]]*[0-9a-f]*[[:space:]]+/\1 /' |
        awk 'FNR == NR { folder[$1] = $2; next }
            !($1 in folder) { next }
            $2 == "U" { use[++n] = $1 " " $3; next }
            $2 ~ /^[TDBRCVW]$/ { def[$3] = $1 }
            END {
                for (i = 1; i <= n; i++) {
                    split(use[i], x, " ")
                    if (!(x[2] in def) || def[x[2]] == x[1]) continue
                    if (folder[def[x[2]]] != folder[x[1]]) continue
                    a = x[1]; b = def[x[2]]; sub(/\.o$/, "", a); sub(/\.o$/, "", b)
                    if (!((a, b) in seen)) { seen[a, b] = 1; print folder[x[1]], a, b, x[2] }
                }
            }' "$fe_tab" -
    rm -f "$fe_tab"
}

file_cycles() { # file_cycles <source dir> [<library>...]: 0 if every cycle is in FILE_CYCLES
    fc_libs=$#
    file_edges "$@" | awk -v allow="$FILE_CYCLES" -v libs="$fc_libs" '
        { f = $1; e[f, $2, $3] = $4; r[f, $2, $3] = 1
          for (k = 2; k <= 3; k++) if (!((f, $k) in isn)) { isn[f, $k] = 1; nodes[f] = nodes[f] " " $k } }
        END {
            na = split(allow, al, "\n")
            for (i = 1; i <= na; i++) if (al[i] ~ /:/) {
                split(al[i], kv, " [|] "); sub(/^[^:]*: */, "", kv[1])
                af[i] = substr(al[i], 1, index(al[i], ":") - 1)
                m = split(kv[1], fl, " "); for (j = 1; j <= m; j++) inall[i, fl[j]] = 1
            }
            for (f in nodes) {
                n = split(nodes[f], v, " ")
                for (k = 1; k <= n; k++) for (i = 1; i <= n; i++) if (r[f, v[i], v[k]])
                    for (j = 1; j <= n; j++) if (r[f, v[k], v[j]]) r[f, v[i], v[j]] = 1
                for (i = 1; i <= n; i++) {
                    if (!r[f, v[i], v[i]] || done[f, v[i]]) continue
                    comp = ""; m = 0
                    for (j = 1; j <= n; j++) if (r[f, v[i], v[j]] && r[f, v[j], v[i]]) {
                        comp = comp " " v[j]; c[++m] = v[j]; done[f, v[j]] = 1
                    }
                    ok = 0
                    for (a = 1; a <= na && !ok; a++) if ((a in af) && af[a] == f) {
                        ok = a
                        for (j = 1; j <= m; j++) if (!inall[a, c[j]]) ok = 0
                    }
                    if (ok) { used[ok] = 1; printf "allowed cycle in %s:%s\n", f, comp; continue }
                    printf "%s: a cycle between its files:%s\n", f, comp > "/dev/stderr"
                    for (j = 1; j <= m; j++) for (k = 1; k <= m; k++) if ((f, c[j], c[k]) in e)
                        printf "    %s -> %s (%s)\n", c[j], c[k], e[f, c[j], c[k]] > "/dev/stderr"
                    bad = 1
                }
            }
            if (libs > 1) for (a = 1; a <= na; a++) if ((a in af) && !(a in used)) {
                printf "FILE_CYCLES names a cycle no longer there, remove it: %s\n", al[a] > "/dev/stderr"
                bad = 1
            }
            exit bad
        }'
}

# The folders whose closure check 7 walks, and the folders it may not reach.
CLOSED='gateway/edge gateway/overload'
UPPER='buy proxy http ctl'

include_closure() { # include_closure <source dir>: 0 if no file of CLOSED reaches UPPER
    (cd "$1" && find gateway -name '*.[ch]' | sort | xargs awk -v closed="$CLOSED" -v upper="$UPPER" '
        /^[[:space:]]*#[[:space:]]*include[[:space:]]*"gateway\// {
            inc = $0; sub(/^[^"]*"/, "", inc); sub(/".*/, "", inc)
            if (!((FILENAME, inc) in e)) { e[FILENAME, inc] = 1; out[FILENAME] = out[FILENAME] " " inc }
        }
        FNR == 1 { files[++n] = FILENAME }
        END {
            nc = split(closed, cl, " "); nu = split(upper, up, " ")
            for (i = 1; i <= n; i++) {
                f = files[i]; keep = 0
                for (k = 1; k <= nc; k++) if (index(f, cl[k] "/") == 1) keep = 1
                if (!keep) continue
                # breadth first from f: via[x] = the file that included x
                delete via; delete q; qh = 1; qt = 1; q[1] = f; via[f] = ""
                while (qh <= qt) {
                    x = q[qh++]; m = split(out[x], ia, " ")
                    for (j = 1; j <= m; j++) {
                        y = ia[j]
                        if (y in via) continue
                        via[y] = x; q[++qt] = y
                        split(y, p, "/")
                        for (k = 1; k <= nu; k++) if (p[2] == up[k]) {
                            chain = y; z = x
                            while (z != "") { chain = z " -> " chain; z = via[z] }
                            printf "%s reaches %s: %s\n", f, y, chain
                        }
                    }
                }
            }
        }')
}

design_table() { # design_table <source dir>: docs/design.md's folder table against LAYERS
    dt_doc=$1/docs/design.md
    [ -f "$dt_doc" ] || return 0
    dt_bad=0
    for f in $(printf '%s\n' "$LAYERS" | sed -n 's/^\([a-z]*\):.*/\1/p'); do
        row=$(grep -E "^\| \`$f/\` \|" "$dt_doc")
        if [ -z "$row" ] || [ "$(printf '%s\n' "$row" | wc -l)" -ne 1 ]; then
            echo "docs/design.md: no one row for $f/ in the table of the gateway's folders" >&2
            dt_bad=1
            continue
        fi
        want=$(printf '%s\n' "$LAYERS" | sed -n "s/^$f: *//p" | sed 's/ /, /g')
        [ -n "$want" ] || want=nothing
        have=$(printf '%s\n' "$row" | awk -F' [|] ' '{ x = $4; sub(/ *[|]$/, "", x); print x }')
        if [ "$have" != "$want" ]; then
            echo "docs/design.md: $f/ may use \"$have\", LAYERS says \"$want\"" >&2
            dt_bad=1
        fi
        hdr_doc=$(printf '%s\n' "$row" | awk -F' [|] ' '{ print $3 }' | grep -oE '[a-z_0-9]+\.h' | sort -u | tr '\n' ' ')
        hdr_src=$(cd "$1/gateway/$f" 2>/dev/null && ls -- *.h 2>/dev/null | sort -u | tr '\n' ' ')
        if [ "$hdr_doc" != "$hdr_src" ]; then
            echo "docs/design.md: $f/'s headers are \"$hdr_doc\", the folder has \"$hdr_src\"" >&2
            dt_bad=1
        fi
    done
    # every cycle FILE_CYCLES leaves is named in the design's table of them
    printf '%s\n' "$FILE_CYCLES" | sed -n 's/^\([^:]*\): *\([^|]*\) |.*/\1 \2/p' |
        while read -r dir files; do
            row=$(grep -E "^\| \`$dir/\` \|" "$dt_doc")
            for x in $files; do
                case $row in
                *"\`$x\`"*) ;;
                *) echo "docs/design.md: the cycle in $dir/ through $x is not named in its table of cycles" >&2
                   echo bad ;;
                esac
            done
        done | grep -q bad && dt_bad=1
    return $dt_bad
}

check() { # check <source dir> [<library> [<other library>...]]
    src=$1
    lib=$2
    bad=0
    cyc=$(layers_cycle)
    if [ -n "$cyc" ]; then
        echo "LAYERS is not acyclic: $cyc may use themselves through the folders they may use" >&2
        bad=1
    fi
    if grep -rnE --include='*.[ch]' '^[[:space:]]*#[[:space:]]*include[[:space:]]*<hiredis/' "$src"/gateway; then
        echo "gateway includes hiredis: speak Redis through inventory/inv_fleet.h" >&2
        bad=1
    fi
    if grep -rnE --include='*.[ch]' '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$src"/gateway |
        grep -vE '"(gateway(/[a-z]+)?|common)/[a-z_]+\.h"|"inventory/inv(_fleet)?\.h"|"identity/id\.h"|"queue/oq_(order|relay|spool)\.h"'; then
        echo "gateway includes another module's private header" >&2
        bad=1
    fi

    # 2. includes between folders (one awk over every file: no process per file)
    folders=" $(printf '%s\n' "$LAYERS" | sed -n 's/^\([a-z]*\):.*/\1/p' | tr '\n' ' ') "
    out=$(cd "$src" && find gateway -name '*.[ch]' | sort | xargs awk -v folders="$folders" \
        -v pairs="$ALLOWED_PAIRS" -v self="$0" '
        FNR == 1 {
            n = split(FILENAME, p, "/"); from = n >= 3 ? p[2] : "main"
            skip = 0
            if (from != "main" && index(folders, " " from " ") == 0) {
                printf "%s: folder %s is not in the layers of %s\n", FILENAME, from, self
                skip = 1
            }
        }
        !skip && /^[[:space:]]*#[[:space:]]*include[[:space:]]*"gateway\// {
            inc = $0; sub(/^[^"]*"gateway\//, "", inc); sub(/".*/, "", inc)
            to = index(inc, "/") ? substr(inc, 1, index(inc, "/") - 1) : "top"
            if (to != from && from != "main" && index(pairs, " " from ":" to " ") == 0)
                printf "%s includes gateway/%s: %s may not use %s\n", FILENAME, inc, from, to
        }')
    if [ -n "$out" ]; then
        printf '%s\n' "$out" >&2
        bad=1
    fi

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

    # 7. the include closure of edge and overload
    out=$(include_closure "$src")
    if [ -n "$out" ]; then
        printf '%s\n' "$out" >&2
        echo "edge and overload compile without the types of $UPPER: hold that state behind a pointer (gateway/base/gw_types.h)" >&2
        bad=1
    fi

    # 5. cycles between the files of a folder; 6. the design's table
    shift
    file_cycles "$src" "$@" || bad=1
    design_table "$src" || bad=1
    return $bad
}

selftest() { # selftest <source dir> <library> (sh has no local variables: check sets src, lib)
    st_src=$1
    st_lib=$2
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    fail=0
    if ! check "$st_src" "$st_lib" >/dev/null 2>"$tmp/err"; then
        echo "selftest: the tree itself fails the check:" >&2
        cat "$tmp/err" >&2
        return 1
    fi
    plant() { # plant <name>: a fresh copy of the sources and the library in $tmp/<name>
        mkdir -p "$tmp/$1/docs"
        cp -r "$st_src/gateway" "$tmp/$1/gateway"
        cp "$st_src/docs/design.md" "$tmp/$1/docs/design.md"
        cp "$st_lib" "$tmp/$1/lib.a"
    }
    expect_fail() { # expect_fail <name> <what> <message>: the check must fail on $tmp/<name>, saying <message>
        if check "$tmp/$1" "$tmp/$1/lib.a" >/dev/null 2>"$tmp/$1.err"; then
            echo "selftest: $2 was not caught" >&2
            fail=1
        elif ! grep -q -- "$3" "$tmp/$1.err"; then
            echo "selftest: $2 failed the check without saying \"$3\":" >&2
            cat "$tmp/$1.err" >&2
            fail=1
        else
            echo "selftest: caught $2: $(grep -m1 -- "$3" "$tmp/$1.err")"
        fi
    }
    # base includes a header of a layer above it
    plant inc
    echo '#include "gateway/http/gw_http.h"' >>"$tmp/inc/gateway/base/gw_reply.c"
    expect_fail inc "an include from base of http" "base may not use http"
    # an object of base calls a function of http (no include needed to call it)
    plant sym
    printf 'void gw_workers_stop(void *srv);\nvoid gw_zz_plant(void *srv);\nvoid gw_zz_plant(void *srv) { gw_workers_stop(srv); }\n' \
        >"$tmp/sym/gateway/base/gw_zz_plant.c"
    ${CC:-cc} -c -o "$tmp/sym/gw_zz_plant.c.o" "$tmp/sym/gateway/base/gw_zz_plant.c" &&
        ar rc "$tmp/sym/lib.a" "$tmp/sym/gw_zz_plant.c.o" || return 1
    expect_fail sym "a call from base into http" "base may not use http"
    # the edge calls a function of http that is not an upcall
    plant up
    printf 'void gw_workers_stop(void *srv);\nvoid gw_zz_edge(void *srv);\nvoid gw_zz_edge(void *srv) { gw_workers_stop(srv); }\n' \
        >"$tmp/up/gateway/edge/gw_zz_edge.c"
    ${CC:-cc} -c -o "$tmp/up/gw_zz_edge.c.o" "$tmp/up/gateway/edge/gw_zz_edge.c" &&
        ar rc "$tmp/up/lib.a" "$tmp/up/gw_zz_edge.c.o" || return 1
    expect_fail up "a call from edge into http outside the upcall list" "edge may not use http"
    # a base header that edge includes through gw_types.h pulls in buy's types
    plant clo
    echo '#include "gateway/buy/gw_buy_t.h"' >>"$tmp/clo/gateway/base/gw_limit.h"
    expect_fail clo "buy's types reached from edge through base" "gw_h1.c reaches gateway/buy/gw_buy_t.h: .*gateway/base/gw_limit.h -> gateway/buy/gw_buy_t.h"
    # two headers of a folder include each other
    plant hcyc
    printf '#include "gateway/base/gw_zz_b.h"\n' >"$tmp/hcyc/gateway/base/gw_zz_a.h"
    printf '#include "gateway/base/gw_zz_a.h"\n' >"$tmp/hcyc/gateway/base/gw_zz_b.h"
    expect_fail hcyc "two headers of base that include each other" "a cycle between its files: gw_zz_a.h gw_zz_b.h"
    # two objects of a folder call each other
    plant ccyc
    printf 'void gw_zz_a(int n);\nvoid gw_zz_b(int n);\nvoid gw_zz_a(int n) { if (n) gw_zz_b(n - 1); }\n' \
        >"$tmp/ccyc/gateway/base/gw_zz_a.c"
    printf 'void gw_zz_a(int n);\nvoid gw_zz_b(int n);\nvoid gw_zz_b(int n) { if (n) gw_zz_a(n - 1); }\n' \
        >"$tmp/ccyc/gateway/base/gw_zz_b.c"
    for x in a b; do
        ${CC:-cc} -c -o "$tmp/ccyc/gw_zz_$x.c.o" "$tmp/ccyc/gateway/base/gw_zz_$x.c" &&
            ar rc "$tmp/ccyc/lib.a" "$tmp/ccyc/gw_zz_$x.c.o" || return 1
    done
    expect_fail ccyc "two objects of base that call each other" "a cycle between its files: gw_zz_a.c gw_zz_b.c"
    # LAYERS lets base use http, which uses base: a cycle in the table itself
    plant lay
    sed 's/^base:$/base: http/' "$st_self" >"$tmp/lay.sh"
    if sh "$tmp/lay.sh" "$tmp/lay" >/dev/null 2>"$tmp/lay.err"; then
        echo "selftest: a cycle in LAYERS was not caught" >&2
        fail=1
    elif ! grep -q "LAYERS is not acyclic" "$tmp/lay.err"; then
        echo "selftest: a cycle in LAYERS failed the check without saying so:" >&2
        cat "$tmp/lay.err" >&2
        fail=1
    else
        echo "selftest: caught a cycle in LAYERS: $(grep -m1 'LAYERS is not acyclic' "$tmp/lay.err")"
    fi
    # docs/design.md's table leaves out a header of buy/
    plant doc
    sed -i 's/, `gw_elig.h`,/,/' "$tmp/doc/docs/design.md"
    expect_fail doc "a header of buy missing from docs/design.md's table" "buy/'s headers are"
    # docs/design.md's table of cycles leaves out a file of an allowed cycle
    plant cdoc
    sed -i 's/^\(| `gateway\/edge\/` | `gw_conn.c`\), `gw_h1.c`/\1/' "$tmp/cdoc/docs/design.md"
    expect_fail cdoc "an allowed cycle not named in docs/design.md" "not named in its table of cycles"
    return $fail
}

if [ "$1" = --selftest ]; then
    st_self=$0
    selftest "${2:?source dir}" "${3:?library}"
else
    : "${1:?source dir}"
    check "$@"
fi
