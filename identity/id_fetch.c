/*
 * The JWKS fetcher: one thread per verifier with a jwks_url, libcurl easy
 * calls bounded in time and size, never on a worker loop. Workers only read
 * the published key set; a refetch they ask for (unknown kid) is already
 * rate-limited by the verifier (one per jwks_min_refetch_s), so a flood of
 * unknown kids costs at most one fetch per that period.
 */
#include "identity/id_internal.h"

#include "common/cm_alloc.h"
#include "common/cm_log.h"
#include "common/cm_time.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct id_fetcher {
    id_verifier_t *v;
    id_config_t cfg;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool stop, wanted;
    atomic_bool stopping; /* read by curl's progress callback */
    /* stats, under mu */
    uint64_t ok, failed;
    int64_t last_ok_ms;
    char last_error[160];
};

typedef struct body {
    char *p;
    size_t n;
    bool too_large;
} body_t;

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *arg)
{
    body_t *b = arg;
    size_t n = size * nmemb;
    if (b->n + n > ID_JWKS_MAX_BYTES) {
        b->too_large = true;
        return 0; /* aborts the transfer */
    }
    b->p = cm_xrealloc(b->p, b->n + n + 1);
    memcpy(b->p + b->n, ptr, n);
    b->n += n;
    return n;
}

static int on_progress(void *arg, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    (void)dt, (void)dn, (void)ut, (void)un;
    id_fetcher_t *f = arg;
    return atomic_load(&f->stopping) ? 1 : 0;
}

/* Writes the answer next to the cache file and renames it in place. */
static void persist(const id_fetcher_t *f, const body_t *b)
{
    char tmp[ID_PATH_MAX + 16];
    snprintf(tmp, sizeof(tmp), "%s.tmp", f->cfg.jwks_cache_file);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
    bool ok = fd >= 0;
    size_t off = 0;
    while (ok && off < b->n) {
        ssize_t w = write(fd, b->p + off, b->n - off);
        if (w <= 0)
            ok = false;
        else
            off += (size_t)w;
    }
    if (fd >= 0) {
        ok = fsync(fd) == 0 && ok;
        close(fd);
    }
    if (!ok || rename(tmp, f->cfg.jwks_cache_file) < 0) {
        cm_log_warn("id", "cannot write identity.jwks_cache_file", "path=%s err=\"%s\"",
                    f->cfg.jwks_cache_file, strerror(errno));
        unlink(tmp);
    }
}

/* One fetch; publishes good keys. Returns true on success, else fills why. */
static bool fetch_once(id_fetcher_t *f, char *why, size_t whylen)
{
    CURL *h = curl_easy_init();
    if (!h) {
        snprintf(why, whylen, "curl_easy_init failed");
        return false;
    }
    body_t b = {0};
    char cerr[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(h, CURLOPT_URL, f->cfg.jwks_url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)f->cfg.jwks_timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)f->cfg.jwks_timeout_ms);
    curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)ID_JWKS_MAX_BYTES);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, f);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, cerr);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "flashgate-jwks/" FLASHGATE_VERSION);
    CURLcode rc = curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(h);
    bool ok = false;
    if (b.too_large || rc == CURLE_FILESIZE_EXCEEDED) {
        snprintf(why, whylen, "answer over %d bytes refused", ID_JWKS_MAX_BYTES);
    } else if (rc != CURLE_OK) {
        snprintf(why, whylen, "%s", cerr[0] ? cerr : curl_easy_strerror(rc));
    } else if (status != 200) {
        snprintf(why, whylen, "HTTP status %ld", status);
    } else {
        id_jwks_t *ks = id_jwks_parse(b.p ? b.p : "", b.n, why, whylen);
        if (ks) {
            /* on disk before in use: a restart never starts from keys older than those served */
            pthread_mutex_lock(&f->v->mu);
            bool changed = !id_jwks_equal(f->v->fetched, ks);
            pthread_mutex_unlock(&f->v->mu);
            if (f->cfg.jwks_cache_file[0] && (changed || access(f->cfg.jwks_cache_file, F_OK) < 0))
                persist(f, &b);
            id_verifier_set_keys(f->v, ks);
            if (changed)
                cm_log_info("id", "JWKS keys published", "keys=%zu", id_jwks_count(ks));
            id_jwks_unref(ks);
            ok = true;
        }
    }
    free(b.p);
    pthread_mutex_lock(&f->mu);
    if (ok) {
        f->ok++;
        f->last_ok_ms = cm_wall_ms();
        f->last_error[0] = '\0';
    } else {
        f->failed++;
        snprintf(f->last_error, sizeof(f->last_error), "%s", why);
    }
    pthread_mutex_unlock(&f->mu);
    if (!ok)
        id_verifier_refresh_failed(f->v, cm_wall_ms() / 1000);
    return ok;
}

static void wake(void *arg)
{
    id_fetcher_t *f = arg;
    pthread_mutex_lock(&f->mu);
    f->wanted = true;
    pthread_cond_signal(&f->cond);
    pthread_mutex_unlock(&f->mu);
}

static void *run(void *arg)
{
    id_fetcher_t *f = arg;
    uint64_t due_ms = cm_mono_ms() + (uint64_t)f->cfg.jwks_refresh_s * 1000;
    pthread_mutex_lock(&f->mu);
    while (!f->stop) {
        if (!f->wanted && cm_mono_ms() < due_ms) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            uint64_t left = due_ms - cm_mono_ms();
            if (left > 1000)
                left = 1000; /* re-check the clock each second */
            ts.tv_sec += (time_t)(left / 1000);
            ts.tv_nsec += (long)(left % 1000) * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&f->cond, &f->mu, &ts);
            continue;
        }
        f->wanted = false;
        pthread_mutex_unlock(&f->mu);
        char why[160];
        bool ok = fetch_once(f, why, sizeof(why));
        if (!ok)
            cm_log_warn("id", "JWKS fetch failed; last good keys kept", "url=%s why=\"%s\"",
                        f->cfg.jwks_url, why);
        due_ms = cm_mono_ms() +
                 (uint64_t)(ok ? f->cfg.jwks_refresh_s : f->cfg.jwks_min_refetch_s) * 1000;
        pthread_mutex_lock(&f->mu);
    }
    pthread_mutex_unlock(&f->mu);
    return NULL;
}

id_fetcher_t *id_fetcher_start(id_verifier_t *v, const id_config_t *c, char *err, size_t errlen)
{
    if (!c->jwks_url[0]) {
        snprintf(err, errlen, "identity.jwks_url is not set");
        return NULL;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    id_fetcher_t *f = cm_xcalloc(1, sizeof(*f));
    f->v = v;
    f->cfg = *c;
    pthread_mutex_init(&f->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&f->cond, &ca);
    pthread_condattr_destroy(&ca);
    atomic_init(&f->stopping, false);
    char why[160];
    if (!fetch_once(f, why, sizeof(why))) {
        if (id_verifier_key_count(v) == 0) {
            snprintf(err, errlen, "identity.jwks_url %s: %s (and no last good keys in "
                     "identity.jwks_cache_file)", c->jwks_url, why);
            pthread_cond_destroy(&f->cond);
            pthread_mutex_destroy(&f->mu);
            free(f);
            return NULL;
        }
        cm_log_warn("id", "JWKS fetch failed at start; using the last good keys",
                    "url=%s why=\"%s\" keys=%zu", c->jwks_url, why, id_verifier_key_count(v));
    }
    if (pthread_create(&f->thread, NULL, run, f) != 0) {
        snprintf(err, errlen, "cannot start the JWKS thread");
        pthread_cond_destroy(&f->cond);
        pthread_mutex_destroy(&f->mu);
        free(f);
        return NULL;
    }
    pthread_mutex_lock(&v->mu);
    v->wake_arg = f;
    v->wake = wake;
    pthread_mutex_unlock(&v->mu);
    return f;
}

void id_fetcher_stop(id_fetcher_t *f)
{
    if (!f)
        return;
    pthread_mutex_lock(&f->v->mu);
    f->v->wake = NULL;
    f->v->wake_arg = NULL;
    pthread_mutex_unlock(&f->v->mu);
    atomic_store(&f->stopping, true);
    pthread_mutex_lock(&f->mu);
    f->stop = true;
    pthread_cond_signal(&f->cond);
    pthread_mutex_unlock(&f->mu);
    pthread_join(f->thread, NULL);
    pthread_cond_destroy(&f->cond);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

void id_fetch_stats(id_fetcher_t *f, id_verifier_t *v, id_fetch_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    if (f) {
        pthread_mutex_lock(&f->mu);
        out->ok = f->ok;
        out->failed = f->failed;
        out->last_ok_ms = f->last_ok_ms;
        snprintf(out->last_error, sizeof(out->last_error), "%s", f->last_error);
        pthread_mutex_unlock(&f->mu);
    }
    if (v) {
        out->refetch_granted = atomic_load(&v->refetch_granted);
        out->refetch_denied = atomic_load(&v->refetch_denied);
        out->keys = id_verifier_key_count(v);
        pthread_mutex_lock(&v->mu);
        out->keys_refused = id_jwks_refused(v->fixed) + id_jwks_refused(v->fetched);
        pthread_mutex_unlock(&v->mu);
        out->stale = id_verifier_stale(v, cm_wall_ms() / 1000);
    }
}
