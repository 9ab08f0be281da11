/*
 * Heavy hitters among rejected requests: per-worker top-k of users and
 * client addresses, merged on read (GET /admin/v1/stats, /metrics).
 */
#include "gateway/base/gw_base.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

void gw_hitters_add(gw_worker_t *w, const char *user, const uint8_t *ipkey, size_t iplen)
{
    pthread_mutex_lock(&w->hh_mu);
    if (user && *user)
        cm_topk_add(&w->hh_users, user, strlen(user));
    if (ipkey && iplen)
        cm_topk_add(&w->hh_ips, ipkey, iplen);
    pthread_mutex_unlock(&w->hh_mu);
}

void gw_hitters_merge(gw_server_t *srv, cm_topk_t *users, cm_topk_t *ips)
{
    cm_topk_init(users);
    cm_topk_init(ips);
    if (!srv->pool.workers)
        return;
    for (unsigned i = 0; i < srv->pool.nworkers; i++) {
        gw_worker_t *w = &srv->pool.workers[i];
        pthread_mutex_lock(&w->hh_mu);
        cm_topk_merge(users, &w->hh_users);
        cm_topk_merge(ips, &w->hh_ips);
        pthread_mutex_unlock(&w->hh_mu);
    }
}

void gw_client_key_format(const uint8_t *key, size_t len, char *out, size_t cap)
{
    if (len == 4) {
        inet_ntop(AF_INET, key, out, (socklen_t)cap);
    } else if (len == 8) {
        uint8_t a[16] = {0};
        memcpy(a, key, 8);
        char tmp[64];
        inet_ntop(AF_INET6, a, tmp, sizeof(tmp));
        snprintf(out, cap, "%s/64", tmp);
    } else {
        snprintf(out, cap, "?");
    }
}
