/*
 * The audit log (see gw_audit.h): one JSON line per change, appended with
 * O_APPEND and fdatasync'ed, read back for GET /admin/v1/audit and rollback.
 */
#include "gateway/gw_audit.h"

#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_log.h"
#include "common/cm_time.h"
#include "gateway/gw_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct gw_audit {
    pthread_mutex_t mu;
    int fd;
    char path[600];
    _Atomic uint64_t version;
};

/* Reads every line; calls fn for each parsed object until it returns nonzero. */
static int scan(gw_audit_t *a, int (*fn)(json_t *line, void *ctx), void *ctx)
{
    FILE *f = fopen(a->path, "r");
    if (!f)
        return errno == ENOENT ? 0 : CM_EIO;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int rc = 0;
    while (rc == 0 && (n = getline(&line, &cap, f)) > 0) {
        json_t *j = json_loadb(line, (size_t)n, 0, NULL);
        if (!j)
            continue; /* a torn last line after a crash: skipped */
        rc = fn(j, ctx);
        json_decref(j);
    }
    free(line);
    fclose(f);
    return rc < 0 ? rc : 0;
}

static int last_version(json_t *j, void *ctx)
{
    uint64_t *v = ctx;
    json_int_t n = json_integer_value(json_object_get(j, "version"));
    if (n > 0 && (uint64_t)n > *v)
        *v = (uint64_t)n;
    return 0;
}

/*
 * A torn last line (a crash or a full disk in its write) is cut off: scan
 * skips it, but the next line appended after it would be glued to it and
 * unreadable, lost to the audit list and rollback, and its version given
 * out again at the next start. Cuts the file after its last newline.
 */
static int cut_torn_tail(int fd)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return CM_EIO;
    char buf[4096];
    off_t end = st.st_size;
    while (end > 0) {
        size_t n = end < (off_t)sizeof(buf) ? (size_t)end : sizeof(buf);
        if (pread(fd, buf, n, end - (off_t)n) != (ssize_t)n)
            return CM_EIO;
        size_t i = n;
        while (i > 0 && buf[i - 1] != '\n')
            i--;
        if (i > 0) {
            end = end - (off_t)n + (off_t)i;
            break;
        }
        end -= (off_t)n;
    }
    if (end == st.st_size)
        return 0;
    cm_log_warn("audit", "cutting a torn last line off the audit log", "bytes=%lld",
                (long long)(st.st_size - end));
    return ftruncate(fd, end) == 0 ? 0 : CM_EIO;
}

int gw_audit_open(gw_server_t *srv, char *errbuf, size_t errlen)
{
    gw_audit_t *a = cm_xcalloc(1, sizeof(*a));
    pthread_mutex_init(&a->mu, NULL);
    snprintf(a->path, sizeof(a->path), "%s/audit.log", srv->cfg->data_dir);
    uint64_t v = 0;
    if (scan(a, last_version, &v) != 0) {
        snprintf(errbuf, errlen, "cannot read %s: %s", a->path, strerror(errno));
        free(a);
        return CM_EIO;
    }
    atomic_store(&a->version, v);
    a->fd = open(a->path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (a->fd < 0 || cut_torn_tail(a->fd) != 0) {
        snprintf(errbuf, errlen, "cannot open %s: %s", a->path, strerror(errno));
        if (a->fd >= 0)
            close(a->fd);
        free(a);
        return CM_EIO;
    }
    srv->audit = a;
    gw_audit_record(srv, "flashgate", "start", "", NULL, NULL);
    return 0;
}

void gw_audit_close(gw_server_t *srv)
{
    gw_audit_t *a = srv->audit;
    if (!a)
        return;
    close(a->fd);
    pthread_mutex_destroy(&a->mu);
    free(a);
    srv->audit = NULL;
}

uint64_t gw_audit_version(gw_server_t *srv)
{
    return srv->audit ? atomic_load(&srv->audit->version) : 0;
}

uint64_t gw_audit_record(gw_server_t *srv, const char *who, const char *what, const char *target,
                         void *old_json, void *new_json)
{
    gw_audit_t *a = srv->audit;
    if (!a) {
        json_decref(old_json);
        json_decref(new_json);
        return 0;
    }
    char at[40];
    cm_time_format_rfc3339(cm_wall_ms(), at, sizeof(at));
    pthread_mutex_lock(&a->mu);
    uint64_t v = atomic_load(&a->version) + 1;
    json_t *o = json_pack("{s:I,s:s,s:s,s:s,s:s,s:o,s:o,s:o}", "version", (json_int_t)v, "at", at,
                          "who", who, "what", what, "target", target ? target : "", "old",
                          old_json ? (json_t *)old_json : json_null(), "new",
                          new_json ? (json_t *)new_json : json_null(), "config",
                          (json_t *)gw_config_snapshot(srv));
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    bool ok = false;
    if (s) {
        size_t len = strlen(s);
        s[len] = '\n'; /* json_dumps leaves room only for the NUL: rewrite it */
        struct stat st;
        bool sized = fstat(a->fd, &st) == 0;
        ssize_t w = write(a->fd, s, len + 1);
        ok = w == (ssize_t)(len + 1) && fdatasync(a->fd) == 0;
        /* A short write (a full disk) left part of a line: cut it off, or
         * the next line is glued to it (see cut_torn_tail). */
        if (w > 0 && w < (ssize_t)(len + 1) && sized) {
            int e = errno; /* the write's, for the log below */
            if (ftruncate(a->fd, st.st_size) != 0)
                cm_log_error("audit", "cannot cut a torn line off the audit log", "path=%s",
                             a->path);
            errno = e;
        }
        free(s);
    }
    if (ok)
        atomic_store(&a->version, v);
    pthread_mutex_unlock(&a->mu);
    if (!ok) {
        cm_log_error("audit", "cannot append to the audit log", "path=%s err=\"%s\"", a->path,
                     strerror(errno));
        return 0;
    }
    cm_log_info("audit", "change recorded", "version=%llu who=%s what=%s target=%s",
                (unsigned long long)v, who, what, target ? target : "");
    return v;
}

typedef struct list_ctx {
    uint64_t since;
    size_t limit;
    json_t *arr;
} list_ctx_t;

static int list_one(json_t *j, void *ctx)
{
    list_ctx_t *c = ctx;
    json_int_t v = json_integer_value(json_object_get(j, "version"));
    if (v <= 0 || (uint64_t)v <= c->since)
        return 0;
    json_array_append(c->arr, j);
    if (json_array_size(c->arr) > c->limit)
        json_array_remove(c->arr, 0);
    return 0;
}

void *gw_audit_list(gw_server_t *srv, uint64_t since, size_t limit)
{
    gw_audit_t *a = srv->audit;
    list_ctx_t c = {.since = since, .limit = limit ? limit : 1, .arr = json_array()};
    if (!a)
        return c.arr;
    pthread_mutex_lock(&a->mu);
    int rc = scan(a, list_one, &c);
    pthread_mutex_unlock(&a->mu);
    if (rc != 0) {
        json_decref(c.arr);
        return NULL;
    }
    return c.arr;
}

typedef struct find_ctx {
    uint64_t version;
    json_t *config;
} find_ctx_t;

static int find_one(json_t *j, void *ctx)
{
    find_ctx_t *c = ctx;
    json_int_t v = json_integer_value(json_object_get(j, "version"));
    if (v <= 0 || (uint64_t)v != c->version)
        return 0;
    json_t *cfg = json_object_get(j, "config");
    if (json_is_object(cfg)) {
        json_decref(c->config);
        c->config = json_incref(cfg);
    }
    return 0;
}

void *gw_audit_config_at(gw_server_t *srv, uint64_t version)
{
    gw_audit_t *a = srv->audit;
    if (!a)
        return NULL;
    find_ctx_t c = {.version = version};
    pthread_mutex_lock(&a->mu);
    scan(a, find_one, &c);
    pthread_mutex_unlock(&a->mu);
    return c.config;
}
