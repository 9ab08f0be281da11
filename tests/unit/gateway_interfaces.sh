#!/bin/sh
# The gateway sees the other modules through their public interfaces only:
# no gateway file includes hiredis, and a project include outside gateway/
# and common/ must be one of the public headers below (inventory/inv_redis.h,
# inv_backend.h, inv_redis_lua.h, queue/oq_embedded.h, settle/... are private).
# Usage: gateway_interfaces.sh <source dir>
src=${1:?source dir}
bad=0
if grep -rnE --include="*.[ch]" '^[[:space:]]*#[[:space:]]*include[[:space:]]*<hiredis/' "$src"/gateway; then
    echo "gateway includes hiredis: speak Redis through inventory/inv_fleet.h" >&2
    bad=1
fi
if grep -rnE --include="*.[ch]" '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$src"/gateway |
    grep -vE '"(gateway(/[a-z]+)?|common)/[a-z_]+\.h"|"inventory/inv(_fleet)?\.h"|"queue/oq_(order|relay|spool)\.h"'; then
    echo "gateway includes another module's private header" >&2
    bad=1
fi
exit $bad
