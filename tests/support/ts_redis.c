/* A real redis-server for tests: see ts_redis.h. */
#include "tests/support/ts_redis.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>


static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool find_bin(char *out, size_t len)
{
    const char *env = getenv("FLASHGATE_REDIS_SERVER");
    if (env && *env) {
        snprintf(out, len, "%s", env);
        return access(out, X_OK) == 0;
    }
    if (access("/usr/bin/redis-server", X_OK) == 0) {
        snprintf(out, len, "/usr/bin/redis-server");
        return true;
    }
    const char *path = getenv("PATH");
    if (!path)
        return false;
    char *copy = strdup(path), *save = NULL;
    bool found = false;
    for (char *d = strtok_r(copy, ":", &save); d && !found; d = strtok_r(NULL, ":", &save)) {
        snprintf(out, len, "%s/redis-server", d);
        found = access(out, X_OK) == 0;
    }
    free(copy);
    return found;
}

/* A port the kernel just handed out (bind :0); the server may still lose a race for it. */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof(a);
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &alen) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static bool ping(int port)
{
    struct timeval tv = {.tv_sec = 0, .tv_usec = 200000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    bool ok = false;
    if (c && !c->err) {
        redisSetTimeout(c, tv);
        redisReply *rep = redisCommand(c, "PING");
        ok = rep && rep->type == REDIS_REPLY_STATUS && strcmp(rep->str, "PONG") == 0;
        if (rep)
            freeReplyObject(rep);
    }
    redisFree(c);
    return ok;
}

/* Spawns the server on r->port in r->dir and waits for PING. */
static int spawn_server(ts_redis_t *r)
{
    char port[16], logf[PATH_MAX + 16];
    snprintf(port, sizeof(port), "%d", r->port);
    snprintf(logf, sizeof(logf), "%s/redis.log", r->dir);
    /*
     * A replica's sync starts at once: Redis 7 waits repl-diskless-sync-delay
     * (5 s) for more replicas to share the transfer, which was most of each
     * replica_start of test_inv_redis.c.
     */
    char *argv[] = {r->bin,
                    "--port",
                    port,
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    r->is_aof ? "yes" : "no",
                    "--dir",
                    r->dir,
                    "--daemonize",
                    "no",
                    "--logfile",
                    logf,
                    "--repl-diskless-sync-delay",
                    "0",
                    NULL};
    /*
     * The server dies with the test: a test that crashes (an ASan report
     * aborts it) must not leave a server holding ctest's output pipe, which
     * made ctest wait for its 300 s timeout. Its own messages go to the log.
     */
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "ts_redis: fork: %s\n", strerror(errno));
        return -1;
    }
    if (pid == 0) { /* only async-signal-safe calls until exec */
        (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open("/dev/null", O_RDWR);
        if (fd >= 0) {
            dup2(fd, 0);
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execv(r->bin, argv);
        _exit(127);
    }
    r->pid = pid;
    r->is_paused = false;
    long deadline = mono_ms() + 10000;
    while (mono_ms() < deadline) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            r->pid = 0;
            return -1; /* exited: port taken, bad dir... */
        }
        if (ping(r->port))
            return 0;
        sleep_ms(10);
    }
    fprintf(stderr, "ts_redis: redis-server on port %d did not answer PING\n", r->port);
    ts_redis_kill(r);
    return -1;
}

int ts_redis_start(ts_redis_t *r, bool aof)
{
    memset(r, 0, sizeof(*r));
    if (!find_bin(r->bin, sizeof(r->bin))) {
        fprintf(stderr, "FAIL: no redis-server (deploy/install-deps.sh installs it)\n");
        return -1;
    }
    r->is_aof = aof;
    const char *tmp = getenv("TMPDIR");
    snprintf(r->dir, sizeof(r->dir), "%s/fg-redis-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(r->dir)) {
        fprintf(stderr, "ts_redis: mkdtemp %s: %s\n", r->dir, strerror(errno));
        return -1;
    }
    for (int attempt = 0; attempt < 5; attempt++) {
        r->port = free_port();
        if (r->port > 0 && spawn_server(r) == 0)
            return 0;
    }
    fprintf(stderr, "ts_redis: could not start %s (see %s/redis.log)\n", r->bin, r->dir);
    return -1;
}

static int stop_with(ts_redis_t *r, int sig, long grace_ms)
{
    if (r->pid <= 0)
        return 0;
    if (r->is_paused)
        kill(r->pid, SIGCONT);
    r->is_paused = false;
    kill(r->pid, sig);
    long deadline = mono_ms() + grace_ms;
    int st;
    while (mono_ms() < deadline) {
        if (waitpid(r->pid, &st, WNOHANG) == r->pid) {
            r->pid = 0;
            return 0;
        }
        sleep_ms(5);
    }
    kill(r->pid, SIGKILL);
    waitpid(r->pid, &st, 0);
    r->pid = 0;
    return sig == SIGKILL ? 0 : -1;
}

int ts_redis_stop(ts_redis_t *r)
{
    return stop_with(r, SIGTERM, 5000);
}

int ts_redis_kill(ts_redis_t *r)
{
    return stop_with(r, SIGKILL, 5000);
}

int ts_redis_restart(ts_redis_t *r)
{
    ts_redis_stop(r);
    /* The old listener is gone with its process; retry a little in case the port lingers. */
    for (int attempt = 0; attempt < 20; attempt++) {
        if (spawn_server(r) == 0)
            return 0;
        sleep_ms(100);
    }
    return -1;
}

int ts_redis_pause(ts_redis_t *r)
{
    if (r->pid <= 0 || kill(r->pid, SIGSTOP) != 0)
        return -1;
    r->is_paused = true;
    return 0;
}

int ts_redis_resume(ts_redis_t *r)
{
    if (r->pid <= 0 || kill(r->pid, SIGCONT) != 0)
        return -1;
    r->is_paused = false;
    return 0;
}

static void rm_tree(const char *dir)
{
    char cmd[PATH_MAX + 32];
    if (strncmp(dir, "/", 1) != 0 || !strstr(dir, "fg-redis-"))
        return; /* only ever our own mkdtemp dir */
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "ts_redis: could not remove %s\n", dir);
}

void ts_redis_free(ts_redis_t *r)
{
    ts_redis_stop(r);
    if (r->dir[0])
        rm_tree(r->dir);
    r->dir[0] = '\0';
}

char *ts_redis_url(const ts_redis_t *r, char *buf, size_t len, const char *query)
{
    snprintf(buf, len, "redis://127.0.0.1:%d%s%s", r->port, query && *query ? "?" : "",
             query && *query ? query : "");
    return buf;
}

int ts_redis_cmd(const ts_redis_t *r, char *buf, size_t len, const char *fmt, ...)
{
    struct timeval tv = {.tv_sec = 2, .tv_usec = 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", r->port, tv);
    if (!c || c->err) {
        redisFree(c);
        return -1;
    }
    redisSetTimeout(c, tv);
    va_list ap;
    va_start(ap, fmt);
    redisReply *rep = redisvCommand(c, fmt, ap);
    va_end(ap);
    int rc = rep ? 0 : -1;
    if (rep) {
        switch (rep->type) {
        case REDIS_REPLY_INTEGER:
            snprintf(buf, len, "%lld", rep->integer);
            break;
        case REDIS_REPLY_STRING:
        case REDIS_REPLY_STATUS:
        case REDIS_REPLY_ERROR:
            snprintf(buf, len, "%.*s", (int)rep->len, rep->str);
            break;
        case REDIS_REPLY_ARRAY:
            snprintf(buf, len, "%zu", rep->elements);
            break;
        default:
            snprintf(buf, len, "%s", "");
        }
        freeReplyObject(rep);
    }
    redisFree(c);
    return rc;
}

double ts_redis_info_num(const ts_redis_t *r, const char *section, const char *line,
                         const char *name)
{
    char buf[8192], pat[96];
    if (ts_redis_cmd(r, buf, sizeof(buf), "INFO %s", section) != 0)
        return 0;
    const char *p = buf;
    if (line) {
        snprintf(pat, sizeof(pat), "%s:", line);
        p = strstr(buf, pat);
        if (!p)
            return 0;
        snprintf(pat, sizeof(pat), "%s=", name);
    } else {
        snprintf(pat, sizeof(pat), "%s:", name);
    }
    p = strstr(p, pat);
    return p ? strtod(p + strlen(pat), NULL) : 0;
}
