#!/bin/sh
# No fleet branch outside the fairness store in Redis: the one choice between
# one gateway's store and a fleet's is gw_fair_open's (gw_fair.c), and
# gw_fair_lot_ops_t carries it to the room, registration and eligibility; every
# other file of gateway/buy calls its store's ops and never asks which it has.
#
# Usage: fair_store_choice.sh <source dir>
# Prints each line of gateway/buy/*.c outside the Redis store's files
# (gw_*_fleet.c, gw_fair_redis.c, gw_fair_pool.c and the tables in
# gw_fair_store.c) that asks whether it runs in a fleet: a fleet flag, a read of
# the inventory's scheme, a comparison with a store's table, a touch of the
# Redis store's connections. Exits 1 unless gw_fair_open's choice is the only one.
set -eu

[ $# -eq 1 ] || { echo "usage: $0 <source dir>" >&2; exit 2; }
cd "$1/gateway/buy"
pat='(->|\.)(is_)?fleet\b|\bbool +(is_)?fleet\b|inventory, *"redis|(lot|ops) *[!=]= *&?gw_|\bf->(rc|addr|pool|loop_pool)\b'
hits=$(grep -nE "$pat" -- *.c |
    grep -vE '^(gw_[a-z_]*_fleet|gw_fair_redis|gw_fair_pool|gw_fair_store)\.c:' || true)
printf '%s\n' "$hits"
n=$(printf '%s\n' "$hits" | grep -c . || true)
choice=$(printf '%s\n' "$hits" |
    grep -cE '^gw_fair\.c:[0-9]+: .*"redis".*\? &gw_fair__lot_redis : &gw_fair__lot_local;' || true)
if [ "$n" -ne 1 ] || [ "$choice" -ne 1 ]; then
    echo "fair_store_choice: $n fleet question(s), expected only gw_fair_open's choice" >&2
    exit 1
fi
echo "fair_store_choice: one choice (gw_fair_open), no fleet branch elsewhere"
