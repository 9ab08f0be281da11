#!/bin/sh
# Lints docs/openapi.yaml with Redocly's CLI (tests/openapi/redocly.yaml; the
# findings that describe the server as it is are in .redocly.lint-ignore.yaml),
# then plants an error in a copy (an operation without operationId) and
# insists the lint fails on it, so a lint that checks nothing cannot pass.
#
#   tests/openapi/lint.sh BUILD_DIR
#
# The CLI comes from npm, pinned by package-lock.json, installed with `npm ci`
# into BUILD_DIR/openapi-lint once and again only when the lock file changes
# (offline after the first install), as tests/integration/20-dashboard.py does.
set -eu
build=${1:-build}
src=$(cd "$(dirname "$0")/../.." && pwd)
pkg=$src/tests/openapi
case $build in /*) ;; *) build=$src/$build ;; esac
mods=$build/openapi-lint
if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
    echo "openapi-lint: node and npm are needed" >&2
    exit 1
fi
if ! cmp -s "$pkg/package-lock.json" "$mods/package-lock.json" 2>/dev/null ||
    [ ! -x "$mods/node_modules/.bin/redocly" ]; then
    mkdir -p "$mods"
    cp "$pkg/package.json" "$pkg/package-lock.json" "$mods/"
    (cd "$mods" && npm ci --no-audit --no-fund --loglevel=error >npm.log 2>&1) || {
        tail -20 "$mods/npm.log" >&2
        echo "openapi-lint: npm ci failed" >&2
        exit 1
    }
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
