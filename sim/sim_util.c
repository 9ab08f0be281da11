/* See sim_util.h. */
#include "sim/sim_util.h"

#include "inventory/inv_cluster.h"

#include <inttypes.h>
#include <stdarg.h>

bool sim_chance(cm_rand_t *rng, double p)
{
    return p > 0 && cm_rand_unit(rng) < p;
}

uint32_t sim_below(cm_rand_t *rng, uint32_t n)
{
    return n ? (uint32_t)cm_rand_below(rng, n) : 0;
}

static void vtrace(const sim_log_t *log, const char *fmt, va_list ap)
{
    if (!log->trace)
        return;
    fprintf(log->trace, "[%s%" PRIu64 "] ", log->name, *log->clock);
    vfprintf(log->trace, fmt, ap);
    fputc('\n', log->trace);
}

void sim_trace(const sim_log_t *log, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vtrace(log, fmt, ap);
    va_end(ap);
}

void sim_fail(sim_log_t *log, const char *fmt, ...)
{
    if (log->failed)
        return;
    log->failed = true;
    log->res->ok = false;
    char *why = log->res->why;
    size_t cap = sizeof(log->res->why);
    int n = snprintf(why, cap, "%s%" PRIu64 ": ", log->name, *log->clock);
    size_t head = n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
    va_list ap;
    va_start(ap, fmt);
    // NOLINTNEXTLINE(clang-analyzer-valist.Uninitialized): va_start above
    vsnprintf(why + head, cap - head, fmt, ap);
    va_end(ap);
    sim_trace(log, "FAIL %s", why + head);
}

sim_redis_t *sim_transport_new(cm_rand_t *rng, bool async)
{
    sim_redis_t *rs = sim_redis_new(rng);
    inv_cluster_transport_set(sim_redis_transport(rs, async));
    return rs;
}

void sim_transport_free(sim_redis_t *rs)
{
    inv_cluster_transport_set(NULL);
    sim_redis_free(rs);
}
