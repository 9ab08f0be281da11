/*
 * The audit log's readers (gw_audit.h): GET /admin/v1/audit's list and the
 * rollback's config_at answer exactly what a forward scan of every line gave
 * (the reference below is that scan: getline, json_loadb, the version filter,
 * the last `limit` kept), for hand-made logs with every odd line the format
 * allows and for random ones, across since/limit edges; and a list holds no
 * lock an append needs while it reads.
 *
 * Linked with --wrap=json_loadb (tests/CMakeLists.txt): the list parses lines
 * with json_loadb, so the wrapper below can stop one list mid-read and append
 * a change from another thread. And with --wrap of write, fdatasync, ftruncate
 * and pread: the wrappers fail the next call on the audit log's descriptor when
 * armed (a full disk, a disk error), so that an append that fails each way
 * leaves no version on two lines, and a read error is told from "no such
 * version".
 */
#include "common/cm_err.h"
#include "gateway/base/gw_base.h"
#include "gateway/base/gw_limit.h"
#include "gateway/buy/gw_buy.h"
#include "gateway/ctl/gw_audit.h"
#include "gateway/ctl/gw_ctl.h"
#include "gateway/edge/gw_edge.h"
#include "gateway/edge/gw_upcall.h"
#include "gateway/http/gw_http.h"
#include "gateway/overload/gw_ol.h"
#include "gateway/proxy/gw_proxy.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

/*---- json_loadb, wrapped ----*/

json_t *__real_json_loadb(const char *buffer, size_t buflen, size_t flags, json_error_t *error);

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool armed;      /* the next json_loadb starts the writer and waits for it */
    bool done;       /* the writer's append returned */
    bool in_time;    /* ... while the list was stopped in json_loadb */
    uint64_t written; /* the version it got */
    gw_server_t *srv;
} hook = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static void *writer(void *arg)
{
    (void)arg;
    uint64_t v = gw_audit_record(hook.srv, "test", "writer", "during-a-list", NULL, NULL);
    pthread_mutex_lock(&hook.mu);
    hook.written = v;
    hook.done = true;
    pthread_cond_broadcast(&hook.cv);
    pthread_mutex_unlock(&hook.mu);
    return NULL;
}

static pthread_t writer_thread;

json_t *__wrap_json_loadb(const char *buffer, size_t buflen, size_t flags, json_error_t *error);
static unsigned long loads; /* json_loadb calls (main thread only: the writer parses none) */

json_t *__wrap_json_loadb(const char *buffer, size_t buflen, size_t flags, json_error_t *error)
{
    loads++;
    pthread_mutex_lock(&hook.mu);
    bool armed = hook.armed;
    hook.armed = false;
    pthread_mutex_unlock(&hook.mu);
    if (armed) {
        assert_int_equal(pthread_create(&writer_thread, NULL, writer, NULL), 0);
        /* Bounded: an append that waits for this list never comes back here. */
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 10;
        pthread_mutex_lock(&hook.mu);
        int rc = 0;
        while (!hook.done && rc != ETIMEDOUT)
            rc = pthread_cond_timedwait(&hook.cv, &hook.mu, &until);
        hook.in_time = hook.done;
        pthread_mutex_unlock(&hook.mu);
    }
    return __real_json_loadb(buffer, buflen, flags, error);
}

/*---- write, fdatasync, ftruncate and pread, wrapped: faults of the disk ----*/

/* The build's 64-bit file offsets (_FILE_OFFSET_BITS=64) name the last two
 * ftruncate64 and pread64 in the objects: those are the symbols wrapped. */

ssize_t __real_write(int fd, const void *buf, size_t n);
int __real_fdatasync(int fd);
int __real_ftruncate64(int fd, off_t len);
ssize_t __real_pread64(int fd, void *buf, size_t n, off_t off);
ssize_t __wrap_write(int fd, const void *buf, size_t n);
int __wrap_fdatasync(int fd);
int __wrap_ftruncate64(int fd, off_t len);
ssize_t __wrap_pread64(int fd, void *buf, size_t n, off_t off);

/* Armed by the test thread; the calls come from it too (the admin's serialised
 * append, the list). Each counts down the calls it fails. */
static struct {
    const char *path; /* the audit log: only its descriptor is failed */
    int sync_fails;   /* fdatasync: EIO */
    int cut_fails;    /* ftruncate: EIO */
    int short_writes; /* write: only the first `keep` bytes, or all but the last `drop` */
    size_t keep, drop;
    int read_fails;   /* pread: EIO */
} fault;

static bool audit_fd(int fd)
{
    char link[64], target[256];
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, target, sizeof(target) - 1);
    if (n < 0 || !fault.path)
        return false;
    target[n] = '\0';
    return strcmp(target, fault.path) == 0;
}

ssize_t __wrap_write(int fd, const void *buf, size_t n)
{
    if (fault.short_writes > 0 && audit_fd(fd)) {
        fault.short_writes--;
        size_t k = fault.keep ? fault.keep : n - fault.drop;
        assert_true(k > 0 && k < n);
        return __real_write(fd, buf, k); /* a full disk takes the first bytes only */
    }
    return __real_write(fd, buf, n);
}

int __wrap_fdatasync(int fd)
{
    if (fault.sync_fails > 0 && audit_fd(fd)) {
        fault.sync_fails--;
        errno = EIO;
        return -1;
    }
    return __real_fdatasync(fd);
}

int __wrap_ftruncate64(int fd, off_t len)
{
    if (fault.cut_fails > 0 && audit_fd(fd)) {
        fault.cut_fails--;
        errno = EIO;
        return -1;
    }
    return __real_ftruncate64(fd, len);
}

ssize_t __wrap_pread64(int fd, void *buf, size_t n, off_t off)
{
    if (fault.read_fails > 0 && audit_fd(fd)) {
        fault.read_fails--;
        errno = EIO;
        return -1;
    }
    return __real_pread64(fd, buf, n, off);
}

/*---- a gateway's parts as the audit uses them ----*/

typedef struct mini {
    char dir[64];
    char path[128];
    gw_config_t cfg;
    gw_server_t srv;
    struct gw_server_admin admin; /* srv.admin */
} mini_t;

static void mini_init(mini_t *m)
{
    memset(m, 0, sizeof(*m));
    snprintf(m->dir, sizeof(m->dir), "/tmp/fg-audit-unit-XXXXXX");
    assert_non_null(mkdtemp(m->dir));
    snprintf(m->cfg.data_dir, sizeof(m->cfg.data_dir), "%s", m->dir);
    snprintf(m->path, sizeof(m->path), "%s/audit.log", m->dir);
    m->srv.cfg = &m->cfg;
    m->srv.admin = &m->admin;
    m->srv.stores.limits = gw_limits_new(1000);
}

static void mini_open(mini_t *m)
{
    char why[256] = "";
    if (gw_audit_open(&m->srv, why, sizeof(why)) != 0)
        fail_msg("gw_audit_open: %s", why);
}

static void mini_close(mini_t *m)
{
    gw_audit_close(&m->srv);
    gw_limits_free(m->srv.stores.limits);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", m->dir);
    assert_int_equal(system(cmd), 0);
}

static void write_log(mini_t *m, const char *text, size_t len)
{
    FILE *f = fopen(m->path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, len, f), len);
    fclose(f);
}

/*---- the reference: the forward scan the list and config_at did before ----*/

static json_t *ref_list(const char *path, uint64_t since, size_t limit)
{
    if (limit == 0)
        limit = 1;
    json_t *arr = json_array();
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) > 0) {
        json_t *j = __real_json_loadb(line, (size_t)n, 0, NULL);
        if (!j)
            continue;
        json_int_t v = json_integer_value(json_object_get(j, "version"));
        if (v > 0 && (uint64_t)v > since) {
            json_array_append(arr, j);
            if (json_array_size(arr) > limit)
                json_array_remove(arr, 0);
        }
        json_decref(j);
    }
    free(line);
    fclose(f);
    return arr;
}

static json_t *ref_config_at(const char *path, uint64_t version)
{
    json_t *found = NULL;
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) > 0) {
        json_t *j = __real_json_loadb(line, (size_t)n, 0, NULL);
        if (!j)
            continue;
        json_int_t v = json_integer_value(json_object_get(j, "version"));
        json_t *cfg = json_object_get(j, "config");
        if (v > 0 && (uint64_t)v == version && json_is_object(cfg)) {
            json_decref(found);
            found = json_incref(cfg);
        }
        json_decref(j);
    }
    free(line);
    fclose(f);
    return found;
}

static void same_list(mini_t *m, uint64_t since, size_t limit)
{
    json_t *want = ref_list(m->path, since, limit);
    json_t *got = gw_audit_list(&m->srv, since, limit);
    assert_non_null(got);
    if (!json_equal(want, got)) {
        char *w = json_dumps(want, JSON_COMPACT), *g = json_dumps(got, JSON_COMPACT);
        fail_msg("since=%llu limit=%zu:\n want %.2000s\n got  %.2000s", (unsigned long long)since,
                 limit, w, g);
    }
    json_decref(want);
    json_decref(got);
}

static void same_config_at(mini_t *m, uint64_t version)
{
    json_t *want = ref_config_at(m->path, version);
    void *got = NULL;
    assert_int_equal(gw_audit_config_at(&m->srv, version, &got), 0);
    if (!(want ? got && json_equal(want, got) : !got))
        fail_msg("config_at(%llu) differs", (unsigned long long)version);
    json_decref(want);
    json_decref(got);
}

/* The version the open continues from, by a forward scan of every line: that
 * of the last line that parses with a version > 0. */
static uint64_t ref_last_version(const char *path)
{
    uint64_t last = 0;
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) > 0) {
        json_t *j = __real_json_loadb(line, (size_t)n, 0, NULL);
        if (!j)
            continue;
        json_int_t v = json_integer_value(json_object_get(j, "version"));
        if (v > 0)
            last = (uint64_t)v;
        json_decref(j);
    }
    free(line);
    fclose(f);
    return last;
}

/*---- the tests ----*/

#define CFG(x) ",\"config\":{\"limits\":{\"user_rps\":" #x "},\"rules\":[]}"

/* Every odd line the file can hold, each where a reader could get it wrong. */
static void test_odd_lines(void **state)
{
    (void)state;
    static mini_t m;
    mini_init(&m);
    char *big = malloc(200 * 1024);
    memset(big, 'x', 200 * 1024 - 1);
    big[200 * 1024 - 1] = '\0';
    char *log = malloc(300 * 1024);
    size_t n = 0;
#define L(s) n += (size_t)sprintf(log + n, "%s\n", s)
    L("{\"version\":1,\"at\":\"t\",\"who\":\"a\",\"what\":\"start\",\"target\":\"\"" CFG(1) "}");
    L("{\"version\":2,\"what\":\"limits.patch\"" CFG(2) "}");
    L("{\"version\":2,\"what\":\"the same version again (an older writer's failed fdatasync)\"" CFG(22) "}");
    L("{\"version\":3,\"what\":\"torn, then glued to the next");
    L("{\"version\":3,\"what\":\"rule.put\"" CFG(3) "}");
    L("{\"version\":4,\"what\":\"no config\"}");
    L(" {\"version\": 5, \"what\": \"spaced\"" CFG(5) "}");
    L("{\"version\":6,\"new\":{\"version\":1},\"what\":\"a nested version\"" CFG(6) "}");
    L("{\"version\":1,\"what\":\"two versions\",\"version\":7}");
    L("{\"version\":1,\"\\u0076ersion\":8,\"what\":\"an escaped second version\"}");
    L("{\"version\":\"9\",\"what\":\"a string\"}");
    L("{\"version\":9.0,\"what\":\"a real\"}");
    L("{\"version\":-9,\"what\":\"negative\"}");
    L("{\"version\":0,\"what\":\"zero\"}");
    L("{\"version\":09,\"what\":\"a leading zero\"}");
    L("{\"version\":99999999999999999999,\"what\":\"too big\"}");
    L("{\"version\":10}garbage");
    L("[{\"version\":11}]");
    L("12");
    L("");
    L("{\"version\":13,\"what\":\"crlf\"}\r");
    L("{\"version\":14,\"what\":\"version\"" CFG(14) "}");
    L("{\"version\":15,\"target\":\"a \\\"version\\\": 99\"}");
    L("{\"version\":16,\"target\":\"a line longer than a read chunk\",\"big\":\"BIG\"}");
    L("{\"version\":17,\"what\":\"config not an object\",\"config\":[1]}");
    L("{\"version\":17,\"what\":\"config of 17\"" CFG(17) "}");
    L("{\"version\":17,\"what\":\"later 17, no config\"}");
    L("{\"version\":18}");
    L("{\"version\":1000000000000000000,\"what\":\"19 digits\"}");
    L("{\"version\":999999999999999999,\"what\":\"18 digits, after a larger one\"" CFG(18) "}");
    n += (size_t)sprintf(log + n, "{\"version\":20,\"what\":\"torn tail, cut at open\"");
#undef L
    /* the big line: its "BIG" replaced by 200 KiB of x */
    char *at = strstr(log, "\"BIG\"");
    assert_non_null(at);
    size_t tail = n - (size_t)(at + 5 - log);
    char *full = malloc(n + 200 * 1024 + 8);
    size_t head = (size_t)(at + 1 - log);
    memcpy(full, log, head);
    size_t bl = strlen(big);
    memcpy(full + head, big, bl);
    memcpy(full + head + bl, at + 4, tail + 1);
    write_log(&m, full, head + bl + tail + 1);
    free(big);
    free(log);
    free(full);

    mini_open(&m); /* cuts the torn tail, appends a start line */
    uint64_t top = gw_audit_version(&m.srv);
    /* The start line continues from the last line that parses with a version
     * (999999999999999999), not from the largest anywhere (10^18 on the line
     * before): opening reads the log from its end only. A writer's versions
     * never go back, so for its logs the two are the same. */
    assert_int_equal(top, 1000000000000000000ull);
    static const uint64_t sinces[] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 13, 14, 15, 16, 17, 18,
                                      19, 20, 999999999999999998ull, 999999999999999999ull,
                                      1000000000000000000ull, 1000000000000000001ull,
                                      UINT64_MAX / 2};
    for (size_t i = 0; i < sizeof(sinces) / sizeof(sinces[0]); i++)
        for (size_t limit = 0; limit <= 40; limit++)
            same_list(&m, sinces[i], limit);
    for (size_t i = 0; i < sizeof(sinces) / sizeof(sinces[0]); i++)
        same_list(&m, sinces[i], 10000);
    for (uint64_t v = 0; v <= 21; v++)
        same_config_at(&m, v);
    same_config_at(&m, 999999999999999999ull);
    same_config_at(&m, 1000000000000000000ull);
    same_config_at(&m, top);
    /* spot checks of what the reference says */
    json_t *a = gw_audit_list(&m.srv, 16, 3);
    assert_int_equal(json_array_size(a), 3);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(a, 2), "version")),
                     (json_int_t)top);
    json_decref(a);
    json_t *c = NULL;
    assert_int_equal(gw_audit_config_at(&m.srv, 17, (void **)&c), 0);
    assert_non_null(c);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(c, "limits"),
                                                        "user_rps")),
                     17);
    json_decref(c);
    mini_close(&m);
}

/* Random logs: the writer's lines with runs of repeated versions, odd lines
 * among them, a version going back; random since and limit, and every edge. */
static void test_random_logs(void **state)
{
    (void)state;
    /* odd lines: each is before, the version, after (NULL: a blank line) */
    static const char *const odd[][2] = {
        {"{\"version\":", ",\"what\":\"torn"}, {" {\"version\": ", "}"},
        {"{\"version\":", "}x"}, {"[{\"version\":", "}]"}, {NULL, NULL},
        {"{\"version\":\"", "\"}"}, {"{\"version\":0", "}"},
        {"{\"version\":1,\"version\":", "}"}, {"{\"version\":", ",\"new\":{\"version\":3}}"}};
    unsigned seed = 12345;
    for (int round = 0; round < 6; round++) {
        static mini_t m;
        mini_init(&m);
        size_t cap = 4 << 20, n = 0;
        char *log = malloc(cap);
        int v = 0, lines = 200 + (int)(rand_r(&seed) % 2000);
        for (int i = 0; i < lines; i++) {
            unsigned r = rand_r(&seed) % 100;
            if (r < 80)
                v++;
            else if (r < 83 && v > 3)
                v -= 3; /* a version going back: nothing the writer does, but the reader must not care */
            char what[64];
            snprintf(what, sizeof(what), "line %d", i);
            const char *const *o = odd[rand_r(&seed) % 9];
            if (r >= 90) {
                if (o[0]) /* else a blank line */
                    n += (size_t)snprintf(log + n, cap - n, "%s%d%s", o[0], v, o[1]);
            } else if (r % 3 == 0)
                n += (size_t)snprintf(log + n, cap - n,
                                      "{\"version\":%d,\"what\":\"%s\"" CFG(%d) "}", v, what, i);
            else
                n += (size_t)snprintf(log + n, cap - n, "{\"version\":%d,\"what\":\"%s\"}", v,
                                      what);
            log[n++] = '\n';
        }
        write_log(&m, log, n);
        free(log);
        uint64_t last = ref_last_version(m.path);
        mini_open(&m);
        uint64_t top = gw_audit_version(&m.srv);
        assert_int_equal(top, last + 1); /* the start line continues from the last version */
        for (int k = 0; k < 60; k++) {
            uint64_t since = rand_r(&seed) % (top + 3);
            size_t limit = rand_r(&seed) % 4 == 0 ? (size_t)(rand_r(&seed) % 5)
                                                  : (size_t)rand_r(&seed) % (size_t)(lines + 10);
            same_list(&m, since, limit);
        }
        for (uint64_t since = 0; since <= top + 1; since += top / 7 + 1) {
            same_list(&m, since, 1);
            same_list(&m, since, (size_t)lines);
            same_list(&m, since, 10000);
        }
        same_list(&m, top - 1, 1);
        same_list(&m, top, 1);
        for (int k = 0; k < 20; k++)
            same_config_at(&m, rand_r(&seed) % (top + 2));
        mini_close(&m);
    }
}

/* An append during a list goes through at once (the list holds no lock it
 * needs while it reads), and the list answers the log as it was when it began. */
static void test_list_does_not_hold_up_an_append(void **state)
{
    (void)state;
    static mini_t m;
    mini_init(&m);
    mini_open(&m);
    for (int i = 0; i < 50; i++)
        assert_true(gw_audit_record(&m.srv, "test", "limits.patch", "limits", NULL, NULL) > 0);
    uint64_t before = gw_audit_version(&m.srv);
    hook.srv = &m.srv;
    hook.done = hook.in_time = false;
    hook.armed = true;
    json_t *a = gw_audit_list(&m.srv, 0, 10000);
    assert_false(hook.armed); /* the list parsed a line: the writer ran */
    pthread_join(writer_thread, NULL);
    assert_true(hook.done);
    if (!hook.in_time)
        fail_msg("an append waited for a list of the audit log to finish");
    assert_int_equal(hook.written, before + 1);
    assert_non_null(a);
    assert_int_equal(json_array_size(a), before);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(a, before - 1), "version")),
                     (json_int_t)before);
    json_decref(a);
    a = gw_audit_list(&m.srv, before, 10);
    assert_int_equal(json_array_size(a), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(a, 0), "target")),
                        "during-a-list");
    json_decref(a);
    mini_close(&m);
}

/* Reads a file whole. */
static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    *len = (size_t)n;
    return buf;
}

/*
 * Opening a long log reads its end only: 20,000 of the writer's lines and a
 * torn tail, and the open parses at most the torn tail and the last line
 * (it parsed every line before: 20,001 json_loadb calls), cuts the tail as
 * before, and the start line takes the next version. A torn tail that parses
 * (only its newline missing) counts, as the forward scan counted it, and is
 * cut all the same.
 */
static void test_open_reads_only_the_tail(void **state)
{
    (void)state;
    enum { LINES = 20000 };
    for (int parses = 0; parses < 2; parses++) {
        static mini_t m;
        mini_init(&m);
        size_t cap = (size_t)LINES * 200 + 256, n = 0;
        char *log = malloc(cap);
        for (int v = 1; v <= LINES; v++)
            n += (size_t)snprintf(log + n, cap - n,
                                  "{\"version\":%d,\"at\":\"2026-11-26T10:00:00.000Z\",\"who\":\"ops\","
                                  "\"what\":\"rule.put\",\"target\":\"s1\",\"old\":null,"
                                  "\"new\":{\"user_rps\":%d}" CFG(1) "}\n",
                                  v, v);
        size_t whole = n;
        if (parses)
            n += (size_t)snprintf(log + n, cap - n, "{\"version\":%d,\"what\":\"no newline\"}",
                                  LINES + 1);
        else
            n += (size_t)snprintf(log + n, cap - n, "{\"version\":%d,\"at\":\"2026-", LINES + 1);
        write_log(&m, log, n);
        loads = 0;
        mini_open(&m);
        if (loads > 2)
            fail_msg("opening a log of %d lines parsed %lu of them", LINES, loads);
        uint64_t top = gw_audit_version(&m.srv);
        assert_int_equal(top, (uint64_t)LINES + 1 + (uint64_t)parses);
        /* the torn tail is gone, the lines before it are as they were, then the start line */
        size_t len;
        char *now = slurp(m.path, &len);
        assert_true(len > whole);
        assert_memory_equal(now, log, whole);
        json_t *start = __real_json_loadb(now + whole, len - whole, 0, NULL);
        assert_non_null(start);
        assert_string_equal(json_string_value(json_object_get(start, "what")), "start");
        assert_int_equal(json_integer_value(json_object_get(start, "version")), (json_int_t)top);
        json_decref(start);
        free(now);
        free(log);
        /* and the next change continues from it */
        assert_int_equal(gw_audit_record(&m.srv, "test", "limits.patch", "limits", NULL, NULL),
                         top + 1);
        mini_close(&m);
    }
}

/*---- failed appends and reads ----*/

/*
 * The log's lines: each ends with a newline, and the versions of those that
 * parse go into versions[], each once and rising (no version on two lines).
 * Returns how many parse; *torn counts the others.
 */
static size_t log_versions(mini_t *m, uint64_t *versions, size_t max, size_t *torn)
{
    size_t len, n = 0;
    char *buf = slurp(m->path, &len);
    assert_true(len > 0 && buf[len - 1] == '\n');
    *torn = 0;
    for (char *p = buf; p < buf + len;) {
        char *nl = memchr(p, '\n', (size_t)(buf + len - p));
        json_t *j = __real_json_loadb(p, (size_t)(nl - p), 0, NULL);
        if (!j) {
            (*torn)++;
        } else {
            json_int_t v = json_integer_value(json_object_get(j, "version"));
            json_decref(j);
            assert_true(v > 0);
            if (n > 0 && (uint64_t)v <= versions[n - 1])
                fail_msg("version %lld after version %llu: a version written twice", (long long)v,
                         (unsigned long long)versions[n - 1]);
            assert_true(n < max);
            versions[n++] = (uint64_t)v;
        }
        p = nl + 1;
    }
    free(buf);
    return n;
}

/* The target of the line of `version`, from the list ("" if none). */
static void target_of(mini_t *m, uint64_t version, char *out, size_t cap)
{
    json_t *arr = gw_audit_list(&m->srv, version - 1, 1);
    assert_non_null(arr);
    json_t *e = json_array_get(arr, 0);
    bool hit = e && (uint64_t)json_integer_value(json_object_get(e, "version")) == version;
    snprintf(out, cap, "%s", hit ? json_string_value(json_object_get(e, "target")) : "");
    json_decref(arr);
}

static uint64_t change(mini_t *m, const char *target)
{
    return gw_audit_record(&m->srv, "test", "limits.patch", target, NULL, NULL);
}

/* A log of versions 1 (start) .. 4, with the faults aimed at it. */
static void four_lines(mini_t *m)
{
    mini_init(m);
    mini_open(m);
    memset(&fault, 0, sizeof(fault));
    fault.path = m->path;
    for (int i = 0; i < 3; i++)
        assert_int_equal(change(m, "ok"), (uint64_t)i + 2);
}

static void four_lines_done(mini_t *m)
{
    memset(&fault, 0, sizeof(fault));
    mini_close(m);
}

/*
 * The line is written whole but its fdatasync fails: the change is answered
 * unaudited (0), and the line is cut back off at once (no reader sees it), so
 * that its version goes to the next change and is on one line only, also after
 * a restart. It once stayed, and the next change was written with its version.
 */
static void test_failed_sync_takes_its_line_back(void **state)
{
    (void)state;
    static mini_t m;
    four_lines(&m);
    size_t blen, nlen, torn;
    char *before = slurp(m.path, &blen);
    fault.sync_fails = 1;
    assert_int_equal(change(&m, "not synced"), 0);
    assert_int_equal(fault.sync_fails, 0); /* the write went through; its fdatasync failed */
    assert_int_equal(gw_audit_version(&m.srv), 4);
    char *now = slurp(m.path, &nlen);
    assert_int_equal(nlen, blen);
    assert_memory_equal(now, before, blen);
    free(now);
    free(before);
    json_t *l = gw_audit_list(&m.srv, 4, 10);
    assert_int_equal(json_array_size(l), 0);
    json_decref(l);
    void *cfg = (void *)1;
    assert_int_equal(gw_audit_config_at(&m.srv, 5, &cfg), 0);
    assert_null(cfg);
    /* the next change takes version 5, on one line */
    assert_int_equal(change(&m, "next"), 5);
    uint64_t v[16];
    assert_int_equal(log_versions(&m, v, 16, &torn), 5);
    assert_int_equal(torn, 0);
    assert_int_equal(v[4], 5);
    char target[32];
    target_of(&m, 5, target, sizeof(target));
    assert_string_equal(target, "next");
    /* and a restart continues after it */
    gw_audit_close(&m.srv);
    mini_open(&m);
    assert_int_equal(gw_audit_version(&m.srv), 6);
    assert_int_equal(log_versions(&m, v, 16, &torn), 6);
    assert_int_equal(torn, 0);
    four_lines_done(&m);
}

/*
 * The fdatasync fails and so does the cut: the line stays, so its version is
 * used (the list shows it) and the next change takes the one after it.
 */
static void test_failed_sync_and_cut_use_up_the_version(void **state)
{
    (void)state;
    static mini_t m;
    four_lines(&m);
    fault.sync_fails = 1;
    fault.cut_fails = 1;
    assert_int_equal(change(&m, "kept"), 0);
    assert_int_equal(fault.cut_fails, 0);
    assert_int_equal(gw_audit_version(&m.srv), 5);
    char target[32];
    target_of(&m, 5, target, sizeof(target));
    assert_string_equal(target, "kept");
    assert_int_equal(change(&m, "next"), 6);
    uint64_t v[16];
    size_t torn;
    assert_int_equal(log_versions(&m, v, 16, &torn), 6);
    assert_int_equal(torn, 0);
    target_of(&m, 6, target, sizeof(target));
    assert_string_equal(target, "next");
    four_lines_done(&m);
}

/*
 * A short write (a full disk) is cut off and its version given to the next
 * change. When the cut fails too, the torn bytes stay: their version is used
 * up, and the next line starts on a line of its own (it was once glued to
 * them, unreadable, and with the same version). Torn anywhere in the line, and
 * just before its newline (the torn line then parses: its version is listed).
 */
static void test_torn_write_is_never_glued(void **state)
{
    (void)state;
    for (int drop_newline = 0; drop_newline < 2; drop_newline++) {
        static mini_t m;
        four_lines(&m);
        size_t blen, nlen, torn;
        char *before = slurp(m.path, &blen);
        uint64_t v[16];
        char target[32];
        /* short, cut: as if never written */
        fault.short_writes = 1;
        fault.keep = drop_newline ? 0 : 30;
        fault.drop = drop_newline ? 1 : 0;
        assert_int_equal(change(&m, "torn"), 0);
        assert_int_equal(fault.short_writes, 0);
        assert_int_equal(gw_audit_version(&m.srv), 4);
        char *now = slurp(m.path, &nlen);
        assert_int_equal(nlen, blen);
        assert_memory_equal(now, before, blen);
        free(now);
        free(before);
        /* short, not cut: the bytes stay, the version is used up */
        fault.short_writes = 1;
        fault.cut_fails = 1;
        assert_int_equal(change(&m, "torn, not cut"), 0);
        assert_int_equal(fault.cut_fails, 0);
        assert_int_equal(gw_audit_version(&m.srv), 5);
        /* the next change: a line of its own, the next version */
        assert_int_equal(change(&m, "next"), 6);
        size_t n = log_versions(&m, v, 16, &torn);
        assert_int_equal(n, drop_newline ? 6 : 5);
        assert_int_equal(torn, drop_newline ? 0 : 1);
        assert_int_equal(v[n - 1], 6);
        target_of(&m, 6, target, sizeof(target));
        assert_string_equal(target, "next");
        /* a restart continues after it */
        gw_audit_close(&m.srv);
        mini_open(&m);
        assert_int_equal(gw_audit_version(&m.srv), 7);
        assert_int_equal(log_versions(&m, v, 16, &torn), n + 1);
        four_lines_done(&m);
    }
}

/* A read error is told from "no such version" (a rollback answers 500, not 404). */
static void test_read_error_is_not_unknown_version(void **state)
{
    (void)state;
    static mini_t m;
    four_lines(&m);
    void *cfg = NULL;
    fault.read_fails = 1;
    assert_null(gw_audit_list(&m.srv, 0, 10));
    fault.read_fails = 1;
    assert_int_equal(gw_audit_config_at(&m.srv, 2, &cfg), CM_EIO);
    assert_null(cfg);
    assert_int_equal(gw_audit_config_at(&m.srv, 2, &cfg), 0);
    assert_non_null(cfg);
    json_decref(cfg);
    cfg = (void *)1;
    assert_int_equal(gw_audit_config_at(&m.srv, 99, &cfg), 0);
    assert_null(cfg);
    four_lines_done(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_odd_lines),
        cmocka_unit_test(test_random_logs),
        cmocka_unit_test(test_list_does_not_hold_up_an_append),
        cmocka_unit_test(test_open_reads_only_the_tail),
        cmocka_unit_test(test_failed_sync_takes_its_line_back),
        cmocka_unit_test(test_failed_sync_and_cut_use_up_the_version),
        cmocka_unit_test(test_torn_write_is_never_glued),
        cmocka_unit_test(test_read_error_is_not_unknown_version),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
