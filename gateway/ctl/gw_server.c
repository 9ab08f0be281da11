/*
 * Wiring: opens the parts in dependency order (data dir, inventory, spool and
 * its replay, limiter, admin listener, workers) and closes them in reverse.
 */
#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_hash.h"
#include "common/cm_log.h"
#include "common/cm_time.h"
#include "gateway/base/gw_base.h"
#include "gateway/base/gw_fleet.h"
#include "gateway/buy/gw_buy.h"
#include "gateway/buy/gw_elig.h"
#include "gateway/buy/gw_fair.h"
#include "gateway/buy/gw_identity.h"
#include "gateway/ctl/gw_ctl.h"
#include "gateway/ctl/gw_ring.h"
#include "gateway/edge/gw_edge.h"
#include "gateway/http/gw_http.h"
#include "gateway/overload/gw_ol.h"
#include "gateway/proxy/gw_proxy.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_HELD_PER_WORKER 4096

static int mkdir_p(const char *path)
{
    char tmp[600];
    snprintf(tmp, sizeof(tmp), "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    }
    if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
        return -1;
    return 0;
}

/* The data dir is a writable directory, or the nearest part of its path that
 * exists is one (mkdir_p can make the rest). */
static int data_dir_check(const char *dir, char *errbuf, size_t errlen)
{
    char at[600];
    snprintf(at, sizeof(at), "%s", dir);
    struct stat st;
    int e = 0;
    while (stat(at, &st) != 0) {
        char *slash = strrchr(at, '/');
        if (errno != ENOENT || strcmp(at, ".") == 0 || strcmp(at, "/") == 0) {
            e = errno;
            break;
        }
        if (!slash)
            snprintf(at, sizeof(at), "."); /* a relative path starts in the cwd */
        else if (slash == at)
            at[1] = '\0';
        else
            *slash = '\0';
    }
    if (!e && !S_ISDIR(st.st_mode))
        e = ENOTDIR;
    if (!e && access(at, W_OK | X_OK) != 0)
        e = errno;
    if (!e)
        return 0;
    snprintf(errbuf, errlen, "cannot create data dir %s: %s (at %s)", dir, strerror(e), at);
    return CM_EIO;
}

int gw_server_check(const gw_config_t *cfg, char *errbuf, size_t errlen)
{
    int rc;
    struct sockaddr_storage ss;
    if ((rc = data_dir_check(cfg->data_dir, errbuf, errlen)))
        return rc;
    if ((rc = gw_addr_parse_listen(cfg->listen, &ss, errbuf, errlen)))
        return rc;
    gw_proxies_t px;
    memset(&px, 0, sizeof(px));
    rc = gw_proxies_parse(&px, cfg->trusted_proxies, errbuf, errlen);
    gw_proxies_free(&px);
    if (rc)
        return rc;
    if ((rc = gw_status_key_check(cfg, errbuf, errlen)))
        return rc;
    if ((rc = gw_ol_priority_key_check(cfg, errbuf, errlen)))
        return rc;
    return gw_admin_check(cfg, errbuf, errlen);
}

void gw_apply_limits(gw_server_t *srv)
{
    const gw_config_t *c = srv->cfg;
    gw_limits_set(srv->stores.limits, GW_SCOPE_GLOBAL,
                  (cm_rate_policy_t){.rate_milli = c->global_rps, .burst = c->global_burst});
    gw_limits_set(srv->stores.limits, GW_SCOPE_SALE,
                  (cm_rate_policy_t){.rate_milli = c->sale_rps, .burst = c->sale_burst});
    gw_limits_set(srv->stores.limits, GW_SCOPE_USER,
                  (cm_rate_policy_t){.rate_milli = c->user_rps, .burst = c->user_burst});
    gw_limits_set(srv->stores.limits, GW_SCOPE_IP,
                  (cm_rate_policy_t){.rate_milli = c->ip_rps, .burst = c->ip_burst});
    gw_limits_set(srv->stores.limits, GW_SCOPE_SUBNET,
                  (cm_rate_policy_t){.rate_milli = c->subnet_rps, .burst = c->subnet_burst});
}

static uint32_t derive_node_id(const gw_config_t *cfg)
{
    char host[256] = "";
    gethostname(host, sizeof(host) - 1);
    char buf[1200];
    snprintf(buf, sizeof(buf), "%s|%s|%s", host, cfg->listen, cfg->data_dir);
    /* the same on every start of this gateway: the stable (unkeyed) hash */
    return (uint32_t)(cm_hash_stable(buf, strlen(buf)) % (CM_ID_NODE_MAX + 1));
}

/*---- start / stop ----*/

int gw_server_start(gw_server_t *srv, gw_config_t *cfg, cm_conf_t *conf, char *errbuf,
                    size_t errlen)
{
    int rc;
    srv->cfg = cfg;
    srv->config.conf = conf;
    srv->admin = cm_xcalloc(1, sizeof(*srv->admin));
    pthread_mutex_init(&srv->config.mu, NULL);
    /* debug.wall_offset_ms (a test seam the config allows with the debug
     * routes only): before the first wall-clock read, the spool replay's */
    if (cfg->debug_wall_offset_ms[0])
        cm_time_set_wall_offset(strtoll(cfg->debug_wall_offset_ms, NULL, 10));
    srv->life.started_ms = cm_wall_ms();
    atomic_store(&srv->node.since_ms, srv->life.started_ms - 1);
    srv->pool.body_limit = cfg->body_limit;
    srv->pool.max_held = MAX_HELD_PER_WORKER;
    srv->pool.access_sample_ppm = cfg->access_sample_milli * 1000; /* thousandths of 1 -> ppm */
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    srv->pool.nworkers = cfg->threads ? (unsigned)cfg->threads : (unsigned)(ncpu > 0 ? ncpu : 1);
    srv->node.id = cfg->node_id <= CM_ID_NODE_MAX ? (uint32_t)cfg->node_id : derive_node_id(cfg);
    srv->config.loaded = cm_xmalloc(sizeof(*srv->config.loaded));
    *srv->config.loaded = *cfg;

    if ((rc = gw_server_check(cfg, errbuf, errlen)))
        return rc;
    if (mkdir_p(cfg->data_dir) != 0) {
        snprintf(errbuf, errlen, "cannot create data dir %s: %s", cfg->data_dir,
                 strerror(errno));
        return CM_EIO;
    }
    if ((rc = gw_proxies_parse(&srv->conns.proxies, cfg->trusted_proxies, errbuf, errlen)))
        return rc;
    if ((rc = gw_status_key_load(srv, errbuf, errlen)))
        return rc;
    /* The raw Idempotency-Keys' fingerprints an order keeps mean the same
     * after a restart (inv_idem_fp_key_set): the spool replay refills the
     * sold-out key sets from them. */
    uint8_t fpk[16];
    if ((rc = gw_status_key_derive(srv, "idem-key-fp", fpk, sizeof(fpk)))) {
        snprintf(errbuf, errlen, "cannot derive the idempotency-key fingerprint key");
        return rc;
    }
    inv_idem_fp_key_set(fpk);
    explicit_bzero(fpk, sizeof(fpk));
    /* Keys, verifier, the JWKS fetcher's first fetch, a cache per worker (before
     * the workers), and the order owners' table, which the spool replay fills. */
    if ((rc = gw_identity_start(srv, errbuf, errlen)))
        return rc;
    srv->stores.orders = gw_orders_new(cfg->orders_max_known);
    srv->stores.limits = gw_limits_new(cfg->limiter_max_keys);
    if (!srv->stores.limits) {
        snprintf(errbuf, errlen, "cannot allocate the limiter table for %llu keys",
                 (unsigned long long)cfg->limiter_max_keys);
        return CM_ENOMEM;
    }
    /* The workers read the per-sale rules; a replaced set is freed once each
     * has passed the end of a loop iteration (gw_http_check). */
    if (gw_limits_set_readers(srv->stores.limits, srv->pool.nworkers) != 0) {
        snprintf(errbuf, errlen, "cannot allocate the limiter's reader slots");
        return CM_ENOMEM;
    }
    gw_apply_limits(srv);

    inv_opts_t io = {.data_dir = cfg->data_dir,
                     .max_sales = (uint32_t)cfg->max_sales,
                     .redis_pool = (uint32_t)cfg->redis_pool,
                     .redis_batch = (uint32_t)cfg->redis_batch,
                     .redis_timeout_ms = (uint32_t)cfg->redis_timeout_ms,
                     .redis_password = cfg->redis_password,
                     .max_held_orders = cfg->inv_max_held_orders};
    char why[256] = "";
    if ((rc = inv_open_opts(&srv->stores.inv, cfg->inventory, &io, why, sizeof(why)))) {
        snprintf(errbuf, errlen, "inventory %s: %s", cfg->inventory, why[0] ? why : cm_strerror(rc));
        return rc;
    }

    /* Fleet membership may claim a node id and leases the generator to it. */
    cm_id_gen_init(&srv->node.ids, srv->node.id);
    if ((rc = gw_fleet_start(srv, errbuf, errlen)))
        return rc;

    if ((rc = gw_releaser_start(srv, errbuf, errlen)))
        return rc;

    char spool_dir[600];
    snprintf(spool_dir, sizeof(spool_dir), "%s/spool", cfg->data_dir);
    oq_spool_opts_t so = {.dir = spool_dir,
                          .durability = cfg->durability == GW_DURABILITY_FSYNC
                                            ? OQ_DURABILITY_FSYNC
                                            : OQ_DURABILITY_WRITE,
                          .segment_bytes = cfg->spool_segment_bytes,
                          .max_bytes = cfg->spool_max_bytes};
    if ((rc = oq_spool_open(&srv->stores.spool, &so, why, sizeof(why)))) {
        snprintf(errbuf, errlen, "spool %s: %s", spool_dir, why[0] ? why : cm_strerror(rc));
        return rc;
    }
    gw_replay_ctx_t rctx;
    gw_book_t rbook;
    gw_replay_init(srv, &rctx, &rbook, strcmp(cfg->kafka_brokers, "embedded") == 0);
    uint64_t t0 = cm_mono_us();
    long n = oq_spool_scan(srv->stores.spool, (oq_pos_t){0, 0}, gw_replay_one, &rctx);
    if (n < 0) {
        snprintf(errbuf, errlen, "spool replay: %s", cm_strerror((int)n));
        return (int)n;
    }
    if (rctx.max_id)
        cm_id_gen_after(&srv->node.ids, rctx.max_id);
    cm_log_info("gw", "spool replayed", "orders=%llu events=%llu elapsed_ms=%llu",
                (unsigned long long)rctx.orders, (unsigned long long)rctx.events,
                (unsigned long long)((cm_mono_us() - t0) / 1000));

    /* After the replay: a lottery's winners are orders the replay knows. */
    if ((rc = gw_fair_open(srv, gw_acceptor(srv), errbuf, errlen)))
        return rc;
    if ((rc = gw_elig_open(srv, errbuf, errlen)))
        return rc;

    if ((rc = gw_kafka_start(srv, errbuf, errlen)))
        return rc;
    if ((rc = gw_overload_start(srv, errbuf, errlen)))
        return rc;
    if ((rc = gw_px_start(srv, errbuf, errlen)))
        return rc;
    if ((rc = gw_admin_start(srv, errbuf, errlen)))
        return rc;
    if ((rc = gw_workers_start(srv, errbuf, errlen)))
        return rc;
    if ((rc = gw_ring_start(srv, errbuf, errlen)))
        return rc;
    if ((rc = gw_fair_start_thread(srv, errbuf, errlen)))
        return rc;
    atomic_store(&srv->life.ready, true);
    cm_log_info("gw", "flashgate ready",
                "listen=%s admin_listen=%s workers=%u node_id=%u inventory=%s durability=%s",
                cfg->listen, cfg->admin_listen, srv->pool.nworkers, srv->node.id,
                inv_backend_name(srv->stores.inv),
                cfg->durability == GW_DURABILITY_FSYNC ? "fsync" : "write");
    return 0;
}

void gw_server_stop(gw_server_t *srv)
{
    atomic_store(&srv->life.draining, true);
    atomic_store(&srv->life.ready, false);
    /* Draining: no heartbeat from now on (no buy takes an order id any more;
     * the leave, after the workers, still lowers the node id's floor). Told
     * first, so that one blocked on an unresponsive Redis times out while the
     * workers drain rather than after them: each step below that talks to
     * Redis waits its own timeout, and in a row they ran past
     * server.drain_timeout with Redis stopped and the CPU busy (exit 1). */
    gw_fleet_stop_request(srv);
    gw_fair_stop_thread(srv); /* it spools and reserves: before the workers go */
    gw_workers_stop(srv);
    gw_admin_stop(srv);
    gw_ring_stop(srv); /* after the admin (it reads the ring), before what it samples goes */
    gw_workers_free_guards(srv); /* the admin's stats read them until it stops */
    gw_identity_stop(srv); /* the workers verify and /metrics reads its counters until they stop */
    gw_fair_close(srv); /* the workers and the admin read it until they stop */
    gw_elig_close(srv);
    gw_px_stop(srv); /* before gw_overload_stop: it reads the registered routes */
    gw_overload_stop(srv);
    gw_fleet_stop(srv);
    gw_kafka_stop(srv);
    gw_releaser_stop(srv);
    if (srv->stores.spool)
        oq_spool_close(srv->stores.spool);
    if (srv->stores.inv)
        inv_close(srv->stores.inv);
    gw_limits_free(srv->stores.limits);
    gw_orders_free(srv->stores.orders);
    gw_proxies_free(&srv->conns.proxies);
    gw_status_key_free(srv);
    CM_FREE(srv->config.loaded);
    CM_FREE(srv->admin);
    free(srv->pool.workers);
    srv->pool.workers = NULL;
    srv->stores.spool = NULL;
    srv->stores.inv = NULL;
    srv->stores.limits = NULL;
    srv->stores.orders = NULL;
}

/*---- graceful operations: leave, reload ----*/

void gw_server_leave(gw_server_t *srv)
{
    atomic_store(&srv->life.leaving, true);
}

/* Bytes an option's value takes in the config struct. */
static size_t opt_size(const cm_opt_t *o)
{
    switch (o->type) {
    case CM_OPT_STR:
    case CM_OPT_KV:
        return o->size;
    case CM_OPT_BOOL:
        return sizeof(bool);
    case CM_OPT_ENUM:
        return sizeof(int);
    default:
        return sizeof(uint64_t);
    }
}

/* Keys a reload may apply: what the admin API may change, and the log level. */
static bool reloadable(const cm_opt_t *o)
{
    return (o->flags & CM_OPT_RUNTIME) || strcmp(o->key, "log.level") == 0;
}

int gw_server_reload(gw_server_t *srv, int argc, char **argv, unsigned *applied,
                     unsigned *restart)
{
    *applied = *restart = 0;
    gw_config_t *nc = cm_xmalloc(sizeof(*nc));
    cm_conf_t ncf;
    char *err = cm_xmalloc(16384);
    err[0] = '\0';
    int rc = gw_config_load(nc, &ncf, argc, argv, err, 16384);
    if (rc != 0) {
        for (char *line = strtok(err, "\n"); line; line = strtok(NULL, "\n"))
            cm_log_error("gw", "reload: invalid configuration", "problem=\"%s\"", line);
        cm_log_error("gw", "reload refused, nothing changed", NULL);
        goto out;
    }
    char changed[1024] = "", pending[1024] = "";
    size_t nch = 0, npe = 0;
    bool limits = false;
    uint32_t fields = 0; /* the published limit fields among them (gw_fleet_limit_bit) */
    /* The fleet's limits lock from before the first write to the limits until
     * their publish, as an admin change holds it (gw_fleet.h; order: it, then
     * config.mu): taken only around the publish, a peer's version the fleet thread
     * applied in between replaced the file's new values before they were
     * applied or published, and the reload's change was lost. */
    char fwhy[512] = "";
    gw_fleet_limits_lock(srv, fwhy, sizeof(fwhy));
    pthread_mutex_lock(&srv->config.mu);
    for (const cm_opt_t *o = gw_config_opts; o->key; o++) {
        size_t i = (size_t)(o - gw_config_opts), sz = opt_size(o);
        char *was = (char *)srv->config.loaded + o->offset;
        const char *now = (const char *)nc + o->offset;
        if (memcmp(was, now, sz) == 0)
            continue; /* unchanged in the sources: a runtime change (admin API) stays */
        if (!reloadable(o)) {
            npe += (size_t)snprintf(pending + npe, npe < sizeof(pending) ? sizeof(pending) - npe : 0,
                                    "%s%s", npe ? "," : "", o->key);
            if (npe >= sizeof(pending))
                npe = sizeof(pending) - 1;
            (*restart)++;
            continue;
        }
        char val[4200], why[512];
        cm_conf_format(&ncf, o, val, sizeof(val));
        if (cm_conf_set(srv->config.conf, o->key, val, ncf.src[i], why, sizeof(why)) != 0) {
            cm_log_error("gw", "reload: cannot apply", "key=%s problem=\"%s\"", o->key, why);
            continue;
        }
        memcpy(was, now, sz);
        nch += (size_t)snprintf(changed + nch, nch < sizeof(changed) ? sizeof(changed) - nch : 0,
                                "%s%s", nch ? "," : "", o->key);
        if (nch >= sizeof(changed))
            nch = sizeof(changed) - 1;
        if (strncmp(o->key, "limits.", 7) == 0) {
            limits = true;
            fields |= gw_fleet_limit_bit(o->key + 7);
        }
        (*applied)++;
    }
    pthread_mutex_unlock(&srv->config.mu);
    if (limits) {
        /* The changed keys are the change's fields: over a newer version of the
         * fleet's, they are laid over it. Never refused: nobody to answer, and
         * the file is the operator's word (kept pending if it cannot go out). */
        gw_apply_limits(srv);
        if (gw_fleet_publish_limits(srv, fields, false, NULL, NULL, fwhy, sizeof(fwhy)) != 0)
            cm_log_warn("gw", "reload: limits changed here but not published to the fleet",
                        "reason=\"%s\"", fwhy);
    }
    gw_fleet_limits_unlock(srv);
    cm_log_set_level((cm_log_level_t)srv->cfg->log_level);
    if (*restart)
        cm_log_warn("gw", "reload: changed keys need a restart to take effect",
                    "keys=%s", pending);
    cm_log_info("gw", "configuration reloaded", "applied=%u keys=%s restart_needed=%u",
                *applied, nch ? changed : "none", *restart);
out:
    cm_conf_free(&ncf);
    free(nc);
    free(err);
    return rc;
}
