/*
 * flashgate-bench-uv-floor: what a libuv loop + llhttp responder
 * costs per answer, beside bench/mhd_floor.c (libmicrohttpd's).
 *
 * bench/bench.py runs it beside nginx, the libmicrohttpd floor and flashgate's
 * sold-out case. It has the shape of a hand-written HTTP/1.1 connection layer
 * (the shape gateway/gw_h1.c, the public listener since session 8, took):
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
 * With UV_FLOOR_METRICS=1 in the environment the loop keeps libuv's idle-time
 * metrics (uv_loop_configure(UV_METRICS_IDLE_TIME)), as flashgate's workers did
 * before session 12: libuv then polls with a zero timeout first and, when that
 * finds nothing, polls again to sleep (bench/README.md, session 12).
 */
#include <llhttp.h>
#include <uv.h>

#include <signal.h>
#include <stdio.h>
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

static int on_complete(llhttp_t *p)
{
    conn_t *c = p->data;
    redate();
    if (c->wlen + answer_len > WBUF)
        return -1; /* a pipeline deeper than the output buffer: drop the connection */
    memcpy(c->wbuf + c->wlen, answer, answer_len);
    c->wlen += answer_len;
    return 0;
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
    loop = uv_default_loop();
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
