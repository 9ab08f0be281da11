/*
 * Fuzz target: every admin body. A whole gateway runs in this process (memory
 * inventory, no Kafka, one worker, the admin API on a loopback port), and each
 * input is one authorized request over a real connection: byte 0 picks a
 * writing route (PUT/PATCH/POST/DELETE of sales, restock, limits, rules,
 * degrade, config rollback, debug broker and clock, order cancel), the rest is
 * its JSON body. Requests change the server's state as they go, as an
 * operator's would.
 * Promises: the server never crashes (ASan/UBSan watch its threads too); every
 * answer is a complete HTTP response with a status below 500 (503 only from
 * the broker route, which has no embedded broker here) and a JSON body.
 */
#include "common/cm_log.h"
#include "gateway/base/gw_base.h"
#include "gateway/base/gw_config.h"
#include "gateway/buy/gw_buy.h"
#include "gateway/ctl/gw_ctl.h"
#include "gateway/edge/gw_edge.h"
#include "gateway/edge/gw_upcall.h"
#include "gateway/http/gw_http.h"
#include "gateway/overload/gw_ol.h"
#include "gateway/proxy/gw_proxy.h"
#include "tests/fuzz/fuzz.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define TOKEN "fuzz-admin-token-0123456789abcdef0123456789"

static gw_server_t srv;
static gw_config_t cfg;
static cm_conf_t conf;
static int admin_port;

static const struct {
    const char *method, *path;
} routes[] = {
    {"PUT", "/admin/v1/sales/s1"},         {"PUT", "/admin/v1/sales/s2"},
    {"DELETE", "/admin/v1/sales/s2"},      {"POST", "/admin/v1/sales/s1/restock"},
    {"PATCH", "/admin/v1/limits"},         {"PUT", "/admin/v1/rules/s1"},
    {"DELETE", "/admin/v1/rules/s1"},      {"PUT", "/admin/v1/degrade"},
    {"POST", "/admin/v1/config/rollback"}, {"PUT", "/admin/v1/debug/broker"},
    {"PUT", "/admin/v1/debug/clock"},      {"POST", "/admin/v1/orders/0AAAAAAAAAAAA/cancel"},
};

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    FZ_CHECK(bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0);
    FZ_CHECK(getsockname(fd, (struct sockaddr *)&a, &len) == 0);
    close(fd);
    return ntohs(a.sin_port);
}

/* A connection to the admin port, kept open across inputs. A new connection
 * per input ran the loopback out of ports: the server closes first, so each
 * one leaves a TIME_WAIT for 60 s, and 28,000 ephemeral ports last ten seconds
 * of fuzzing after a suite that has used its share (CI: connect() failed
 * after 19,351 inputs and the harness, not the server, crashed). */
static int conn = -1;

static int dial(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    FZ_CHECK(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)admin_port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        fprintf(stderr, "connect to the admin port: %s\n", strerror(errno));
        abort();
    }
    return fd;
}

static void hang_up(void)
{
    if (conn >= 0)
        close(conn);
    conn = -1;
}

/* The value of header `name` (lowercase, with its colon) in the head that ends
 * at `end`, or NULL. */
static const char *header(const char *head, const char *end, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = strstr(head, "\r\n"); p && p < end; p = strstr(p + 2, "\r\n"))
        if (strncasecmp(p + 2, name, n) == 0)
            return p + 2 + n;
    return NULL;
}

/* One request; returns the status (0: no answer), body in *out (malloc'd).
 * The answer ends at its Content-Length (a 204 at its head), or at the
 * server's close. */
static int call_once(const char *method, const char *path, const uint8_t *body, size_t blen,
                     char **out)
{
    if (conn < 0)
        conn = dial();
    char head[512];
    int n = snprintf(head, sizeof(head),
                     "%s %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " TOKEN "\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                     method, path, blen);
    /* Head and body in one write: two would wait on Nagle and the server's
     * delayed ACK, 40 ms an input on a kept connection. */
    size_t cap = (1 << 16) + blen, len = 0;
    char *buf = malloc(cap + 1);
    memcpy(buf, head, (size_t)n);
    if (blen)
        memcpy(buf + n, body, blen);
    ssize_t sent = send(conn, buf, (size_t)n + blen, MSG_NOSIGNAL);
    buf[0] = '\0';
    if (sent != (ssize_t)((size_t)n + blen)) {
        hang_up();
        *out = buf;
        return 0;
    }
    long want = -1; /* the whole answer's length, once the head is in */
    int closes = 0, head_in = 0;
    for (;;) {
        if (want >= 0 && len >= (size_t)want)
            break;
        ssize_t r = recv(conn, buf + len, cap - len, 0);
        if (r <= 0) {
            closes = 1;
            break;
        }
        len += (size_t)r;
        if (len == cap)
            buf = realloc(buf, (cap *= 2) + 1);
        buf[len] = '\0';
        const char *end = head_in ? NULL : strstr(buf, "\r\n\r\n");
        if (end) {
            head_in = 1;
            const char *cl = header(buf, end, "content-length:");
            int code = 0;
            sscanf(buf, "HTTP/1.1 %d", &code);
            if (cl)
                want = (long)(end + 4 - buf) + strtol(cl, NULL, 10);
            else if (code == 204 || code == 304)
                want = (long)(end + 4 - buf);
            const char *c = header(buf, end, "connection:");
            if (c && strstr(c, "close") == c + strspn(c, " "))
                closes = 1;
        }
    }
    if (closes || want < 0)
        hang_up();
    buf[len] = '\0';
    int status = 0;
    if (len && sscanf(buf, "HTTP/1.1 %d", &status) != 1)
        fprintf(stderr, "not an HTTP response: %.200s\n", buf);
    char *b = strstr(buf, "\r\n\r\n");
    *out = strdup(b ? b + 4 : "");
    free(buf);
    return status;
}

/* A connection the server closed while idle, or one the daemon's cap of 64
 * connections turned away, gets no answer at all: that is not an answer, so
 * the request goes again on a new connection (a bounded number of times). */
static int call(const char *method, const char *path, const uint8_t *body, size_t blen,
                char **out)
{
    int st = call_once(method, path, body, blen, out);
    for (int tries = 0; st == 0 && !(*out)[0] && tries < 50; tries++) {
        free(*out);
        if (tries)
            usleep(2000);
        st = call_once(method, path, body, blen, out);
    }
    return st;
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    signal(SIGPIPE, SIG_IGN);
    json_object_seed(1);
    static char dir[] = "/tmp/fg-fuzz-admin-XXXXXX";
    FZ_CHECK(mkdtemp(dir));
    admin_port = free_port();
    char listen[64], admin[64];
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", free_port());
    snprintf(admin, sizeof(admin), "127.0.0.1:%d", admin_port);
    char *args[] = {"flashgate", "--listen", listen, "--admin-listen", admin, "--data-dir", dir,
                    "--threads", "1", "--kafka-brokers", "none", "--admin-token", TOKEN,
                    "--log-level", "error", "--enable-debug-routes", NULL};
    char err[8192];
    FZ_CHECK(gw_config_load(&cfg, &conf, 16, args, err, sizeof(err)) == 0);
    cm_log_set_level(CM_LOG_ERROR);
    if (gw_server_start(&srv, &cfg, &conf, err, sizeof(err)) != 0) {
        fprintf(stderr, "gateway: %s\n", err);
        abort();
    }
    char *body;
    static const char sale[] = "{\"stock\":100,\"per_user_limit\":2}";
    int st = call("PUT", "/admin/v1/sales/s1", (const uint8_t *)sale, sizeof(sale) - 1, &body);
    free(body);
    FZ_CHECK(st == 200 || st == 201);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 8192)
        return 0;
    size_t k = data[0] % (sizeof(routes) / sizeof(routes[0]));
    char *body = NULL;
    int st = call(routes[k].method, routes[k].path, data + 1, size - 1, &body);
    if (st < 200 || st >= 500)
        fprintf(stderr, "%s %s -> %d %s\n", routes[k].method, routes[k].path, st, body);
    FZ_CHECK(st >= 200 && (st < 500 || (st == 503 && k == 9)));
    if (body[0]) {
        json_error_t e;
        json_t *j = json_loads(body, 0, &e);
        if (!j)
            fprintf(stderr, "%s %s -> %d, not JSON: %s\n", routes[k].method, routes[k].path, st,
                    body);
        FZ_CHECK(j != NULL);
        json_decref(j);
    }
    free(body);
    return 0;
}
