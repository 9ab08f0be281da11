/*
 * flashgate-bench-mhd-floor: what libmicrohttpd alone costs per answer.
 *
 * bench/bench.py runs it beside nginx and flashgate's sold-out case: one
 * libmicrohttpd 0.9.75 daemon, configured and driven as flashgate's public
 * listener once was (one thread waiting on MHD's epoll fd, then
 * MHD_run; an 8 KiB connection pool; no connection timeout), answering
 * every request with the bytes of flashgate's prepared 410 (the same status,
 * headers and body length; the Date formatted once a second, as flashgate
 * does). It reads the body and drops it, and does nothing
 * else: no routing, no parsing of the JSON, no limits, no inventory. Its CPU
 * per answer is the floor under which no change to flashgate's own code can
 * take the sold-out case on libmicrohttpd, the gap between nginx and the
 * floor is the library's: the before-row of the public listener's
 * replacement (bench/uv_floor.c is the floor of the one it has now).
 *
 *   flashgate-bench-mhd-floor PORT      (127.0.0.1 only; SIGTERM stops it)
 */
#include <microhttpd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

/* The body of flashgate's 410 for a sale named "so" (the bench's sale). */
static const char body[] = "{\"error\":\"sold_out\",\"message\":\"sale so is sold out\"}";

static struct MHD_Response *resp;
static time_t date_s;
static volatile sig_atomic_t stop;
static unsigned long answers;

static void on_term(int sig)
{
    (void)sig;
    stop = 1;
}

/* A new response each second with the new Date (MHD copies header values; a
 * queued response holds its own reference, so the old one can go). */
static void redate(void)
{
    time_t now = time(NULL);
    if (now == date_s)
        return;
    char date[64];
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    struct MHD_Response *r = MHD_create_response_from_buffer(
        sizeof(body) - 1, (void *)body, MHD_RESPMEM_PERSISTENT);
    if (!r || MHD_add_response_header(r, "Content-Type", "application/json") != MHD_YES ||
        MHD_add_response_header(r, "Cache-Control", "no-store") != MHD_YES ||
        MHD_add_response_header(r, "Date", date) != MHD_YES) {
        fprintf(stderr, "mhd-floor: cannot build the response\n");
        exit(1);
    }
    if (resp)
        MHD_destroy_response(resp);
    resp = r;
    date_s = now;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload, size_t *upload_size, void **req_cls)
{
    (void)cls, (void)url, (void)method, (void)version, (void)upload;
    if (*req_cls == NULL) { /* the head: wait for the body, as flashgate does */
        *req_cls = c;
        return MHD_YES;
    }
    if (*upload_size) {
        *upload_size = 0;
        return MHD_YES;
    }
    redate(); /* a time() read (vDSO); one thread, so no lock around resp */
    answers++;
    return MHD_queue_response(c, 410, resp);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[1]);
    if (port <= 0 || port > 65535) {
        fprintf(stderr, "mhd-floor: bad port %s\n", argv[1]);
        return 2;
    }
    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);
    signal(SIGPIPE, SIG_IGN);
    redate();
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    /* flashgate's flags; no MHD_USE_TURBO (flashgate does not set it either). */
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME, (uint16_t)port, NULL, NULL, on_request,
        NULL, MHD_OPTION_SOCK_ADDR, &a, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)8192,
        MHD_OPTION_CONNECTION_TIMEOUT, 0u, MHD_OPTION_CONNECTION_LIMIT, 4096u,
        MHD_OPTION_LISTEN_BACKLOG_SIZE, 4096u, MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "mhd-floor: cannot listen on 127.0.0.1:%d\n", port);
        return 1;
    }
    /*
     * The loop flashgate's worker has (libuv waits on MHD's epoll fd, then
     * MHD_run, again while runs answer requests: gateway/http/gw_http.c drive()),
     * without libuv. MHD_run_wait, MHD's own blocking wait, stalls
     * for seconds at 256 connections in 0.9.75 (~4k answers/s), as MHD's
     * internal epoll thread does.
     */
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_EPOLL_FD);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN};
    if (!info || ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, info->epoll_fd, &ev) != 0) {
        fprintf(stderr, "mhd-floor: cannot poll libmicrohttpd's epoll fd\n");
        return 1;
    }
    while (!stop) {
        MHD_UNSIGNED_LONG_LONG to;
        if (MHD_get_timeout(d, &to) != MHD_YES || to > 100)
            to = 100;
        if (epoll_wait(ep, &ev, 1, (int)to) < 0 && errno != EINTR)
            break;
        /* flashgate's drive(): run again while runs answer (at most 32). */
        for (int runs = 0; runs < 32 && !stop; runs++) {
            unsigned long before = answers;
            MHD_run(d);
            if (answers == before)
                break;
        }
    }
    close(ep);
    MHD_stop_daemon(d);
    MHD_destroy_response(resp);
    return 0;
}
