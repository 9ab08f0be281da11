#!/bin/sh
# Lints docs/openapi.yaml with Redocly's CLI (tests/openapi/redocly.yaml; the
# findings that describe the server as it is are in .redocly.lint-ignore.yaml),
# then plants an error in a copy (an operation without operationId) and
# insists the lint fails on it, so a lint that checks nothing cannot pass.
#
#   tests/openapi/lint.sh BUILD_DIR
#
# The CLI comes from npm, pinned by package-lock.json, installed with `npm ci`
# once per lock file and node version into the user's cache
# ($XDG_CACHE_HOME or ~/.cache: flashgate/openapi-lint-<lock hash>-<node version>;
# BUILD_DIR/openapi-lint where that cannot be written), so that a fresh clone's
# lint reuses it: `npm ci` unpacks ~200 MB (`/usr/bin/time sh tests/openapi/lint.sh
# DIR` on a new DIR: 33 s CPU, 106 s wall on the loaded 2-core box; 5 s CPU, 16 s
# wall once installed).
set -eu
build=${1:-build}
src=$(cd "$(dirname "$0")/../.." && pwd)
pkg=$src/tests/openapi
case $build in /*) ;; *) build=$src/$build ;; esac
if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
    echo "openapi-lint: node and npm are needed" >&2
    exit 1
fi
key=$(sha256sum <"$pkg/package-lock.json" | cut -c1-16)-$(node --version)
cache=${XDG_CACHE_HOME:-${HOME:-/nonexistent}/.cache}/flashgate
if mkdir -p "$cache" 2>/dev/null && [ -w "$cache" ]; then
    mods=$cache/openapi-lint-$key
else
    mods=$build/openapi-lint
fi
if ! cmp -s "$pkg/package-lock.json" "$mods/package-lock.json" 2>/dev/null ||
    [ ! -x "$mods/node_modules/.bin/redocly" ]; then
    # installed beside, then renamed into place: a lint running at the same time
    # (another clone) never sees a half-unpacked tree
    new=$mods.new.$$
    rm -rf "$new"
    mkdir -p "$new"
    cp "$pkg/package.json" "$pkg/package-lock.json" "$new/"
    (cd "$new" && npm ci --no-audit --no-fund --loglevel=error >npm.log 2>&1) || {
        tail -20 "$new/npm.log" >&2
        rm -rf "$new"
        echo "openapi-lint: npm ci failed" >&2
        exit 1
    }
    rm -rf "$mods"
    mv "$new" "$mods" 2>/dev/null || rm -rf "$new"
fi
redocly=$mods/node_modules/.bin/redocly
echo "openapi-lint: redocly $("$redocly" --version)"
cd "$pkg"
export REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true
"$redocly" lint ../../docs/openapi.yaml --config redocly.yaml --format=codeframe
# The planted error: the buy operation's operationId removed, in a copy beside
# the original (the ignore file names ../../docs/openapi.yaml only).
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed '/^      operationId: buy$/d' ../../docs/openapi.yaml >"$tmp/openapi.yaml"
if cmp -s ../../docs/openapi.yaml "$tmp/openapi.yaml"; then
    echo "openapi-lint: could not plant the error (no 'operationId: buy' line)" >&2
    exit 1
fi
if "$redocly" lint "$tmp/openapi.yaml" --config redocly.yaml --format=summary >"$tmp/out" 2>&1; then
    cat "$tmp/out" >&2
    echo "openapi-lint: a planted error (an operation without operationId) passed" >&2
    exit 1
fi
grep -q 'operation-operationId' "$tmp/out" || {
    cat "$tmp/out" >&2
    echo "openapi-lint: the planted error failed for another reason" >&2
    exit 1
}
echo "openapi-lint: clean (and a planted error fails)"
