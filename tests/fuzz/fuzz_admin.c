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
#include "gateway/gw_config.h"
#include "gateway/gw_internal.h"
#include "tests/fuzz/fuzz.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <signal.h>
#include <string.h>
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

/* One request on a new connection; returns the status, body in *body (malloc'd). */
static int call(const char *method, const char *path, const uint8_t *body, size_t blen, char **out)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)admin_port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    FZ_CHECK(connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0);
    char head[512];
    int n = snprintf(head, sizeof(head),
                     "%s %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " TOKEN "\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n",
                     method, path, blen);
    FZ_CHECK(send(fd, head, (size_t)n, MSG_NOSIGNAL) == n);
    if (blen)
        FZ_CHECK(send(fd, body, blen, MSG_NOSIGNAL) == (ssize_t)blen);
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap + 1);
    ssize_t r;
    while ((r = recv(fd, buf + len, cap - len, 0)) > 0) {
        len += (size_t)r;
        if (len == cap)
            buf = realloc(buf, (cap *= 2) + 1);
    }
    close(fd);
    buf[len] = '\0';
    int status = 0;
    if (sscanf(buf, "HTTP/1.1 %d", &status) != 1)
        fprintf(stderr, "not an HTTP response: %.200s\n", buf);
    char *b = strstr(buf, "\r\n\r\n");
    *out = strdup(b ? b + 4 : "");
    free(buf);
    return status;
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
                    "--log-level", "error", NULL};
    char err[8192];
    FZ_CHECK(gw_config_load(&cfg, &conf, 15, args, err, sizeof(err)) == 0);
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
    /* The admin daemon is thread-per-connection with a cap of 64: a client this
     * fast can find it full of connections still being torn down, and MHD then
     * closes the new one at once. That is the cap working, not an answer. */
    for (int tries = 0; st == 0 && !body[0] && tries < 50; tries++) {
        free(body);
        usleep(2000);
        st = call(routes[k].method, routes[k].path, data + 1, size - 1, &body);
    }
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
