#!/bin/sh
# Install flashgate's build, run and test dependencies on Debian 12 (run as root).
# Idempotent: when everything is present it prints nothing and returns at once.
set -eu

# prometheus (~96 MB installed) is there for `promtool check metrics` in the tests;
# chromium (~290 MB) for the dashboard's browser test (tests/browser/). Both big,
# both the real tools (Debian packages no smaller promtool or headless shell).
# node-llhttp: llhttp's generated C sources (Debian ships no library of it), built
# into the gateway by CMakeLists.txt.
# valgrind: Helgrind race-checks the relay and settlement (librdkafka crashes TSan).
# strace: makes the kernel's own calls fail in the running gateway (-e inject), for the
# errors no test can cause otherwise (tests/integration/25-accept-errors.py: ENOBUFS).
# libnginx-mod-http-lua (pulls libnginx-mod-http-ndk and lua-resty-core): the bench's
# nginx + Lua peer (bench/lua/peer.lua), loaded into nginx-light with load_module.
# docker-compose, python3-jsonschema: the compose-spec schema integration.74-container
# validates deploy/container/compose.yaml against (offline; no container engine runs).
# liblua5.1-0-dev: the simulator's Redis runs the inventory's Lua scripts (sim/sim_redis.c).
PKGS="build-essential cmake pkg-config git curl procps python3
libmicrohttpd-dev libgnutls28-dev libuv1-dev node-llhttp libcurl4-openssl-dev libhiredis-dev librdkafka-dev libjansson-dev libcmocka-dev
libsqlite3-dev sqlite3 libpq-dev libsystemd-dev postgresql redis-server liblua5.1-0-dev
kcat wrk gnuplot-nox nginx-light libnginx-mod-http-lua varnish python3-yaml python3-jsonschema
docker-compose valgrind strace
clang libclang-rt-14-dev libssl-dev cppcheck clang-tidy
prometheus chromium"

# One dpkg-query for the whole list: one per package costs seconds of every
# CI run, where everything is present (`/usr/bin/time sh deploy/install-deps.sh`:
# 9-12 s that way on the loaded 2-core box, 0.3 s this way).
installed=" $(dpkg-query -W -f='${Package}\t${Status}\n' $PKGS 2>/dev/null |
    sed -n 's/\t.* ok installed$//p' | tr '\n' ' ') "
missing=""
for p in $PKGS; do
    case $installed in *" $p "*) ;; *) missing="$missing $p" ;; esac
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
    echo "install-deps: missing packages:$missing (run as root to install them)" >&2
    exit 1
fi
echo "install-deps: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
# Services are started by the tests themselves on free ports; keep the
# packaged daemons from starting on install (no systemd in containers anyway).
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get install -y -qq --no-install-recommends $missing >/dev/null
