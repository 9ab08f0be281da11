/*
 * flashgate-bench-uv-floor: what a libuv loop + llhttp responder
 * costs per answer, beside bench/mhd_floor.c (libmicrohttpd's).
 *
 * bench/bench.py runs it beside nginx, the libmicrohttpd floor and flashgate's
 * sold-out case. It has the shape of a hand-written HTTP/1.1 connection layer
 * (the shape gateway/edge/gw_h1.c, the public listener, first took):
 * one libuv loop, one struct per connection with an 8 KiB read buffer,
 * llhttp (8.1, built from Debian's node-llhttp sources) in HTTP_REQUEST mode
 * with static settings, keep-alive, every answer rendered into one output
 * buffer and written with uv_try_write (uv_write for the rest). Every request
 * gets the bytes of flashgate's prepared 410 (status, headers, body length, a
 * Date refreshed once a second). It reads the body and drops it, and does
 * nothing else: no routing, no limits, no inventory, no connection guard.
 *
 *   flashgate-bench-uv-floor PORT      (127.0.0.1 only; SIGTERM stops it)
 *
 * FLOOR_EPOLL in the environment picks how the sockets are driven, for what
 * libuv's layers cost beside a loop of one's own (bench/README.md "The cost of an answer"):
 *   unset or 0  libuv streams (uv_tcp_t: read(2), uv_try_write), as above;
 *   2           libuv's loop polling each socket (uv_poll_t, level-triggered),
 *               our own recv(2) and send(2);
 *   1           no libuv: an epoll loop of our own, edge-triggered (each
 *               socket registered once for EPOLLIN|EPOLLOUT|EPOLLRDHUP), as
 *               nginx runs its own, and as gateway/edge/gw_h1.c runs its.
 *
 * With UV_FLOOR_METRICS=1 in the environment the loop keeps libuv's idle-time
 * metrics (uv_loop_configure(UV_METRICS_IDLE_TIME)): libuv then polls with a zero
 * timeout first and, when that finds nothing, polls again to sleep, two epoll_waits
 * per sleep (`FLOOR_EPOLL=0 UV_FLOOR_METRICS=1 python3 bench/profile.py build floor sys`).
 */
#include <llhttp.h>
#include <uv.h>

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The body of flashgate's 410 for a sale named "so" (the bench's sale). */
static const char body[] = "{\"error\":\"sold_out\",\"message\":\"sale so is sold out\"}";

#define RBUF 8192
#define WBUF 16384

typedef struct {
    uv_tcp_t tcp;
    llhttp_t parser;
    uv_write_t wr;
    int writing;         /* a uv_write is in flight: reading is stopped */
    size_t wlen;         /* rendered bytes not yet written */
    char rbuf[RBUF];
    char wbuf[WBUF];
} conn_t;

static char answer[512];
static size_t answer_len;
static time_t answer_s;
static uv_loop_t *loop;
static uv_tcp_t listener;
static uv_signal_t sig_term, sig_int;

/* The whole answer rendered once a second (the Date changes), as flashgate's
 * prepared answers are. */
static void redate(void)
{
    time_t now = time(NULL);
    if (now == answer_s)
        return;
    char date[64];
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    int n = snprintf(answer, sizeof(answer),
                     "HTTP/1.1 410 Gone\r\nDate: %s\r\nContent-Type: application/json\r\n"
                     "Cache-Control: no-store\r\nContent-Length: %zu\r\n\r\n%s",
                     date, sizeof(body) - 1, body);
    answer_len = (size_t)n;
    answer_s = now;
}

static void on_closed(uv_handle_t *h)
{
    free(h->data);
}

static void conn_close(conn_t *c)
{
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, on_closed);
}

/* The answer after what the output holds; -1 for a pipeline deeper than the
 * output buffer (the connection is dropped). Every way of driving the sockets
 * answers with it. */
static int put_answer(char *wbuf, size_t *wlen)
{
    redate();
    if (*wlen + answer_len > WBUF)
        return -1;
    memcpy(wbuf + *wlen, answer, answer_len);
    *wlen += answer_len;
    return 0;
}

static int on_complete(llhttp_t *p)
{
    conn_t *c = p->data;
    return put_answer(c->wbuf, &c->wlen);
}

static const llhttp_settings_t settings = {.on_message_complete = on_complete};

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);

static void on_written(uv_write_t *w, int status)
{
    conn_t *c = w->data;
    c->writing = 0;
    c->wlen = 0;
    if (status < 0) {
        conn_close(c);
        return;
    }
    uv_read_start((uv_stream_t *)&c->tcp, NULL, on_read);
}

static void flush(conn_t *c)
{
    uv_buf_t b = uv_buf_init(c->wbuf, (unsigned)c->wlen);
    int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n == (int)c->wlen) {
        c->wlen = 0;
        return;
    }
    if (n < 0 && n != UV_EAGAIN) {
        conn_close(c);
        return;
    }
    if (n > 0) {
        memmove(c->wbuf, c->wbuf + n, c->wlen - (size_t)n);
        c->wlen -= (size_t)n;
    }
    /* the peer is slow to read: stop reading until the rest is out */
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->writing = 1;
    c->wr.data = c;
    b = uv_buf_init(c->wbuf, (unsigned)c->wlen);
    if (uv_write(&c->wr, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0)
        conn_close(c);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)hint;
    conn_t *c = h->data;
    *buf = uv_buf_init(c->rbuf, RBUF);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    conn_t *c = s->data;
    if (n < 0) {
        conn_close(c);
        return;
    }
    if (n == 0)
        return;
    if (llhttp_execute(&c->parser, buf->base, (size_t)n) != HPE_OK) {
        conn_close(c);
        return;
    }
    if (c->wlen)
        flush(c);
}

static void on_conn(uv_stream_t *l, int status)
{
    if (status < 0)
        return;
    conn_t *c = malloc(sizeof(*c));
    if (!c)
        return;
    c->writing = 0;
    c->wlen = 0;
    uv_tcp_init(loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept(l, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    llhttp_init(&c->parser, HTTP_REQUEST, &settings);
    c->parser.data = c;
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void on_walk_close(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, h->data && h != (uv_handle_t *)&listener ? on_closed : NULL);
}

static void on_signal(uv_signal_t *s, int sig)
{
    (void)s, (void)sig;
    uv_stop(loop);
}


/*
 * FLOOR_EPOLL=1: the same answers from a loop of our own, as nginx runs its
 * own: epoll edge-triggered (each socket registered once, EPOLLIN|EPOLLOUT|
 * EPOLLRDHUP|EPOLLET), recv(2) until a short read, send(2) with MSG_NOSIGNAL.
 * It measures what libuv's stream layer (level-triggered epoll, read(2) and
 * write(2)) costs beside it.
 */
typedef struct {
    int fd;
    llhttp_t parser;
    size_t wlen;
    char rbuf[RBUF];
    char wbuf[WBUF];
} econn_t;

static int on_complete_e(llhttp_t *p)
{
    econn_t *c = p->data;
    return put_answer(c->wbuf, &c->wlen);
}

static const llhttp_settings_t esettings = {.on_message_complete = on_complete_e};
static volatile sig_atomic_t estop;

static void on_esignal(int sig)
{
    (void)sig;
    estop = 1;
}

static void eclose(econn_t *c)
{
    close(c->fd);
    free(c);
}

/* Returns -1 when the connection is gone. */
static int eflush(econn_t *c)
{
    while (c->wlen) {
        ssize_t n = send(c->fd, c->wbuf, c->wlen, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                return 0; /* EPOLLOUT's edge comes when there is room */
            return -1;
        }
        memmove(c->wbuf, c->wbuf + n, c->wlen - (size_t)n);
        c->wlen -= (size_t)n;
    }
    return 0;
}

static int eread(econn_t *c)
{
    for (;;) {
        if (c->wlen) /* an unsent answer: read nothing more until it is out */
            return 0;
        ssize_t n = recv(c->fd, c->rbuf, RBUF, 0);
        if (n == 0)
            return -1;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN ? 0 : -1;
        }
        if (llhttp_execute(&c->parser, c->rbuf, (size_t)n) != HPE_OK)
            return -1;
        if (c->wlen && eflush(c) < 0)
            return -1;
        if ((size_t)n < RBUF)
            return 0; /* a short read drained the socket (as nginx assumes) */
    }
}

static int epoll_main(int port)
{
    struct sigaction sa = {.sa_handler = on_esignal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(lfd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(lfd, 4096) != 0) {
        fprintf(stderr, "uv-floor: cannot listen on 127.0.0.1:%d\n", port);
        return 1;
    }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    struct epoll_event evs[512];
    while (!estop) {
        int n = epoll_wait(ep, evs, 512, 1000);
        for (int i = 0; i < n; i++) {
            econn_t *c = evs[i].data.ptr;
            if (!c) {
                for (;;) {
                    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0)
                        break;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                    econn_t *nc = malloc(sizeof(*nc));
                    if (!nc) {
                        close(fd);
                        continue;
                    }
                    nc->fd = fd;
                    nc->wlen = 0;
                    llhttp_init(&nc->parser, HTTP_REQUEST, &esettings);
                    nc->parser.data = nc;
                    struct epoll_event ce = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
                                             .data.ptr = nc};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ce);
                }
                continue;
            }
            uint32_t e = evs[i].events;
            if (e & (EPOLLERR | EPOLLHUP)) {
                eclose(c);
                continue;
            }
            if ((e & EPOLLOUT) && c->wlen && eflush(c) < 0) {
                eclose(c);
                continue;
            }
            if ((e & (EPOLLIN | EPOLLRDHUP | EPOLLOUT)) && eread(c) < 0) {
                eclose(c);
                continue;
            }
        }
    }
    close(ep);
    close(lfd);
    return 0;
}

/*
 * FLOOR_EPOLL=2: libuv's loop (level-triggered) with uv_poll_t on each socket
 * and our own recv(2)/send(2): libuv's stream layer left out, its epoll kept.
 */
typedef struct {
    uv_poll_t poll;
    int fd;
    llhttp_t parser;
    size_t wlen;
    char rbuf[RBUF];
    char wbuf[WBUF];
} pconn_t;

static int on_complete_p(llhttp_t *p)
{
    pconn_t *c = p->data;
    return put_answer(c->wbuf, &c->wlen);
}

static const llhttp_settings_t psettings = {.on_message_complete = on_complete_p};

static void on_pclosed(uv_handle_t *h)
{
    pconn_t *c = h->data;
    close(c->fd);
    free(c);
}

static void pclose_(pconn_t *c)
{
    if (!uv_is_closing((uv_handle_t *)&c->poll))
        uv_close((uv_handle_t *)&c->poll, on_pclosed);
}

static void on_pevent(uv_poll_t *h, int status, int events);

/* Returns -1 when the connection is gone, else whether all is out. */
static int pflush(pconn_t *c)
{
    while (c->wlen) {
        ssize_t n = send(c->fd, c->wbuf, c->wlen, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                uv_poll_start(&c->poll, UV_WRITABLE, on_pevent);
                return 0;
            }
            return -1;
        }
        memmove(c->wbuf, c->wbuf + n, c->wlen - (size_t)n);
        c->wlen -= (size_t)n;
    }
    return 1;
}

static void on_pevent(uv_poll_t *h, int status, int events)
{
    pconn_t *c = h->data;
    if (status < 0) {
        pclose_(c);
        return;
    }
    if (events & UV_WRITABLE) {
        int r = pflush(c);
        if (r < 0) {
            pclose_(c);
            return;
        }
        if (r == 0)
            return;
        uv_poll_start(&c->poll, UV_READABLE, on_pevent);
    }
    if (!(events & UV_READABLE) || c->wlen)
        return;
    ssize_t n;
    do
        n = recv(c->fd, c->rbuf, RBUF, 0);
    while (n < 0 && errno == EINTR);
    if (n < 0 && errno == EAGAIN)
        return;
    if (n <= 0 || llhttp_execute(&c->parser, c->rbuf, (size_t)n) != HPE_OK ||
        (c->wlen && pflush(c) < 0))
        pclose_(c);
}

static void on_pconn(uv_poll_t *h, int status, int events)
{
    (void)events;
    if (status < 0)
        return;
    int lfd = *(int *)h->data;
    for (int k = 0; k < 64; k++) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        pconn_t *c = malloc(sizeof(*c));
        if (!c) {
            close(fd);
            continue;
        }
        c->fd = fd;
        c->wlen = 0;
        llhttp_init(&c->parser, HTTP_REQUEST, &psettings);
        c->parser.data = c;
        uv_poll_init_socket(loop, &c->poll, fd);
        c->poll.data = c;
        uv_poll_start(&c->poll, UV_READABLE, on_pevent);
    }
}

static uv_poll_t lpoll;
static int plfd;

static int poll_main(int port)
{
    plfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(plfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(plfd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(plfd, 4096) != 0) {
        fprintf(stderr, "uv-floor: cannot listen on 127.0.0.1:%d\n", port);
        return 1;
    }
    uv_poll_init_socket(loop, &lpoll, plfd);
    lpoll.data = &plfd;
    uv_poll_start(&lpoll, UV_READABLE, on_pconn);
    uv_signal_init(loop, &sig_term);
    uv_signal_init(loop, &sig_int);
    uv_signal_start(&sig_term, on_signal, SIGTERM);
    uv_signal_start(&sig_int, on_signal, SIGINT);
    uv_run(loop, UV_RUN_DEFAULT);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[1]);
    if (port <= 0 || port > 65535) {
        fprintf(stderr, "uv-floor: bad port %s\n", argv[1]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    redate();
    const char *e = getenv("FLOOR_EPOLL");
    if (e && strcmp(e, "1") == 0)
        return epoll_main(port);
    loop = uv_default_loop();
    if (e && strcmp(e, "2") == 0)
        return poll_main(port);
    const char *m = getenv("UV_FLOOR_METRICS");
    if (m && strcmp(m, "1") == 0)
        uv_loop_configure(loop, UV_METRICS_IDLE_TIME);
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", port, &a);
    uv_tcp_init(loop, &listener);
    if (uv_tcp_bind(&listener, (const struct sockaddr *)&a, 0) != 0 ||
        uv_listen((uv_stream_t *)&listener, 4096, on_conn) != 0) {
        fprintf(stderr, "uv-floor: cannot listen on 127.0.0.1:%d\n", port);
        return 1;
    }
    uv_signal_init(loop, &sig_term);
    uv_signal_init(loop, &sig_int);
    uv_signal_start(&sig_term, on_signal, SIGTERM);
    uv_signal_start(&sig_int, on_signal, SIGINT);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_walk(loop, on_walk_close, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    return uv_loop_close(loop) == 0 ? 0 : 1;
}
