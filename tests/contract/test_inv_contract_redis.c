/*
 * The inventory contract cases (inv_contract_cases.h) against the Redis
 * backend, on a redis-server this program starts (127.0.0.1, free port, temp
 * dir) and stops. Exits 77 (skip) only when no redis-server exists.
 */
#include "tests/contract/inv_contract_cases.h"
#include "tests/support/ts_redis.h"

static char url[128];
const char *inv_contract_url = url;

int main(void)
{
    ts_redis_t r;
    if (ts_redis_start(&r, false) != 0)
        return 1;
    ts_redis_url(&r, url, sizeof(url), "timeout_ms=2000");
    int rc = cmocka_run_group_tests(inv_contract_tests, NULL, NULL);
    ts_redis_free(&r);
    return rc;
}
