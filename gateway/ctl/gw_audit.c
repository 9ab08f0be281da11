/*
 * The audit log (see gw_audit.h): one JSON line per change, appended with
 * O_APPEND and fdatasync'ed, read back for GET /admin/v1/audit and rollback.
 */
#include "gateway/ctl/gw_audit.h"

#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_log.h"
#include "common/cm_time.h"
#include "gateway/base/gw_base.h"
#include "gateway/ctl/gw_limit_json.h"
#include "gateway/buy/gw_buy.h"
#include "gateway/ctl/gw_ctl.h"
#include "gateway/edge/gw_edge.h"
#include "gateway/http/gw_http.h"
#include "gateway/overload/gw_ol.h"
#include "gateway/proxy/gw_proxy.h"

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
    /* the file ends in the start of a line whose append failed and could not
     * be cut off: the next line is written after a newline of its own (mu) */
    bool torn;
};

static bool quick_version(const char *s, size_t n, int64_t *v);
static int lines_backward(int fd, off_t end, int (*fn)(const char *line, size_t n, void *ctx),
                          void *ctx);

/*
 * The version to continue from: that of the last line that parses and has a
 * version > 0 (a torn last line is skipped, as every reader skips it, unless
 * it parses). The writer's versions never go back along the file (each append
 * takes the last one + 1; a failed one is cut back off, or its version is
 * never given again: gw_audit_record), so that line holds the largest: opening
 * reads the log from its end and stops there, whatever the log's length, where
 * it once parsed every line (about 1 s at 100,000 lines, bench/audit_list.py).
 * (A log written before that may hold a version on two lines in a row, the
 * first one's fdatasync having failed: the list shows both, a rollback
 * restores the last, as a forward scan did.)
 */
static int last_version(const char *line, size_t n, void *ctx)
{
    uint64_t *v = ctx;
    int64_t q;
    if (quick_version(line, n, &q) && q <= 0)
        return 0; /* no positive version, whether or not it parses */
    json_t *j = json_loadb(line, n, 0, NULL);
    if (!j)
        return 0;
    json_int_t x = json_integer_value(json_object_get(j, "version"));
    json_decref(j);
    if (x <= 0)
        return 0;
    *v = (uint64_t)x;
    return 1;
}

/*
 * A torn last line (a crash or a full disk in its write) is cut off: every reader
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
    a->fd = open(a->path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (a->fd < 0) {
        snprintf(errbuf, errlen, "cannot open %s: %s", a->path, strerror(errno));
        pthread_mutex_destroy(&a->mu);
        free(a);
        return CM_EIO;
    }
    /* the version first, from the file as found (its torn tail included, as a
     * forward scan of every line counted it when it parses), then the cut */
    uint64_t v = 0;
    struct stat st;
    if (fstat(a->fd, &st) != 0 || lines_backward(a->fd, st.st_size, last_version, &v) != 0) {
        snprintf(errbuf, errlen, "cannot read %s: %s", a->path, strerror(errno));
        close(a->fd);
        pthread_mutex_destroy(&a->mu);
        free(a);
        return CM_EIO;
    }
    atomic_store(&a->version, v);
    if (cut_torn_tail(a->fd) != 0) {
        snprintf(errbuf, errlen, "cannot open %s: %s", a->path, strerror(errno));
        close(a->fd);
        pthread_mutex_destroy(&a->mu);
        free(a);
        return CM_EIO;
    }
    srv->admin->audit = a;
    gw_audit_record(srv, "flashgate", "start", "", NULL, NULL);
    return 0;
}

void gw_audit_close(gw_server_t *srv)
{
    gw_audit_t *a = srv->admin->audit;
    if (!a)
        return;
    close(a->fd);
    pthread_mutex_destroy(&a->mu);
    free(a);
    srv->admin->audit = NULL;
}

uint64_t gw_audit_version(gw_server_t *srv)
{
    return srv->admin->audit ? atomic_load(&srv->admin->audit->version) : 0;
}

/*
 * An append that fails leaves no line behind and gives its version back: the
 * file is cut to its length before the append (under mu: no reader sees the
 * bytes in between), whether the write was short (a full disk: a torn line,
 * which the next line would be glued to) or whole and its fdatasync failed.
 * The whole line must go too: kept, GET /admin/v1/audit and a rollback read it
 * at once though the caller answers the change as unaudited (0), and either
 * its version goes to the next change as well (two lines of one version:
 * `since` and a rollback to it ambiguous) or it does not, and whether a crash
 * keeps the line is chance.
 *
 * The cut is not synced: a crash before the next fdatasync may bring the line
 * back from the disk, whole or torn. A torn one is cut at the next open; a
 * whole one then holds the largest version and the open continues after it
 * (this process's next line, of the same version, is at the same offset, and
 * it lands only with the fdatasync that lands the cut).
 *
 * Should the cut fail as well (EIO, or an append-only file: chattr +a), the
 * bytes stay and their version is never given again: a whole line is in the
 * log (answered as unaudited: not known to be durable), and a torn one is
 * ended by a newline written before the next line, so that no line is glued
 * to it.
 */
uint64_t gw_audit_record(gw_server_t *srv, const char *who, const char *what, const char *target,
                         void *old_json, void *new_json)
{
    gw_audit_t *a = srv->admin->audit;
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
    char *line = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    bool ok = false;
    const char *why = line ? NULL : "out of memory";
    int err = 0; /* errno's, when why is NULL */
    if (line) {
        size_t len = strlen(line) + 1;
        line[len - 1] = '\n'; /* json_dumps leaves room only for the NUL: rewrite it */
        char *s = line;
        if (a->torn) { /* a torn line that could not be cut: end it first (see above) */
            s = cm_xmalloc(len + 1);
            s[0] = '\n';
            memcpy(s + 1, line, len);
            free(line);
            len++;
        }
        struct stat st;
        ssize_t w = 0;
        if (fstat(a->fd, &st) != 0) {
            err = errno; /* no length to cut back to: no append */
        } else {
            w = write(a->fd, s, len);
            if (w < 0)
                err = errno;
            else if (w < (ssize_t)len)
                why = "short write (disk full?)";
            else if (fdatasync(a->fd) != 0)
                err = errno;
            else
                ok = true;
        }
        if (ok) {
            a->torn = false;
        } else if (w > 0 && ftruncate(a->fd, st.st_size) != 0) {
            cm_log_error("audit", "cannot cut a failed append off the audit log",
                         "path=%s err=\"%s\"", a->path, strerror(errno));
            atomic_store(&a->version, v); /* the bytes stay: never given again */
            a->torn = w < (ssize_t)len;
        }
        free(s);
    }
    if (ok)
        atomic_store(&a->version, v);
    pthread_mutex_unlock(&a->mu);
    if (!ok) {
        cm_log_error("audit", "cannot append to the audit log", "path=%s err=\"%s\"", a->path,
                     why ? why : strerror(err));
        return 0;
    }
    cm_log_info("audit", "change recorded", "version=%llu who=%s what=%s target=%s",
                (unsigned long long)v, who, what, target ? target : "");
    return v;
}

/*
 * Reading for GET /admin/v1/audit and rollback. The log is append-only and a
 * line's bytes never change once the append that wrote them returned, so a
 * reader takes the writers' mutex only to read the file's length (that waits
 * for an append in flight and no longer), then reads [0, length) without it:
 * an admin change is never held up by a reader's scan. Lines are read from the
 * end backwards, and only a line that can match is parsed: its version is read
 * straight off the text when it is the writer's own shape (quick_version).
 * The answer is the one a forward scan of every parsed line gives: the newest
 * `limit` lines that parse and whose version > since, oldest first; an
 * unparseable line (a torn one) is skipped and counts for nothing. O(bytes
 * read), and the bytes read stop once `limit` entries are found.
 */

/* The file's length with no append in flight; -1 on error. */
static off_t snapshot_end(gw_audit_t *a)
{
    struct stat st;
    pthread_mutex_lock(&a->mu);
    int rc = fstat(a->fd, &st);
    pthread_mutex_unlock(&a->mu);
    return rc == 0 ? st.st_size : -1;
}

/*
 * The version of a line in the writer's shape, {"version":N,... (gw_audit_record's
 * json_dumps, "version" first), without parsing it: true with *v when that
 * prefix is there and the rest of the line can name no other "version" (no
 * further "version" token, no \u escape that could spell one), so that a
 * parse would find the same top-level version if the line parses at all (a
 * line that does not, 09 say, is skipped either way). False: the line must be
 * parsed to know.
 */
static bool quick_version(const char *s, size_t n, int64_t *v)
{
    static const char head[] = "{\"version\":";
    size_t h = sizeof(head) - 1, i = h;
    if (n < h + 2 || memcmp(s, head, h) != 0)
        return false;
    int64_t x = 0;
    while (i < n && s[i] >= '0' && s[i] <= '9' && i - h < 18)
        x = x * 10 + (s[i++] - '0');
    if (i == h || i >= n || (s[i] != ',' && s[i] != '}'))
        return false; /* no digits, too many (they may not fit), or not a number's end */
    const char *rest = s + i;
    size_t rn = n - i;
    if (memmem(rest, rn, "\"version\"", 9) || memmem(rest, rn, "\\u", 2))
        return false;
    *v = x;
    return true;
}

/*
 * Calls fn for each line of fd's [0, end), the last one first (a line with its
 * '\n'; the last may have none, as getline returns it) until fn returns
 * nonzero. 0, fn's negative return, or CM_EIO.
 */
static int lines_backward(int fd, off_t end, int (*fn)(const char *line, size_t n, void *ctx),
                          void *ctx)
{
    enum { CHUNK = 64 * 1024 };
    size_t cap = 2 * CHUNK, len = 0; /* buf[0, len) holds the file's [lo, lo + len) */
    char *buf = cm_xmalloc(cap);
    off_t lo = end;
    int rc = 0;
    while (rc == 0) {
        /* the last line: after the last '\n' before the final byte */
        const char *nl = len > 1 ? memrchr(buf, '\n', len - 1) : NULL;
        if (nl) {
            size_t at = (size_t)(nl + 1 - buf);
            rc = fn(buf + at, len - at, ctx);
            len = at;
            continue;
        }
        if (lo == 0) {
            if (len > 0)
                rc = fn(buf, len, ctx);
            break;
        }
        /* the first line in buf starts further back: read the chunk before it */
        size_t k = lo < CHUNK ? (size_t)lo : CHUNK;
        if (len + k > cap) {
            cap = 2 * (len + k);
            buf = cm_xrealloc(buf, cap);
        }
        memmove(buf + k, buf, len);
        for (size_t got = 0; got < k;) {
            ssize_t r = pread(fd, buf + got, k - got, lo - (off_t)k + (off_t)got);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0) {
                rc = CM_EIO;
                break;
            }
            got += (size_t)r;
        }
        lo -= (off_t)k;
        len += k;
    }
    free(buf);
    return rc < 0 ? rc : 0;
}

typedef struct list_ctx {
    uint64_t since;
    size_t limit;
    json_t *newest_first;
} list_ctx_t;

static int list_one(const char *line, size_t n, void *ctx)
{
    list_ctx_t *c = ctx;
    int64_t q;
    if (quick_version(line, n, &q) && (q <= 0 || (uint64_t)q <= c->since))
        return 0;
    json_t *j = json_loadb(line, n, 0, NULL);
    if (!j)
        return 0; /* a torn line: skipped */
    json_int_t v = json_integer_value(json_object_get(j, "version"));
    if (v <= 0 || (uint64_t)v <= c->since) {
        json_decref(j);
        return 0;
    }
    json_array_append_new(c->newest_first, j);
    return json_array_size(c->newest_first) >= c->limit;
}

void *gw_audit_list(gw_server_t *srv, uint64_t since, size_t limit)
{
    gw_audit_t *a = srv->admin->audit;
    if (!a)
        return json_array();
    list_ctx_t c = {.since = since, .limit = limit ? limit : 1, .newest_first = json_array()};
    off_t end = snapshot_end(a);
    int rc = end < 0 ? CM_EIO : lines_backward(a->fd, end, list_one, &c);
    json_t *arr = NULL;
    if (rc == 0) {
        arr = json_array();
        for (size_t i = json_array_size(c.newest_first); i-- > 0;)
            json_array_append(arr, json_array_get(c.newest_first, i));
    }
    json_decref(c.newest_first);
    return arr;
}

typedef struct find_ctx {
    uint64_t version;
    json_t *config;
} find_ctx_t;

/* The last line of the version with a "config" object is the one (as a forward scan keeps). */
static int find_one(const char *line, size_t n, void *ctx)
{
    find_ctx_t *c = ctx;
    int64_t q;
    if (quick_version(line, n, &q) && (q <= 0 || (uint64_t)q != c->version))
        return 0;
    json_t *j = json_loadb(line, n, 0, NULL);
    if (!j)
        return 0;
    json_int_t v = json_integer_value(json_object_get(j, "version"));
    json_t *cfg = json_object_get(j, "config");
    int done = v > 0 && (uint64_t)v == c->version && json_is_object(cfg);
    if (done)
        c->config = json_incref(cfg);
    json_decref(j);
    return done;
}

int gw_audit_config_at(gw_server_t *srv, uint64_t version, void **config)
{
    gw_audit_t *a = srv->admin->audit;
    *config = NULL;
    if (!a)
        return 0;
    find_ctx_t c = {.version = version};
    off_t end = snapshot_end(a);
    int rc = end < 0 ? CM_EIO : lines_backward(a->fd, end, find_one, &c);
    if (rc != 0) { /* an I/O error is not "no such version" */
        json_decref(c.config);
        return CM_EIO;
    }
    *config = c.config;
    return 0;
}
