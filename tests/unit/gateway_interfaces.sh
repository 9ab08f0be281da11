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

# The folders whose closure check 7 walks, and the folders it may not reach.
CLOSED='gateway/edge gateway/overload'
UPPER='buy proxy http ctl'

# check <source dir> [<library> [<other library>...]]: checks 1-7 in one awk, which
# reads the file list (one find), every source, gw_upcall.h, docs/design.md and the
# symbols of every library (one nm). A process per file, folder or include was most
# of the check's time on a loaded machine: the self-test runs it ten times.
check() {
    src=$1
    shift
    libs=
    for l in "$@"; do
        if [ ! -f "$l" ]; then
            echo "no library at $l" >&2
            return 1
        fi
        case $l in
        /*) ;;
        *) l=$PWD/$l ;;
        esac
        libs="$libs$l
"
    done
    (cd "$src" || exit 1
    roots=gateway
    for d in $FOLDERS; do
        r=${d%%/*}
        case " $roots " in
        *" $r "*) ;;
        *) [ -d "$r" ] && roots="$roots $r" ;;
        esac
    done
    # shellcheck disable=SC2086 # the roots, one word each
    find $roots -name '*.[ch]' | sort | awk -v layers="$LAYERS" -v folders="$FOLDERS" \
        -v allow="$FILE_CYCLES" -v closed="$CLOSED" -v upper="$UPPER" -v libs="$libs" \
        -v srcdir="$src" -v self="$0" '
    function err(msg) { print msg > "/dev/stderr"; bad = 1 }
    function words(s,    a, n, i, j, t, out) { # the words of s sorted, once each, each then a space
        n = split(s, a, " ")
        for (i = 2; i <= n; i++) {
            t = a[i]
            for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]
            a[j + 1] = t
        }
        out = ""
        for (i = 1; i <= n; i++) if (i == 1 || a[i] != a[i - 1]) out = out a[i] " "
        return out
    }
    function edge(f, a, b, why) { # an edge a -> b between two files of folder f (check 5)
        e[f, a, b] = why; r[f, a, b] = 1
        if (!((f, a) in isn)) { isn[f, a] = 1; nodes[f] = nodes[f] " " a }
        if (!((f, b) in isn)) { isn[f, b] = 1; nodes[f] = nodes[f] " " b }
    }
    { path[++np] = $0 }
    END {
        INC = "^[[:space:]]*#[[:space:]]*include[[:space:]]*"
        # LAYERS: ok[from, to] for each use it allows; 4. it is acyclic
        nl = split(layers, ll, "\n")
        for (i = 1; i <= nl; i++) if (ll[i] ~ /:/) {
            f = ll[i]; sub(/:.*/, "", f); rest = ll[i]; sub(/^[^:]*: */, "", rest)
            lv[++nlv] = f; layer[f] = 1; may[f] = rest
            m = split(rest, a, " ")
            for (j = 1; j <= m; j++) { ok[f, a[j]] = 1; lr[f, a[j]] = 1 }
        }
        for (k = 1; k <= nlv; k++) for (i = 1; i <= nlv; i++) if (lr[lv[i], lv[k]])
            for (j = 1; j <= nlv; j++) if (lr[lv[k], lv[j]]) lr[lv[i], lv[j]] = 1
        out = ""
        for (i = 1; i <= nlv; i++) if (lr[lv[i], lv[i]]) out = out " " lv[i]
        if (out != "")
            err("LAYERS is not acyclic: " substr(out, 2) " may use themselves through the folders they may use")

        nf = split(folders, fa, " ")
        for (i = 1; i <= nf; i++) infolders[fa[i]] = 1
        # every source: its includes (1, 2, 5 and 7), and which folder each object is of (3, 5)
        hiredis = priv = layerout = ""
        for (i = 1; i <= np; i++) {
            p = path[i]; n = split(p, pc, "/")
            d = p; sub(/\/[^\/]*$/, "", d)
            base = p; sub(/.*\//, "", base)
            ingw = pc[1] == "gateway"
            cf = d in infolders
            if (cf && base ~ /\.c$/) cobj[d] = cobj[d] " " base ".o"
            skip = 0
            if (ingw) {
                gfiles[++ng] = p
                if (n >= 3 && base ~ /\.c$/) gwobj[base ".o"] = pc[2]
                if (n == 3 && base ~ /\.h$/) hdrs[pc[2]] = hdrs[pc[2]] " " base
                from = n >= 3 ? pc[2] : "main"
                if (from != "main" && !(from in layer)) {
                    layerout = layerout sprintf("%s: folder %s is not in the layers of %s\n", p, from, self)
                    skip = 1
                }
            }
            ln = 0
            while ((getline line < p) > 0) {
                ln++
                if (line !~ INC) continue
                if (ingw && line ~ (INC "<hiredis/"))
                    hiredis = hiredis srcdir "/" p ":" ln ":" line "\n"
                if (line !~ (INC "\"")) continue
                if (ingw && line !~ /"(gateway(\/[a-z]+)?|common)\/[a-z_]+\.h"|"inventory\/inv(_fleet)?\.h"|"identity\/id\.h"|"queue\/oq_(order|relay|spool)\.h"/)
                    priv = priv srcdir "/" p ":" ln ":" line "\n"
                inc = line; sub(/^[^"]*"/, "", inc); sub(/".*/, "", inc)
                if (cf) {
                    id = inc; sub(/\/[^\/]*$/, "", id)
                    if (id == d) { b = inc; sub(/.*\//, "", b); edge(d, base, b, "includes") }
                }
                if (!ingw || inc !~ /^gateway\//) continue
                if (!((p, inc) in seeninc)) { seeninc[p, inc] = 1; incs[p] = incs[p] " " inc }
                if (skip) continue
                to = substr(inc, 9)
                to = index(to, "/") ? substr(to, 1, index(to, "/") - 1) : "top"
                if (to != from && from != "main" && !ok[from, to])
                    layerout = layerout sprintf("%s includes %s: %s may not use %s\n", p, inc, from, to)
            }
            close(p)
        }
        # 1. the other modules through their public interfaces only
        if (hiredis != "") {
            printf "%s", hiredis
            err("gateway includes hiredis: speak Redis through inventory/inv_fleet.h")
        }
        if (priv != "") {
            printf "%s", priv
            err("gateway includes another module\047s private header")
        }
        # 2. includes between folders
        if (layerout != "") err(substr(layerout, 1, length(layerout) - 1))

        # the symbols of every library: 3 on the first (the gateway), 5 on all
        nlib = split(libs, lb, "\n")
        for (i = 1; i <= nf; i++) {
            m = split(cobj[fa[i]], a, " ")
            for (j = 1; j <= m; j++) objfolder[a[j]] = fa[i]
        }
        if (nlib > 0) {
            cmd = "nm -A"
            for (k = 1; k <= nlib; k++) cmd = cmd " \047" lb[k] "\047"
            cmd = cmd " 2>/dev/null"
            while ((cmd | getline line) > 0) {
                for (k = 1; k <= nlib; k++) if (index(line, lb[k] ":") == 1) break
                if (k > nlib) continue
                rest = substr(line, length(lb[k]) + 2)
                mem = rest; sub(/:.*/, "", mem); sub(/^[^:]*:/, "", rest)
                sub(/^[[:space:]]*[0-9a-f]*[[:space:]]+/, "", rest)
                split(rest, x, " ")
                if (k == 1) {
                    nsym++
                    f = (mem in gwobj) ? gwobj[mem] : "gen"
                    if (x[1] == "U") { if (x[2] ~ /^gw_/) use3[++n3] = f " " x[2] " " mem }
                    else if (x[1] ~ /^[TDBRCVW]$/) def3[x[2]] = f
                }
                if (!(mem in objfolder)) continue
                if (x[1] == "U") use5[++n5] = mem " " x[2]
                else if (x[1] ~ /^[TDBRCVW]$/) def5[x[2]] = mem
            }
            close(cmd)

            # 3. symbols between folders; the edge goes up only through gw_upcall.h
            nup = 0
            while ((getline line < "gateway/edge/gw_upcall.h") > 0) {
                if (line !~ /^[a-z]/) continue
                last = ""
                while (match(line, /[ *]gw_[a-z0-9_]+\(/)) {
                    last = substr(line, RSTART + 1, RLENGTH - 2); line = substr(line, RSTART + 1)
                }
                if (last != "") { up[last] = 1; nup++ }
            }
            close("gateway/edge/gw_upcall.h")
            if (!nup) err("no upcalls read from gateway/edge/gw_upcall.h")
            if (!nsym) err("nm read no symbols from " lb[1])
            for (i = 1; i <= n3; i++) {
                split(use3[i], x, " ")
                if (!(x[2] in def3)) continue # outside the library
                to = def3[x[2]]
                if (to == x[1] || ok[x[1], to]) continue
                if (x[1] == "edge" && (x[2] in up)) continue
                err(sprintf("%s (%s) uses %s of %s: %s may not use %s%s", x[3], x[1], x[2], to, x[1], to,
                    x[1] == "edge" ? " (edge reaches up only through gateway/edge/gw_upcall.h)" : ""))
            }
            for (i = 1; i <= n5; i++) {
                split(use5[i], x, " ")
                if (!(x[2] in def5) || def5[x[2]] == x[1]) continue
                if (objfolder[def5[x[2]]] != objfolder[x[1]]) continue
                a1 = x[1]; b1 = def5[x[2]]; sub(/\.o$/, "", a1); sub(/\.o$/, "", b1)
                if (!((a1, b1) in seencall)) { seencall[a1, b1] = 1; edge(objfolder[x[1]], a1, b1, x[2]) }
            }
        }

        # 7. no file of edge or overload reaches a header of UPPER through its includes
        nc = split(closed, cl, " "); nu = split(upper, upp, " ")
        out = ""
        for (i = 1; i <= ng; i++) {
            f = gfiles[i]; keep = 0
            for (k = 1; k <= nc; k++) if (index(f, cl[k] "/") == 1) keep = 1
            if (!keep) continue
            # breadth first from f: via[x] = the file that included x
            delete via; delete q; qh = 1; qt = 1; q[1] = f; via[f] = ""
            while (qh <= qt) {
                x0 = q[qh++]; m = split(incs[x0], ia, " ")
                for (j = 1; j <= m; j++) {
                    y = ia[j]
                    if (y in via) continue
                    via[y] = x0; q[++qt] = y
                    split(y, pp, "/")
                    for (k = 1; k <= nu; k++) if (pp[2] == upp[k]) {
                        chain = y; z = x0
                        while (z != "") { chain = z " -> " chain; z = via[z] }
                        out = out sprintf("%s reaches %s: %s\n", f, y, chain)
                    }
                }
            }
        }
        if (out != "") {
            printf "%s", out > "/dev/stderr"
            err("edge and overload compile without the types of " upper ": hold that state behind a pointer (gateway/base/gw_types.h)")
        }

        # 5. cycles between the files of a folder: each within an entry of FILE_CYCLES
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
                okc = 0
                for (ai = 1; ai <= na && !okc; ai++) if ((ai in af) && af[ai] == f) {
                    okc = ai
                    for (j = 1; j <= m; j++) if (!inall[ai, c[j]]) okc = 0
                }
                if (okc) { used[okc] = 1; printf "allowed cycle in %s:%s\n", f, comp; continue }
                printf "%s: a cycle between its files:%s\n", f, comp > "/dev/stderr"
                for (j = 1; j <= m; j++) for (k = 1; k <= m; k++) if ((f, c[j], c[k]) in e)
                    printf "    %s -> %s (%s)\n", c[j], c[k], e[f, c[j], c[k]] > "/dev/stderr"
                bad = 1
            }
        }
        if (nlib > 0) for (ai = 1; ai <= na; ai++) if ((ai in af) && !(ai in used))
            err("FILE_CYCLES names a cycle no longer there, remove it: " al[ai])

        # 6. docs/design.md: its table of the folders says what LAYERS says, and its
        # table of cycles names every file of FILE_CYCLES
        doc = "docs/design.md"
        while ((rc = (getline line < doc)) > 0) if (line ~ /^\| `[^`]*` \|/) {
            key = line; sub(/^\| `/, "", key); sub(/`.*/, "", key)
            rows[key] = (key in rows) ? rows[key] "\n" line : line
            nrows[key]++
        }
        close(doc)
        if (rc < 0) exit bad
        for (i = 1; i <= nlv; i++) {
            f = lv[i]
            if (nrows[f "/"] != 1) {
                err("docs/design.md: no one row for " f "/ in the table of the gateway\047s folders")
                continue
            }
            want = may[f]; gsub(/ /, ", ", want)
            if (want == "") want = "nothing"
            split(rows[f "/"], col, / [|] /)
            have = col[4]; sub(/ *[|]$/, "", have)
            if (have != want)
                err("docs/design.md: " f "/ may use \"" have "\", LAYERS says \"" want "\"")
            hd = ""; s = col[3]
            while (match(s, /[a-z_0-9]+\.h/)) { hd = hd " " substr(s, RSTART, RLENGTH); s = substr(s, RSTART + RLENGTH) }
            hd = words(hd); hs = words(hdrs[f])
            if (hd != hs)
                err("docs/design.md: " f "/\047s headers are \"" hd "\", the folder has \"" hs "\"")
        }
        for (i = 1; i <= na; i++) if (al[i] ~ /^[^:]*: *[^|]* [|]/) {
            dir = al[i]; sub(/:.*/, "", dir)
            files = al[i]; sub(/^[^:]*: */, "", files); sub(/ [|].*/, "", files)
            m = split(files, fl, " ")
            for (j = 1; j <= m; j++) if (index(rows[dir "/"], "`" fl[j] "`") == 0)
                err("docs/design.md: the cycle in " dir "/ through " fl[j] " is not named in its table of cycles")
        }
        exit bad
    }')
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
    case $st_lib in
    /*) ;;
    *) st_lib=$PWD/$st_lib ;;
    esac
    plant() { # plant <name> [add]: a fresh copy of the sources in $tmp/<name>, and its lib.a:
        # a copy of the library for a plant that adds objects to it (add), else a link to it
        # (the debug library is 13 MB: copied for every plant, most of the self-test's I/O)
        mkdir -p "$tmp/$1/docs"
        cp -r "$st_src/gateway" "$tmp/$1/gateway"
        cp "$st_src/docs/design.md" "$tmp/$1/docs/design.md"
        if [ "$2" = add ]; then
            cp "$st_lib" "$tmp/$1/lib.a"
        else
            ln -s "$st_lib" "$tmp/$1/lib.a"
        fi
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
    plant sym add
    printf 'void gw_workers_stop(void *srv);\nvoid gw_zz_plant(void *srv);\nvoid gw_zz_plant(void *srv) { gw_workers_stop(srv); }\n' \
        >"$tmp/sym/gateway/base/gw_zz_plant.c"
    ${CC:-cc} -c -o "$tmp/sym/gw_zz_plant.c.o" "$tmp/sym/gateway/base/gw_zz_plant.c" &&
        ar rc "$tmp/sym/lib.a" "$tmp/sym/gw_zz_plant.c.o" || return 1
    expect_fail sym "a call from base into http" "base may not use http"
    # the edge calls a function of http that is not an upcall
    plant up add
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
    plant ccyc add
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
