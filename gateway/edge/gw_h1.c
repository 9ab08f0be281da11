/*
 * The public listener's HTTP/1.1 connection layer: each worker's own listening
 * socket (SO_REUSEPORT) and connections on its libuv loop, requests parsed by
 * llhttp (Node's parser; Debian's node-llhttp ships its generated C, built
 * here: CMakeLists.txt).
 *
 * Why hand-written: what one answer costs decides how many machines a sale
 * needs (the target: a sold-out or rate-limited answer at most nginx's CPU).
 * libmicrohttpd alone, answering a constant, costs about nginx's CPU
 * (bench/mhd_floor.c); a libuv loop with an HTTP parser and the same bytes
 * costs well below it (bench/uv_floor.c); `sh bench/bench.sh` prints both
 * beside nginx. A connection here is what flashgate needs and nothing more:
 *
 *  - one small struct per socket; an 8 KiB read buffer (nginx's
 *    large_client_header_buffers) with the parser and the output buffer only
 *    while the connection holds something (gw_h1_buf_t, from the worker's
 *    free list): a head that does not fit gets 431 (JSON); the head stays in
 *    the buffer while its request lives (header and query values point into
 *    it, NUL-terminated in place once the head is in);
 *  - bodies go to the request's own buffer through gw_http.c (body limit:
 *    413), body bytes never stay in the read buffer;
 *  - one request at a time per connection: at its end the parser pauses, so
 *    pipelined requests wait in the buffer and are answered in order; a
 *    request that waits (Redis, fsync, an upstream) is simply held until its
 *    callback (no suspend/resume: reading goes on into the buffer, so a
 *    client that leaves is seen); reading stops while an answer is unsent
 *    (backpressure: a client that does not read gets nothing more read) and
 *    when the buffer is full;
 *  - the loop is ours (gw_h1_run): the sockets are in the worker's own epoll
 *    set, edge-triggered, read and written with recv(2) and send(2), and
 *    libuv (timers, Redis, upstreams, the thread pool) runs inside it when it
 *    has work. libuv's streams (uv_tcp_t: level-triggered, read(2) through the
 *    VFS, its read and write request machinery) cost the floor ~0.2 us a
 *    sold-out answer more (bench/uv_floor.c, FLOOR_EPOLL=1 against 0);
 *  - answers are rendered into one output buffer (status line, headers, body)
 *    and sent at once, the rest when EPOLLOUT's edge says there is room; prepared answers
 *    (sold out, rate limited, overloaded) are bytes with the Date refreshed
 *    once a second (gw_reply.c, gw_prep_t);
 *  - keep-alive per RFC 9112 (HTTP/1.0 closes unless it asked to keep alive),
 *    Expect: 100-continue answered before the body is read, chunked bodies
 *    decoded by the parser;
 *  - a connection closed after an answer is shut down for writing and read
 *    until the client closes (or the guard's deadline), so that unread bytes
 *    cannot turn the close into a reset that destroys the answer in flight.
 *
 * The connection guard (gw_conn.c) keeps its caps and deadlines; it closes a
 * connection by calling gw_h1_kill, a plain close of the socket (the struct
 * is freed at the end of the iteration: events already harvested may name
 * it). Accepting is ours too: the overload door (gw_overload.c) stops polling
 * the listening socket and resets its queue, and opens it again.
 */
#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_log.h"
#include "common/cm_time.h"
#include "gateway/base/gw_base.h"
#include "gateway/edge/gw_edge.h"
#include "gateway/edge/gw_upcall.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define OUT_INLINE 2048
/* Accepts per readiness of the listening socket before the loop serves I/O. */
#define ACCEPT_BATCH 64
/* Buffers a worker keeps for reuse (gw_h1_buf_t, ~13 KiB each): more are freed. */
#define BUF_FREE_MAX 256
/* How often a connection idle since the last look gives its buffer back. */
#define BUF_SWEEP_MS 1000
/* Buffers freed (past the free list) since the last malloc_trim that make a sweep trim. */
#define BUF_TRIM_MIN 64

/*
 * What a connection needs only while it holds something: a request's head
 * and parser state, unparsed bytes, an unsent answer. Taken from the worker's
 * free list when a read comes (on_alloc) and given back once all of it is
 * done and the connection read nothing for a second (conn_settle from
 * on_buf_sweep; at once when it lingers or closes), so an idle keep-alive
 * connection is its gw_h1_t alone (456 bytes, against 13.8 KiB with the
 * buffers inline: 10,000 idle keep-alive connections take ~6 MB of RSS, not
 * 97 MB; `python3 bench/conn_mem.py`), as nginx frees an idle
 * connection's client_header_buffer. A request that waits (Redis, the spool's batch, an upstream), a head or a
 * body cut by a read, pipelined bytes: the connection keeps its buffer,
 * whose strings the request points into, until they are done with.
 */
typedef struct gw_h1_buf {
    gw_h1_head_t h; /* the parser and the head it read (spans into rbuf) */
    struct gw_h1_buf *next_free;
    /* the parser is between two messages of a keep-alive connection, as a
     * fresh one (llhttp resumed after a keep-alive message runs
     * llhttp__after_message_complete, which clears its flags, then starts
     * the next request): reused as is, else initialized again */
    bool clean;
    char out[OUT_INLINE];
    char rbuf[GW_H1_READ_BUF];
} gw_h1_buf_t;

/* The fields every answer touches first, libuv's handle after them. */
struct gw_h1 {
    gw_worker_t *w;
    gw_h1_buf_t *buf; /* NULL while the connection holds nothing (idle) */
    gw_h1_head_t *h;  /* &buf->h */
    char *rbuf;       /* buf->rbuf */
    gw_req_t *req;    /* the request being read or served */
    gw_conn_t *guard; /* gw_conn.c entry; NULL once released */
    /* read buffer: [0, h->head_end) the current head, [parsed, rlen) unparsed */
    size_t rlen, parsed;
    size_t olen, owritten;
    size_t ocap;
    char *out;          /* buf->out, or a larger heap buffer */
    bool writing;       /* an answer is partly sent: EPOLLOUT's edge says when there is room */
    bool reading;
    bool close_after;   /* close once the output is out */
    bool lingering;     /* shut down for writing: read and drop until EOF */
    bool eof;           /* the client shut down its side: answer what it sent, then close */
    bool closing;
    bool in_parse;      /* inside conn_parse: gw_req_finish only marks */
    bool continue_sent; /* 100 Continue sent for this request */
    bool body_phase;    /* the guard holds this request's body to its rate */
    bool keep_buf;      /* a dropped request still waits and points into buf: kept until close */
    bool spare;         /* buf is a lingering read's spare, from on_alloc to on_read */
    bool busy;          /* read since the last buffer sweep (on_buf_sweep) */
    char last_byte;     /* the last byte parsed by the previous execute */
    uint64_t read_iter; /* w->iter_no when reading last started */
    uint64_t read_after_ns; /* the last read's bytes arrived after it (0: not known) */
    size_t body_early;  /* body bytes read before that (guard_body) */
    int fd;               /* -1 once closed */
    bool rready;          /* an edge said readable and no read found it drained since */
    bool rdhup;           /* the client's FIN came (EPOLLRDHUP): read to the end */
    bool posted;          /* on w->edge.h1_posted */
    gw_h1_t *post_next, *dead_next;
    gw_h1_t *prev, *next; /* the worker's connections */
    union {
        struct sockaddr sa;
        struct sockaddr_in in;
        struct sockaddr_in6 in6;
    } peer;
    char method[GW_H1_METHOD_MAX + 1]; /* a method llhttp does not know (else "") */
};

static void conn_parse(gw_h1_t *c);
static void conn_close(gw_h1_t *c);
static bool conn_on_head(gw_h1_head_t *h);
static void conn_on_body(gw_h1_head_t *h, const char *at, size_t len);

/*---- buffers ----*/

/* The buffer the worker freed last (warm in the caches), or a new one; as it is. */
static gw_h1_buf_t *spare_take(gw_worker_t *w)
{
    gw_h1_buf_t *b = w->edge.h1_free;
    if (b) {
        w->edge.h1_free = b->next_free;
        w->edge.h1_nfree--;
    } else {
        b = cm_xmalloc(sizeof(*b));
        b->clean = false;
    }
    return b;
}

/* Back to the worker's list (at most BUF_FREE_MAX kept: the memory a worker
 * holds stays bounded by its connections plus that). */
static void spare_give(gw_worker_t *w, gw_h1_buf_t *b)
{
    if (w->edge.h1_nfree >= BUF_FREE_MAX) {
        free(b);
        w->edge.h1_freed++;
        return;
    }
    b->next_free = w->edge.h1_free;
    w->edge.h1_free = b;
    w->edge.h1_nfree++;
}

/* c gets a buffer, its parser ready for a request. */
static void buf_take(gw_h1_t *c)
{
    gw_h1_buf_t *b = spare_take(c->w);
    if (!b->clean) {
        gw_h1_head_init(&b->h, b->rbuf, c);
        b->h.on_head = conn_on_head;
        b->h.on_body = conn_on_body;
    }
    b->h.owner = c;
    c->buf = b;
    c->h = &b->h;
    c->rbuf = b->rbuf;
    c->out = b->out;
    c->ocap = OUT_INLINE;
}

/* c's buffer goes back to the worker. clean: its parser waits for a new
 * message as a fresh one would (parser_between), else it is initialized again
 * when taken. */
static void buf_give(gw_h1_t *c, bool clean)
{
    gw_h1_buf_t *b = c->buf;
    if (c->out != b->out)
        free(c->out);
    /* c->h and c->out go stale: they are read only while c->buf is set
     * (buf_take sets them again); the output is empty (conn_settle, or c is
     * about to be freed) */
    c->buf = NULL;
    c->rbuf = NULL;
    c->rlen = c->parsed = 0;
    b->clean = clean;
    spare_give(c->w, b);
}

/* c's parser is between two messages of a connection that goes on, where a
 * fresh parser would be: no message begun, nothing unparsed, no error or
 * close ahead (those linger or close first). */
static bool parser_between(const gw_h1_t *c)
{
    return !c->lingering && !c->close_after && !c->eof && !c->keep_buf && !c->req &&
           c->parsed == c->rlen && !c->h->in_msg;
}

/*
 * Gives c's buffer back when nothing in it is needed any more: no request
 * (its head's strings point into it), no message begun (a head or a body cut
 * by a read), no unparsed bytes (pipelined requests), no unsent answer. A
 * connection that lingers keeps none (what it reads is dropped), unless a
 * request it dropped still waits (keep_buf: until the close, as before).
 */
static void conn_settle(gw_h1_t *c)
{
    /* olen: an answer unsent (or being written: c->writing) */
    if (!c->buf || c->olen || c->in_parse || c->closing || c->keep_buf)
        return;
    if (c->lingering) {
        buf_give(c, false);
        return;
    }
    /* parser_between, without what was checked above; c->method is "" and
     * c->last_byte unread outside a message (next_request, trailer_bare_lf) */
    if (c->req || c->parsed != c->rlen || c->h->in_msg || c->close_after || c->eof)
        return;
    buf_give(c, true);
}

/*
 * Once a second: a connection that read nothing since the last sweep and
 * holds nothing in its buffer gives it back. Not after every answer: the
 * take and give cost ~100-120 instructions per answer (a sold out 4,381 ->
 * 4,478-4,500, callgrind) and sharing a few warm buffers among 256 busy
 * connections bought no CPU we could measure; what an idle keep-alive connection holds is
 * what counts (RSS), and it is one second's.
 */
/* Under ASan or TSan their allocator holds the heap and glibc's is never set
 * up: its trim would read an arena nobody made (a SEGV in mtrim under ASan),
 * and there is nothing of glibc's to give back. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define heap_trim() ((void)0)
#else
#define heap_trim() ((void)malloc_trim(0))
#endif

static void trim_work(uv_work_t *wk)
{
    (void)wk;
    heap_trim();
}

static void trim_after(uv_work_t *wk, int status)
{
    (void)status;
    ((gw_worker_t *)wk->data)->edge.h1_trimming = false;
}

static void on_buf_sweep(uv_timer_t *t)
{
    gw_worker_t *w = t->data;
    for (gw_h1_t *c = w->edge.h1_conns; c; c = c->next) {
        if (c->busy)
            c->busy = false;
        else if (c->buf)
            conn_settle(c);
    }
    /* Buffers freed past the free list (a burst of connections that each
     * had a request, now idle or gone) stay in malloc's heap, resident,
     * unless given back: 10,000 of them kept 95 MB resident. The trim
     * walks every arena and took 1-4 ms after bursts of 1,500 connections
     * (uprobes): in libuv's thread pool, not on this loop, which only takes
     * an arena lock if it mallocs meanwhile (the buy path does not). */
    if (w->edge.h1_freed >= BUF_TRIM_MIN && !w->edge.h1_trimming) {
        w->edge.h1_freed = 0;
        w->edge.h1_trim.data = w;
        w->edge.h1_trimming = uv_queue_work(&w->loop, &w->edge.h1_trim, trim_work, trim_after) == 0;
        if (!w->edge.h1_trimming)
            heap_trim();
    }
}

void gw_h1_worker_free(gw_worker_t *w)
{
    while (w->edge.h1_free) {
        gw_h1_buf_t *b = w->edge.h1_free;
        w->edge.h1_free = b->next_free;
        free(b);
    }
    w->edge.h1_nfree = 0;
    if (w->edge.efd >= 0)
        close(w->edge.efd);
    w->edge.efd = -1;
}

/*---- output ----*/

static void out_reserve(gw_h1_t *c, size_t more)
{
    if (!c->buf)
        buf_take(c); /* not expected: output comes from a request or the parser */
    if (c->olen + more <= c->ocap)
        return;
    size_t cap = c->ocap * 2;
    while (cap < c->olen + more)
        cap *= 2;
    if (c->out == c->buf->out) {
        char *n = cm_xmalloc(cap);
        memcpy(n, c->out, c->olen);
        c->out = n;
    } else {
        c->out = cm_xrealloc(c->out, cap);
    }
    c->ocap = cap;
}

static void out_put(gw_h1_t *c, const char *s, size_t n)
{
    out_reserve(c, n);
    memcpy(c->out + c->olen, s, n);
    c->olen += n;
}

#define OUT_LIT(c, lit) out_put(c, lit, sizeof(lit) - 1)

static void out_str(gw_h1_t *c, const char *s)
{
    out_put(c, s, strlen(s));
}

static void out_uint(gw_h1_t *c, uint64_t v)
{
    char tmp[20];
    out_put(c, tmp, (size_t)(gw_put_u64(tmp, v) - tmp));
}

/* The connection closes once its output is out; counted in w->edge.h1_leaving
 * until it does (the door's trim counts the connections that stay). */
static void conn_leaving(gw_h1_t *c)
{
    if (!c->close_after) {
        c->close_after = true;
        c->w->edge.h1_leaving++;
    }
}

/* Whether the connection stays open after this answer, and the header that says so. */
static void out_connection(gw_h1_t *c, gw_req_t *r)
{
    if (r && r->close_after) {
        gw_h1_trim_done(r); /* counted in h1_leaving from here */
        conn_leaving(c);
    }
    if (c->close_after) {
        OUT_LIT(c, "Connection: close\r\n");
    } else if (c->h->parser.http_major == 1 && c->h->parser.http_minor == 0) {
        OUT_LIT(c, "Connection: keep-alive\r\n"); /* a 1.0 client that asked for it */
    }
}

void gw_h1_status(gw_req_t *r, unsigned status)
{
    gw_h1_t *c = r->conn;
    OUT_LIT(c, "HTTP/1.1 ");
    out_uint(c, status);
    out_put(c, " ", 1);
    out_str(c, gw_reply_reason(status));
    OUT_LIT(c, "\r\nDate: ");
    out_put(c, r->w->date, GW_DATE_LEN);
    OUT_LIT(c, "\r\n");
}

void gw_h1_header(gw_req_t *r, const char *name, const char *value)
{
    gw_h1_t *c = r->conn;
    out_str(c, name);
    OUT_LIT(c, ": ");
    out_str(c, value);
    OUT_LIT(c, "\r\n");
}

void gw_h1_body(gw_req_t *r, const char *body, size_t len, int64_t announce)
{
    gw_h1_t *c = r->conn;
    if (announce >= 0) {
        OUT_LIT(c, "Content-Length: ");
        out_uint(c, (uint64_t)announce);
        OUT_LIT(c, "\r\n");
    }
    out_connection(c, r);
    OUT_LIT(c, "\r\n");
    if (!r->head_only && len)
        out_put(c, body, len);
}

/* A gw_resp_t answer: rendered by gw_reply.c into our buffer. */
static void out_resp(gw_h1_t *c, gw_req_t *r, const gw_resp_t *p)
{
    /* the head's bound (not GW_RESP_HEAD_MAX): a 202 stays in out_inline. Status
     * line, Date, Content-Type, Cache-Control, Content-Length: < 260 bytes. */
    size_t need = 320 + p->body_len;
    for (unsigned i = 0; i < p->nheaders; i++)
        need += strlen(p->headers[i][0]) + strlen(p->headers[i][1]) + 4;
    out_reserve(c, need);
    c->olen += gw_resp_render(p, r->w->date, c->out + c->olen, GW_RESP_HEAD_MAX, NULL);
    out_connection(c, r);
    OUT_LIT(c, "\r\n");
    if (!r->head_only)
        out_put(c, p->body, p->body_len);
}

/* A prepared answer: its bytes, the Date brought to this second first. */
static void out_prep(gw_h1_t *c, gw_req_t *r, gw_prep_t *p)
{
    gw_prep_redate(p, r->w);
    out_reserve(c, p->len + 32);
    memcpy(c->out + c->olen, p->buf, p->head_len);
    c->olen += p->head_len;
    out_connection(c, r);
    size_t tail = r->head_only ? 2 : p->len - p->head_len;
    memcpy(c->out + c->olen, p->buf + p->head_len, tail);
    c->olen += tail;
}

/* A protocol error of ours (no request context): JSON body, then close. */
static void out_error(gw_h1_t *c, gw_reply_t reply, const char *msg)
{
    gw_resp_t p;
    gw_resp_error(&p, reply, NULL, "%s", msg);
    conn_leaving(c);
    out_reserve(c, GW_RESP_HEAD_MAX + p.body_len + 64);
    c->olen += gw_resp_render(&p, c->w->date, c->out + c->olen, GW_RESP_HEAD_MAX, NULL);
    OUT_LIT(c, "Connection: close\r\n\r\n");
    out_put(c, p.body, p.body_len);
    atomic_fetch_add_explicit(&c->w->ctr.replies[reply], 1, memory_order_relaxed);
}

/* c has bytes to read that no edge will announce again (reading starts
 * again, a read filled the buffer): read in the next iteration. */
static void post(gw_h1_t *c)
{
    if (c->posted || c->closing)
        return;
    c->posted = true;
    c->post_next = c->w->edge.h1_posted;
    c->w->edge.h1_posted = c;
}

/* Sends what the output holds past owritten until it is all out (0) or the
 * socket takes no more (EAGAIN) or fails: the errno. Edge-triggered, a send
 * that stops short must end in EAGAIN: that sets the socket's SOCK_NOSPACE,
 * and only then does room bring an EPOLLOUT edge. */
static int out_send(gw_h1_t *c)
{
    while (c->owritten < c->olen) {
        ssize_t n = send(c->fd, c->out + c->owritten, c->olen - c->owritten, MSG_NOSIGNAL);
        if (n >= 0)
            c->owritten += (size_t)n;
        else if (errno != EINTR)
            return errno;
    }
    return 0;
}

/* All written: the buffer is empty again; a large one (a proxied answer) goes back. */
static void out_reset(gw_h1_t *c)
{
    c->olen = c->owritten = 0;
    if (c->out != c->buf->out && c->ocap > 64 * 1024) {
        free(c->out);
        c->out = c->buf->out;
        c->ocap = OUT_INLINE;
    }
}

static void linger(gw_h1_t *c);

/* Writes what the output holds: at once when the socket takes it, else the
 * rest when EPOLLOUT's edge says there is room (reading stops meanwhile:
 * gw_conn.c watches the client read it). Then closes when asked. */
static void flush(gw_h1_t *c)
{
    if (c->closing || c->writing)
        return;
    if (c->olen > c->owritten) {
        int e = out_send(c);
        if (e && e != EAGAIN) {
            conn_close(c);
            return;
        }
        if (c->owritten < c->olen) {
            c->writing = true;
            c->reading = false;
            gw_conn_writing(c->guard);
            return;
        }
    }
    if (c->olen)
        out_reset(c); /* (nothing written: c may hold no buffer) */
    if (c->close_after)
        linger(c);
}

/* EPOLLOUT's edge: room for an unsent answer. */
static void write_more(gw_h1_t *c)
{
    size_t before = c->owritten;
    int e = out_send(c);
    if (e == EAGAIN && c->owritten == before)
        return;
    /* An I/O callback that may serve the requests the buffer holds and set
     * the guard's deadlines: the iteration's clock, as a read's. Without it an
     * iteration of write completions alone used the last read's time, and an
     * idle deadline set here could be due at once for a worker that had only
     * slow readers to write to for a while. */
    gw_http_iteration(c->w);
    if (e && e != EAGAIN) {
        conn_close(c);
        return;
    }
    if (c->owritten < c->olen)
        return;
    c->writing = false;
    out_reset(c);
    if (c->close_after) {
        linger(c);
        return;
    }
    /* Back to the phase of what the connection holds: a 100 Continue went
     * out while its body is still to come (held to the body's rate again,
     * its clock from now), answers went out while the next request waits
     * (Redis, fsync, an upstream: busy, no deadline), or nothing (idle). */
    if (!c->req)
        gw_conn_idle(c->guard);
    else if (!c->h->msg_done)
        gw_conn_head_done(c->guard); /* c->body_phase is already set */
    else
        gw_conn_busy(c->guard);
    conn_parse(c);
}

/*---- closing ----*/

/* At the end of the iteration that closed c: the events it harvested may
 * still name c, and c's request may still be posted. */
static void conn_free(gw_h1_t *c)
{
    if (c->buf)
        buf_give(c, parser_between(c)); /* an idle one closed: clean */
    free(c);
}

static void req_drop(gw_h1_t *c)
{
    gw_req_t *r = c->req;
    if (!r)
        return;
    c->req = NULL;
    r->conn = NULL;
    if (r->state != GW_ST_WAIT) {
        gw_http_req_free(r); /* a waiting one is freed by gw_req_finish */
    } else {
        gw_http_req_orphan(r); /* the buffer goes back at the close */
        c->keep_buf = true;    /* the sweep leaves the buffer to the close */
    }
}

static void conn_close(gw_h1_t *c)
{
    if (c->closing)
        return;
    c->closing = true;
    req_drop(c);
    gw_worker_t *w = c->w;
    w->edge.h1_open--;
    if (c->close_after)
        w->edge.h1_leaving--;
    if (c->prev)
        c->prev->next = c->next;
    else
        w->edge.h1_conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (c->guard) {
        gw_conn_release(c->guard);
        c->guard = NULL;
    }
    close(c->fd); /* out of the epoll set with it */
    c->fd = -1;
    c->dead_next = w->edge.h1_dead;
    w->edge.h1_dead = c;
}

void gw_h1_kill(gw_h1_t *c)
{
    conn_close(c);
}

static void start_reading(gw_h1_t *c);

/* The answer is out and the connection ends: FIN now, drop what the client
 * still sends until it closes; the guard's idle deadline ends a client that
 * never does. */
static void linger(gw_h1_t *c)
{
    if (c->lingering || c->closing)
        return;
    c->lingering = true;
    req_drop(c);
    if (shutdown(c->fd, SHUT_WR) != 0) { /* the output is all out (flush) */
        conn_close(c);
        return;
    }
    gw_conn_idle(c->guard);
    c->rlen = c->parsed = 0;
    start_reading(c);
    conn_settle(c);
}

/*---- the parser: the head's spans (gw_h1_head_t, also driven by fuzz_h1) ----*/

static gw_h1_head_t *head_of(llhttp_t *p)
{
    return p->data;
}

static size_t off_of(const gw_h1_head_t *h, const char *at)
{
    return (size_t)(at - h->buf);
}

static int on_message_begin(llhttp_t *p)
{
    gw_h1_head_t *h = head_of(p);
    h->in_msg = true;
    h->nhdrs = 0;
    h->nargs = 0;
    h->query = NULL;
    h->args_parsed = false;
    h->in_value = false;
    h->too_many = false;
    h->bad_name = false;
    h->url_len = 0;
    h->url = NULL;
    h->head_in = false;
    h->msg_done = false;
    h->folded = false;
    h->bare_lf = false;
    h->bad_path = false;
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    gw_h1_head_t *h = head_of(p);
    if (h->url_len == 0)
        h->url_off = off_of(h, at);
    h->url_len += len; /* a span cut by a read continues where it stopped */
    return 0;
}

/* Fields after the head are a chunked body's trailers: ignored (docs/api.md).
 * Kept, they would join the head's fields after head_strings ran (not
 * NUL-terminated, in bytes the body overwrites) and count toward its 64. */
static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    gw_h1_head_t *h = head_of(p);
    if (h->head_in)
        return 0;
    if (h->in_value || h->nhdrs == 0) {
        /* a new field (llhttp calls on_header_value, with 0 bytes for an
         * empty value, before the next field) */
        if (h->nhdrs == GW_H1_MAX_HEADERS) {
            h->too_many = true;
            return 0;
        }
        gw_hdr_t *f = &h->hdrs[h->nhdrs++];
        f->name = at;
        f->nlen = 0;
        f->value = NULL;
        f->vlen = 0;
        h->in_value = false;
    }
    if (h->too_many)
        return 0;
    h->hdrs[h->nhdrs - 1].nlen += len;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    gw_h1_head_t *h = head_of(p);
    if (h->head_in || h->too_many || h->nhdrs == 0)
        return 0;
    gw_hdr_t *f = &h->hdrs[h->nhdrs - 1];
    if (!h->in_value) {
        /* An empty first line, then an obs-fold: llhttp 8.1 skips the CRLF
         * and the fold's whitespace as the value's leading OWS and reads
         * what follows as the value ("Transfer-Encoding:\r\n chunked" frames
         * the body). A line end between the name and a value's first byte is
         * a fold: refused as the one below. (An empty value comes as 0 bytes
         * past its line's end.) */
        const char *colon = f->name + f->nlen;
        bool fold = false; /* the gap is ": " on nearly every field: no memchr call */
        for (const char *g = colon; len && g < at && !fold; g++)
            fold = *g == '\n';
        if (fold) {
            h->folded = true;
            return 0;
        }
        f->value = at;
        f->vlen = 0;
        h->in_value = true;
    } else if (h->folded || at != f->value + f->vlen) {
        /* A value continued away from where it stopped: an obs-fold (a line
         * starting with SP or HT; llhttp passes it on as more of the value).
         * Kept, the span would hold the CRLF and be cut short; RFC 9112 5.2
         * lets a server refuse it: 400 once the head is in (as bad_name: the
         * same answer wherever the reads were cut, a bad byte later in the
         * head being found first either way). */
        h->folded = true;
        return 0;
    }
    f->vlen += len;
    return 0;
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

size_t gw_h1_unescape(char *s)
{
    char *o = s;
    for (const char *i = s; *i; i++) {
        int hi, lo;
        /* %00 stays as sent: decoded, the NUL ended the string there and what
         * followed was dropped unseen (?token=<token>%00junk read as the token,
         * ?user_id=u1%00x as u1); kept, such a value fails its check. A path
         * with %00 is refused before it is routed (escaped_slash_or_nul). */
        if (*i == '%' && (hi = hexval(i[1])) >= 0 && (lo = hexval(i[2])) >= 0 && (hi | lo)) {
            *o++ = (char)(hi << 4 | lo);
            i += 2;
        } else {
            *o++ = *i;
        }
    }
    *o = '\0';
    return (size_t)(o - s);
}

unsigned gw_h1_parse_query(char *q, gw_arg_t *args, unsigned max)
{
    unsigned n = 0;
    while (q && *q && n < max) {
        char *amp = strchr(q, '&');
        if (amp)
            *amp = '\0';
        if (*q) {
            char *eq = strchr(q, '=');
            if (eq)
                *eq = '\0';
            args[n].name = q;
            args[n].value = eq ? eq + 1 : NULL;
            gw_h1_unescape(q);
            if (eq)
                gw_h1_unescape(eq + 1);
            n++;
        }
        q = amp ? amp + 1 : NULL;
    }
    return n;
}

/* The name as spelled here first (what clients send), then caseless. */
static bool name_is(const gw_hdr_t *f, const char *name, size_t n)
{
    return f->nlen == n && (memcmp(f->name, name, n) == 0 || strncasecmp(f->name, name, n) == 0);
}

#define NAME_IS(f, lit) name_is(f, lit, sizeof(lit) - 1)

/* The fields the gateway reads on every request (gw_known_hdrs_t, Expect,
 * Host), told apart by length first: one walk over the head (each lookup by
 * name walked the list again: two_hosts, Expect, the buy route's five). */
static void known_field(gw_h1_head_t *h, const gw_hdr_t *f)
{
    gw_known_hdrs_t *k = &h->known;
    const char **slot = NULL;
    switch (f->nlen) {
    case 4:
        if (NAME_IS(f, "Host") && h->nhost++ == 0)
            h->host = f->value;
        return;
    case 10:
        if (NAME_IS(f, "Connection"))
            h->connection = true;
        return;
    case 6:
        slot = NAME_IS(f, "Expect") ? &h->expect : NULL;
        break;
    case 12:
        slot = NAME_IS(f, "Content-Type") ? &k->content_type : NULL;
        break;
    case 13:
        if (!NAME_IS(f, "Authorization"))
            return;
        k->auth_count++;
        slot = &k->authorization;
        break;
    case 14:
        if (!NAME_IS(f, "Content-Length"))
            return;
        if (k->content_length && strcmp(k->content_length, f->value) != 0)
            k->cl_conflict = true; /* llhttp refuses a second one first */
        slot = &k->content_length;
        break;
    case 15:
        if (NAME_IS(f, "X-Forwarded-For")) {
            k->xff = f->value; /* the last: the one the nearest proxy wrote */
            k->xff_count++;
            return;
        }
        if (NAME_IS(f, "X-Request-Start")) {
            k->req_start = f->value; /* the last: the nearest proxy's */
            return;
        }
        slot = NAME_IS(f, "Idempotency-Key") ? &k->idem_key : NULL;
        break;
    case 17:
        if (NAME_IS(f, "Transfer-Encoding")) {
            k->te_count++;
            slot = &k->transfer_encoding;
        } else if (NAME_IS(f, "X-Admission-Token")) {
            slot = &k->admission;
        }
        break;
    default:
        return;
    }
    if (slot && !*slot)
        *slot = f->value;
}

/* An absolute-form target (RFC 9112 3.2.2, a server MUST accept it): its
 * path and query ("/" when it has none; the authority's last byte becomes
 * the '/'). The routes are the path's, whatever the authority. The authority
 * is the host asked for (3.2.2: the Host field is then ignored), kept in
 * h->authority, NUL-terminated two bytes to the left (over "//"), where
 * neither the path nor its '/' reach. */
static char *origin_form(gw_h1_head_t *h, char *url)
{
    if (*url == '/')
        return url; /* origin-form, nearly every request: no two caseless compares */
    size_t skip = strncasecmp(url, "http://", 7) == 0    ? 7
                  : strncasecmp(url, "https://", 8) == 0 ? 8
                                                         : 0;
    if (!skip)
        return url;
    char *end = url + skip + strcspn(url + skip, "/?#");
    size_t alen = (size_t)(end - (url + skip));
    if (alen) {
        memmove(url + skip - 2, url + skip, alen);
        url[skip - 2 + alen] = '\0';
        h->authority = url + skip - 2;
    }
    if (*end != '/') {
        end--;
        *end = '/';
    }
    return end;
}

/* The head is in: NUL-terminate its spans in place (each is followed by a
 * byte the parser has consumed: ' ', ':', CR, LF), find the known fields,
 * split the query, decode the path. */
/*
 * Routing and the gateway's checks work on the decoded path; a proxied route
 * forwards the path as sent (h->raw_path), and its upstream (its own router)
 * decodes it and may resolve dot segments: a path that means something else
 * once decoded or normalised would let a request reach what the gateway did
 * not route it to (/v1/recs/../admin or /v1/recs/%2e%2e/admin past a proxied
 * prefix, /v1/recs/a%2F..%2Fadmin to an upstream that decodes before it
 * splits, /healthz%00/x answered as /healthz). Such paths have no use on this
 * API and are refused (400), as an edge that normalises would see a different
 * path than the gateway does.
 */
static bool escaped_slash_or_nul(const char *path)
{
    for (const char *p = strchr(path, '%'); p; p = strchr(p + 1, '%'))
        if ((p[1] == '0' && p[2] == '0') || (p[1] == '2' && (p[2] == 'f' || p[2] == 'F')) ||
            (p[1] == '5' && (p[2] == 'c' || p[2] == 'C')))
            return true;
    return false;
}

/* A "." or ".." segment (RFC 3986 3.3), or a backslash some servers take
 * for a slash, in the decoded path. Also one with path parameters, "..;x":
 * Tomcat, Jetty and Spring cut a segment's ";..." before they resolve dot
 * segments, so /v1/recs/..;/admin is /admin to them (the nginx + Tomcat
 * bypass); a ';' elsewhere is a plain character. */
static bool has_dot_segment(const char *path)
{
    for (const char *p = path; (p = strchr(p, '.')) != NULL; p++) {
        bool starts = p == path || p[-1] == '/' || p[-1] == '\\';
        const char *e = p[1] == '.' ? p + 2 : p + 1;
        if (starts && (*e == '\0' || *e == '/' || *e == '\\' || *e == ';'))
            return true;
    }
    return false;
}

static void head_strings(gw_h1_head_t *h)
{
    memset(&h->known, 0, sizeof(h->known));
    h->expect = NULL;
    h->nhost = 0;
    h->host = NULL;
    h->connection = false;
    /* past the last span's terminator: what the buffer keeps while the body
     * streams through it (the head's final CRLF may go) */
    size_t end = h->url_off + h->url_len + 1;
    for (unsigned i = 0; i < h->nhdrs; i++) {
        gw_hdr_t *f = &h->hdrs[i];
        /* llhttp refuses whitespace before the colon (RFC 9112 5.1) but
         * takes an empty name */
        if (f->nlen == 0)
            h->bad_name = true;
        ((char *)f->name)[f->nlen] = '\0';
        if (off_of(h, f->name) + f->nlen + 1 > end)
            end = off_of(h, f->name) + f->nlen + 1;
        if (!f->value || f->vlen == 0) {
            f->value = "";
            f->vlen = 0;
        } else {
            size_t vend = off_of(h, f->value) + f->vlen + 1;
            if (vend > end)
                end = vend;
            while (f->vlen && (f->value[f->vlen - 1] == ' ' || f->value[f->vlen - 1] == '\t'))
                f->vlen--;
            ((char *)f->value)[f->vlen] = '\0';
        }
        known_field(h, f);
    }
    h->head_end = end;
    char *url = h->buf + h->url_off;
    url[h->url_len] = '\0';
    h->authority = NULL;
    url = origin_form(h, url);
    /* where the query or a fragment starts, whether the path has escapes at
     * all: strcspn and memchr scan by words (a byte loop here cost ~200
     * instructions of a sold-out answer's path, callgrind) */
    char *stop = url + strcspn(url, "?#");
    bool escaped = memchr(url, '%', (size_t)(stop - url)) != NULL;
    if (*stop == '?') {
        /* parsed when first asked (gw_req_arg): a proxied route passes it on as sent */
        h->query = stop + 1;
        h->query[strcspn(h->query, "#")] = '\0';
    }
    *stop = '\0';
    size_t len = (size_t)(stop - url);
    if (escaped) {
        h->bad_path = escaped_slash_or_nul(url);
        /* The decode below writes over the path as sent, which a proxied
         * route forwards (nginx's proxy_pass without a URI part does the
         * same): kept aside, only for a path with a '%' (without one the two
         * are the same bytes; a buy's path has none, and pays nothing).
         * Freed once on_head is done (on_headers_complete) unless taken. */
        if (!h->bad_path)
            h->raw_path = cm_xstrndup(url, len);
        len = gw_h1_unescape(url);
    }
    if (memchr(url, '.', len) && has_dot_segment(url))
        h->bad_path = true;
    h->url = url;
}

/* The raw path nobody took (a route that does not proxy, a refused head). */
static void raw_path_drop(gw_h1_head_t *h)
{
    if (h->raw_path) {
        free(h->raw_path);
        h->raw_path = NULL;
    }
}

/* Where the line holding buf[at] ends (its LF: the parser read it). */
static const char *line_end(const gw_h1_head_t *h, const char *at)
{
    const char *lf = memchr(at, '\n', (size_t)(h->buf + GW_H1_READ_BUF - at));
    return lf ? lf : h->buf + GW_H1_READ_BUF - 1; /* not reached: the parser saw it */
}

/*
 * docs/api.md: lines end in CRLF. llhttp 8.1 refuses a bare LF after a header
 * value (empty or not) but takes one ending the request line and the head's
 * final empty line: those two are looked at here, a few bytes past the URL's
 * and the last field's spans, before head_strings writes its NULs there
 * (a scan of every line of the head before each parse cost ~220 instructions
 * a request, `python3 bench/profile.py build sold calls`). Line ends before the request line
 * (RFC 9112 2.2 lets a server skip them; other_method writes LFs there) are
 * not looked at. True: a bare LF.
 */
static bool head_bare_lf(const gw_h1_head_t *h)
{
    const char *lf = line_end(h, h->buf + h->url_off + h->url_len);
    if (lf[-1] != '\r')
        return true; /* the request line's */
    if (h->nhdrs) {
        const gw_hdr_t *f = &h->hdrs[h->nhdrs - 1];
        /* llhttp checked this line's own end; its LF is the last but one */
        lf = line_end(h, f->value && f->vlen ? f->value + f->vlen : f->name + f->nlen);
    }
    return lf[1] != '\r'; /* the final empty line's (llhttp wants its LF after a CR) */
}

/* HPE_PAUSED pauses the parser right here (llhttp_resume goes on). */
static int on_headers_complete(llhttp_t *p)
{
    gw_h1_head_t *h = head_of(p);
    h->head_in = true;
    if (h->too_many || h->folded)
        return HPE_PAUSED;
    h->bare_lf = head_bare_lf(h);
    if (h->bare_lf)
        return HPE_PAUSED;
    head_strings(h);
    if (h->bad_name || h->bad_path) {
        raw_path_drop(h);
        return HPE_PAUSED;
    }
    bool pause = h->on_head && h->on_head(h);
    raw_path_drop(h);
    /* Upgrade offers are ignored (RFC 9110 7.8: answered over HTTP/1.1),
     * CONNECT refused (gw_h1.c answers 400): either way the message is read
     * as a plain one (its body, then the next request), not left to another
     * protocol (llhttp would pause with HPE_PAUSED_UPGRADE at its end). */
    p->upgrade = 0;
    return pause ? HPE_PAUSED : 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    gw_h1_head_t *h = head_of(p);
    if (h->on_body)
        h->on_body(h, at, len);
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    gw_h1_head_t *h = head_of(p);
    h->msg_done = true;
    return HPE_PAUSED;
}

/* llhttp_settings_init's zeroes for what we do not use (chunk headers, extensions,
 * the *_complete callbacks) */
static const llhttp_settings_t settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

void gw_h1_head_init(gw_h1_head_t *h, char *buf, void *owner)
{
    memset(h, 0, sizeof(*h));
    llhttp_init(&h->parser, HTTP_REQUEST, &settings);
    h->parser.data = h;
    h->buf = buf;
    h->owner = owner;
}

void gw_h1_head_restart(gw_h1_head_t *h)
{
    llhttp_reset(&h->parser); /* keeps the settings, the type and data */
}

size_t gw_h1_head_execute(gw_h1_head_t *h, size_t off, size_t n, llhttp_errno_t *err)
{
    const char *at = h->buf + off;
    *err = llhttp_execute(&h->parser, at, n);
    /* a pause or an error stops at llhttp_get_error_pos */
    return *err == HPE_OK ? n : (size_t)(llhttp_get_error_pos(&h->parser) - at);
}

void gw_h1_head_next(gw_h1_head_t *h)
{
    h->head_end = 0;
    h->in_msg = false;
    h->head_in = false;
    h->msg_done = false;
    llhttp_resume(&h->parser);
}

const char *gw_h1_head_find(const gw_h1_head_t *h, const char *name)
{
    size_t n = strlen(name);
    for (unsigned i = 0; i < h->nhdrs; i++)
        if (h->hdrs[i].nlen == n && strncasecmp(h->hdrs[i].name, name, n) == 0)
            return h->hdrs[i].value;
    return NULL;
}

/*---- the connection's side of a head ----*/

static bool expects_continue(const gw_h1_t *c)
{
    const char *e = c->h->expect;
    return e && c->h->parser.http_major == 1 && c->h->parser.http_minor >= 1 &&
           strcasecmp(e, "100-continue") == 0;
}

static bool has_body(const llhttp_t *p)
{
    return (p->flags & F_CHUNKED) || p->content_length > 0;
}

/* While a body streams, the buffer keeps the head and reads the body into
 * what is left: a head that nearly fills it would leave a few bytes per read
 * (a read, a parse per 3 bytes: ~280x the CPU per body byte). A body larger
 * than the room left, behind a head that leaves less than this, is 431. */
#define H1_BODY_ROOM_MIN 1024

static bool body_room_small(const gw_h1_t *c, const llhttp_t *p)
{
    size_t room = GW_H1_READ_BUF - c->h->head_end;
    return room < H1_BODY_ROOM_MIN && ((p->flags & F_CHUNKED) || p->content_length > room);
}

/* A Connection field (any of them) lists the "close" option. llhttp 8.1
 * misses it followed by a tab ("close<HTAB>", OWS: RFC 9110 5.6.1; fixed in
 * llhttp 9), and Debian 12 ships 8.1: the fields are read here as well.
 * Values are NUL-terminated, trailing SP/HT cut (head_strings). */
static bool conn_option_close(const gw_h1_head_t *h)
{
    for (unsigned i = 0; i < h->nhdrs; i++) {
        const gw_hdr_t *f = &h->hdrs[i];
        if (!NAME_IS(f, "Connection"))
            continue;
        for (const char *t = f->value; *t;) {
            t += strspn(t, " \t,");
            size_t n = strcspn(t, ",");
            size_t k = n;
            while (k && (t[k - 1] == ' ' || t[k - 1] == '\t'))
                k--;
            if (k == 5 && strncasecmp(t, "close", 5) == 0)
                return true;
            t += n;
        }
    }
    return false;
}

/* RFC 3986 3.2.2 reg-name / IPv4address characters: unreserved, sub-delims,
 * '%' (pct-encoded, its two hex digits checked). */
static bool host_regname(const char *s, size_t n)
{
    /* ALPHA, DIGIT and "-._~!$&'()*+,;=" as a bitmap of the 128 ASCII codes
     * (bit c % 64 of word c / 64): the check runs on every request */
    static const uint64_t ok[2] = {0x2bff7fd200000000ull, 0x47fffffe87fffffeull};
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '%') {
            if (i + 2 >= n || hexval(s[i + 1]) < 0 || hexval(s[i + 2]) < 0)
                return false;
            i += 2;
        } else if (ch >= 128 || !(ok[ch >> 6] >> (ch & 63) & 1)) {
            return false;
        }
    }
    return true;
}

/* A Host field value (RFC 9112 3.2, RFC 3986 3.2.2-3.2.3): host [":" port],
 * host an IP-literal ("[" IPv6address / IPvFuture "]"), an IPv4address or a
 * reg-name; empty is valid (no authority). False: 400. */
static bool host_valid(const char *v)
{
    const char *port;
    if (*v == '[') {
        const char *close = strchr(v, ']');
        if (!close)
            return false;
        size_t n = (size_t)(close - v - 1);
        char lit[64];
        if (n >= 2 && (v[1] == 'v' || v[1] == 'V')) {
            /* IPvFuture: "v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" ) */
            size_t i = 2;
            while (i <= n && isxdigit((unsigned char)v[i]))
                i++;
            if (i == 2 || i > n || v[i] != '.' || i == n)
                return false;
            for (i++; i <= n; i++)
                if (v[i] != ':' && !host_regname(v + i, 1))
                    return false;
        } else {
            struct in6_addr a6;
            if (n == 0 || n >= sizeof(lit))
                return false;
            memcpy(lit, v + 1, n);
            lit[n] = '\0';
            if (inet_pton(AF_INET6, lit, &a6) != 1)
                return false;
        }
        port = close + 1;
        if (*port && *port != ':')
            return false;
    } else {
        port = v + strcspn(v, ":");
        if (!host_regname(v, (size_t)(port - v)))
            return false;
    }
    if (*port == ':')
        port++;
    return port[strspn(port, "0123456789")] == '\0';
}

/* Returns true to pause the parser inside this message (the connection closes
 * after the answer). */
static bool conn_on_head(gw_h1_head_t *h)
{
    gw_h1_t *c = h->owner;
    llhttp_t *p = &h->parser;
    c->continue_sent = false;
    c->body_phase = false;
    c->body_early = 0;
    gw_req_t *r = gw_http_req_new(c->w, c);
    c->req = r;
    r->url = h->url;
    if (c->method[0]) {
        r->method = c->method;
        r->verb = GW_VERB_OTHER;
    } else {
        r->method = llhttp_method_name((llhttp_method_t)p->method);
        r->verb = p->method == HTTP_GET    ? GW_VERB_GET
                  : p->method == HTTP_POST ? GW_VERB_POST
                  : p->method == HTTP_HEAD ? GW_VERB_HEAD
                                           : GW_VERB_OTHER;
    }
    r->head_only = r->verb == GW_VERB_HEAD;
    r->hdr = h->known;
    if (!llhttp_should_keep_alive(p))
        r->close_after = true;
    /* llhttp keeps a 1.0 request with keep-alive and close alive; RFC 9112
     * 9.3: close wins */
    if ((p->flags & F_CONNECTION_CLOSE) || (!r->close_after && h->connection && conn_option_close(h)))
        r->close_after = true;
    /* RFC 9112 6.1: a Transfer-Encoding in HTTP/1.0 is faulty framing (a 1.0
     * hop in front may frame the bytes otherwise): read it, answer, close */
    if (p->http_major == 1 && p->http_minor == 0 && (p->flags & F_TRANSFER_ENCODING))
        r->close_after = true;
    if (p->http_major == 0) {
        gw_resp_error(&r->resp, GW_R_BAD_REQUEST, NULL,
                      "the request line has no HTTP version (HTTP/0.9 is not served)");
        r->close_after = true;
        r->state = GW_ST_DONE;
    } else if (memcmp(h->buf + h->url_off + h->url_len + 1, "HTTP/", 5) != 0) {
        /* llhttp also parses RTSP/x.y and ICE/x.y request lines, as versions */
        gw_resp_error(&r->resp, GW_R_BAD_REQUEST, NULL,
                      "the request line's protocol is not HTTP");
        r->close_after = true;
        r->state = GW_ST_DONE;
    } else if (p->http_major != 1) {
        gw_resp_error(&r->resp, GW_R_HTTP_VERSION, NULL, "HTTP version %u.%u is not supported",
                      p->http_major, p->http_minor);
        r->close_after = true;
        r->state = GW_ST_DONE;
    } else if (h->nhost > 1) {
        /* which one names the target depends on who reads it (a proxy in
         * front, our X-Forwarded-Host to an upstream): RFC 9112 3.2, 400 */
        gw_resp_error(&r->resp, GW_R_BAD_REQUEST, NULL, "more than one Host header");
        r->close_after = true;
        r->state = GW_ST_DONE;
    } else if (h->nhost == 1 && !host_valid(h->host)) {
        gw_resp_error(&r->resp, GW_R_BAD_REQUEST, NULL,
                      "the Host header is not a valid host[:port] (RFC 3986 3.2.2)");
        r->close_after = true;
        r->state = GW_ST_DONE;
    } else if (p->method == HTTP_CONNECT) {
        /* an Upgrade offer (h2c from curl --http2) is ignored, as RFC 9110
         * 7.8 lets a server: answered over HTTP/1.1 (on_headers_complete) */
        gw_resp_error(&r->resp, GW_R_BAD_REQUEST, NULL, "CONNECT (tunnels) is not served");
        r->close_after = true; /* what follows may be the tunnel's bytes, not requests */
        r->state = GW_ST_DONE;
    } else if (body_room_small(c, p)) {
        gw_resp_error(&r->resp, GW_R_HEAD_TOO_LARGE, NULL,
                      "the request line and headers leave less than %u bytes of the %u-byte "
                      "buffer for the body: send shorter headers",
                      (unsigned)H1_BODY_ROOM_MIN, (unsigned)GW_H1_READ_BUF);
        r->close_after = true;
        r->state = GW_ST_DONE;
    } else {
        gw_http_head(r);
    }
    if (r->state == GW_ST_DONE && has_body(p) &&
        (r->close_after || (p->flags & F_CHUNKED) ||
         p->content_length > c->w->srv->pool.body_limit || expects_continue(c))) {
        /* Answered from the head and refused to read the body (413, the
         * framing refusals, queue_time, a refused proxied route), one too
         * large to skip, or one the client waits to be asked for (Expect:
         * 100-continue: it may never come, or come after our answer and be
         * read as the next request): the parser stops inside this message
         * and the connection closes after the answer (its next bytes are the
         * unread body). */
        r->close_after = true;
        return true;
    }
    if (r->state == GW_ST_DONE)
        return false; /* the router's 404/405/400: a small body is read and dropped
                 * (answered once the parser reached its end: conn_parse), the
                 * connection goes on */
    if (expects_continue(c) && has_body(p)) {
        OUT_LIT(c, "HTTP/1.1 100 Continue\r\n\r\n");
        c->continue_sent = true;
    }
    return false;
}

static void conn_on_body(gw_h1_head_t *h, const char *at, size_t len)
{
    gw_h1_t *c = h->owner;
    if (!c->req)
        return;
    if (c->body_phase)
        gw_conn_body(c->guard, len);
    else
        c->body_early += len;
    gw_http_body(c->req, at, len);
}

/*
 * A parse pass ended inside a request's body: from now the guard holds the
 * body to its rate (the bytes read with the head count toward it). Not at the
 * head: a request whose body came with it (nearly every buy) is answered in
 * the same pass and never enters the phase (two guard list moves saved).
 */
static void guard_body(gw_h1_t *c)
{
    c->body_phase = true;
    gw_conn_head_done(c->guard);
    if (c->body_early) {
        gw_conn_body(c->guard, c->body_early);
        c->body_early = 0;
    }
}

/*---- the request's answer ----*/

/* Renders r's answer into the output, accounts it, frees r. */
static void answer(gw_h1_t *c, gw_req_t *r)
{
    gw_reply_t reply;
    int status;
    if (r->px && gw_px_render(r, &reply, &status)) {
        /* rendered by the proxy (an upstream's answer or a fallback) */
    } else if (r->cached) {
        reply = r->cached_reply;
        status = gw_reply_status(reply);
        out_prep(c, r, r->cached);
    } else {
        reply = r->resp.reply;
        status = r->resp.status;
        out_resp(c, r, &r->resp);
    }
    gw_http_account(r, reply, status);
    /* the next head's deadline starts now (flush moves to "writing" if the
     * answer does not go out at once, a pipelined head to "body") */
    gw_conn_idle(c->guard);
    c->req = NULL;
    r->conn = NULL;
    gw_http_req_free(r);
}

/* The head, body and end of the current request are read and the parser is
 * paused after it: the unparsed rest moves to the buffer's start. */
static void next_request(gw_h1_t *c)
{
    c->method[0] = '\0';
    size_t rest = c->rlen - c->parsed;
    if (rest && c->parsed)
        memmove(c->rbuf, c->rbuf + c->parsed, rest);
    c->rlen = rest;
    c->parsed = 0;
    gw_h1_head_next(c->h);
}

/* Reading is a flag: the socket stays in the epoll set, edge-triggered, and
 * bytes an edge announced while reading was stopped are read when it starts
 * again (post). */
static void start_reading(gw_h1_t *c)
{
    if (!c->reading && !c->closing) {
        c->reading = true;
        c->read_iter = c->w->iter_no;
        if (c->rready)
            post(c);
    }
}

static void stop_reading(gw_h1_t *c)
{
    c->reading = false;
}

/*
 * A request method llhttp does not know (it knows a fixed list): when the
 * request line starts with a token of 3..GW_H1_METHOD_MAX characters and a
 * space, the token is kept and its bytes become line ends and "GET" (the
 * parser skips line ends before a request), so the head parses and the route
 * answers 405 with its Allow on a connection that goes on. Returns 1 (parse
 * again), 0 (the token's end is not in yet) or -1 (not a method: 400).
 */
static int other_method(gw_h1_t *c)
{
    static const char tchar[] = "!#$%&'*+-.^_`|~";
    /* the message starts at the buffer's start (next_request): skip line ends */
    char *start = c->rbuf, *end = c->rbuf + c->rlen;
    /* whatever comes of it, the parser starts this message again */
    gw_h1_head_restart(c->h);
    c->parsed = 0;
    while (start < end && (*start == '\r' || *start == '\n'))
        start++;
    char *p = start;
    while (p < end && p - start <= GW_H1_METHOD_MAX &&
           ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
            (*p && strchr(tchar, *p))))
        p++;
    if (p == end)
        return p - start <= GW_H1_METHOD_MAX ? 0 : -1;
    size_t n = (size_t)(p - start);
    if (*p != ' ' || n < 3 || n > GW_H1_METHOD_MAX)
        return -1;
    memcpy(c->method, start, n);
    c->method[n] = '\0';
    memset(start, '\n', n - 3);
    p[-3] = 'G'; /* "GET", a method llhttp knows, right before the space */
    p[-2] = 'E';
    p[-1] = 'T';
    return 1;
}

/* A chunked message's end: the trailer section's empty line (llhttp takes a
 * bare LF there). parsed is past its LF; from is where this execute began. */
static bool trailer_bare_lf(const gw_h1_t *c, size_t from)
{
    if (!(c->h->parser.flags & F_CHUNKED) || c->parsed < from + 1)
        return false;
    char before = c->parsed >= from + 2 ? c->rbuf[c->parsed - 2] : c->last_byte;
    return before != '\r';
}

/* A request the parser refused: the JSON error that says why, then the close. */
static void parse_error(gw_h1_t *c, llhttp_errno_t e)
{
    const char *why = llhttp_get_error_reason(&c->h->parser);
    switch (e) {
    case HPE_INVALID_TRANSFER_ENCODING:
        out_error(c, GW_R_NOT_IMPLEMENTED,
                  "Transfer-Encoding other than chunked is not supported: send chunked or a "
                  "Content-Length");
        return;
    case HPE_UNEXPECTED_CONTENT_LENGTH:
        out_error(c, GW_R_BAD_REQUEST,
                  "two Content-Length headers, or Content-Length with Transfer-Encoding: "
                  "send one length");
        return;
    case HPE_INVALID_CONTENT_LENGTH: {
        /* all digits but past 2^64: too large, as a number that fits would be */
        /* llhttp stops at the digit that overflowed or one past it (a 20-digit
         * value): measure the whole run of digits around the error position */
        const char *p = c->rbuf + c->parsed, *q = p, *d = p, *end = c->rbuf + c->rlen;
        while (q > c->rbuf && q[-1] >= '0' && q[-1] <= '9')
            q--;
        while (d < end && *d >= '0' && *d <= '9')
            d++;
        if (d - q >= 20 && (d == end || *d == '\r' || *d == '\n' || *d == ' ' || *d == '\t')) {
            out_error(c, GW_R_TOO_LARGE, "Content-Length is larger than the body limit");
            return;
        }
        out_error(c, GW_R_BAD_REQUEST, "Content-Length is not a decimal number");
        return;
    }
    case HPE_INVALID_VERSION:
        /* a well-formed HTTP/x.y llhttp does not serve (1.2 and up; 0.9 and
         * 2.0 it parses, and conn_on_head refuses them), not a garbled line */
        if (why && strcmp(why, "Invalid HTTP version") == 0) {
            out_error(c, GW_R_HTTP_VERSION, "only HTTP/1.0 and HTTP/1.1 are served");
            return;
        }
        break;
    case HPE_PAUSED_H2_UPGRADE: /* the HTTP/2 preface, "PRI * HTTP/2.0" */
        out_error(c, GW_R_HTTP_VERSION, "HTTP/2 is not served");
        return;
    default:
        break;
    }
    out_error(c, GW_R_BAD_REQUEST, why ? why : llhttp_errno_name(e));
}

/*
 * Parses what the buffer holds and serves the requests it completes, in order,
 * one at a time; stops at a request that waits, at an unsent answer, at a
 * close. Then flushes. Loop thread.
 */
static void conn_parse(gw_h1_t *c)
{
    if (c->in_parse)
        return;
    c->in_parse = true;
    while (!c->closing && !c->lingering && !c->writing) {
        gw_req_t *r = c->req;
        if (r && r->state == GW_ST_WAIT)
            break; /* gw_req_finish comes back here */
        /* Answered only at the message's end (or when the connection closes
         * after it): a body still coming for a request answered from its head
         * must first be read and dropped by this request, else its rest
         * would end a message with no request and the parser would stay
         * paused. */
        if (r && r->state == GW_ST_DONE && (c->h->msg_done || r->close_after || c->close_after)) {
            answer(c, r);
            if (c->close_after)
                break;
            next_request(c);
            if (c->olen >= GW_H1_READ_BUF) {
                flush(c); /* a deep pipeline: write as we go */
                continue;
            }
            continue;
        }
        if (c->parsed == c->rlen || !c->rbuf)
            break; /* need bytes (no buffer: none held, rlen is 0) */
        size_t avail = c->rlen - c->parsed, from = c->parsed;
        llhttp_errno_t e;
        size_t n = gw_h1_head_execute(c->h, c->parsed, avail, &e);
        c->parsed += n;
        if (e == HPE_PAUSED && c->h->msg_done && trailer_bare_lf(c, from)) {
            req_drop(c);
            out_error(c, GW_R_BAD_REQUEST, "the trailer section ends in a bare LF, not CRLF");
            break;
        }
        if (n)
            c->last_byte = c->rbuf[c->parsed - 1];
        if (e == HPE_PAUSED) {
            if (c->h->too_many) {
                out_error(c, GW_R_HEAD_TOO_LARGE, "the request has more than 64 header fields");
                break;
            }
            if (c->h->folded) {
                out_error(c, GW_R_BAD_REQUEST,
                          "a header value folded onto the next line (obs-fold) is not accepted");
                break;
            }
            if (c->h->bad_name) {
                out_error(c, GW_R_BAD_REQUEST, "a header field name is empty or ends in whitespace");
                break;
            }
            if (c->h->bare_lf) {
                out_error(c, GW_R_BAD_REQUEST, "a line of the request head ends in a bare LF, not CRLF");
                break;
            }
            if (c->h->bad_path) {
                out_error(c, GW_R_BAD_REQUEST,
                          "the path has a \".\" or \"..\" segment (or \"..;\"), an encoded "
                          "slash, backslash or NUL: send the path it means");
                break;
            }
            r = c->req;
            /* A trailer section can say Connection: close (llhttp reads it
             * like a head field): llhttp will refuse the next message, so the
             * connection ends after this answer, and its parser never goes
             * back to the free list as a clean one. */
            if (c->h->msg_done && r && !llhttp_should_keep_alive(&c->h->parser))
                r->close_after = true;
            if (c->h->msg_done && r && r->state == GW_ST_BODY) {
                gw_http_complete(r); /* answers now (GW_ST_DONE) or waits (GW_ST_WAIT) */
                /* the guard's busy phase only for a wait: an answer given
                 * now moves it to idle (answer) in this pass */
                if (r->state == GW_ST_WAIT)
                    gw_conn_busy(c->guard);
            }
            if (!r) {
                /* paused with no request to answer and resume it: nothing
                 * would ever move the parser again (a spinning worker) */
                out_error(c, GW_R_INTERNAL, "the connection lost its request");
                break;
            }
            continue;
        }
        if ((e == HPE_INVALID_METHOD || (e == HPE_INVALID_CONSTANT && !c->method[0])) &&
            !c->h->head_in) {
            /* HPE_INVALID_CONSTANT: a method llhttp knows for another
             * protocol (RTSP's DESCRIBE), found at the version; once only:
             * the same error again is the request line's own */
            int m = other_method(c);
            if (m > 0)
                continue; /* parsed again as a method llhttp knows */
            if (m == 0) {
                if (c->eof)
                    c->parsed = c->rlen; /* it never will: the EOF path below closes */
                break; /* the method's end has not come yet */
            }
        }
        if (e != HPE_OK) {
            req_drop(c);
            parse_error(c, e);
            break;
        }
        if (c->h->head_in && c->req) {
            /* in a body: its bytes went to the request, the buffer keeps the head */
            c->rlen = c->parsed = c->h->head_end;
            if (!c->body_phase)
                guard_body(c);
        }
    }
    if (!c->closing && !c->lingering) {
        /* Reading goes on while a request waits (its bytes wait in the buffer,
         * unparsed; no epoll_ctl per held request, and a client that leaves
         * is seen), and stops while an answer is unsent, before a close, and
         * when the buffer is full. */
        bool need = !c->writing && !c->close_after && !c->eof;
        if (c->eof && !c->writing && !(c->req && c->req->state == GW_ST_WAIT) &&
            c->parsed == c->rlen) {
            /* the client's last complete request is answered (an incomplete
             * one never will be): close once the output is out */
            req_drop(c);
            conn_leaving(c);
        }
        if (need && c->rlen == GW_H1_READ_BUF && c->rbuf) {
            if (!c->h->head_in && !memchr(c->rbuf, '\n', c->rlen))
                out_error(c, GW_R_URI_TOO_LONG, "the request line exceeds 8 KiB");
            else if (!c->h->head_in)
                out_error(c, GW_R_HEAD_TOO_LARGE, "the request line and headers exceed 8 KiB");
            need = false;
        }
        if (need)
            start_reading(c);
        else
            stop_reading(c);
    }
    c->in_parse = false;
    flush(c);
}

void gw_h1_finish(gw_req_t *r)
{
    gw_h1_t *c = r->conn;
    if (!c || c->in_parse)
        return; /* conn_parse sees GW_ST_DONE when the handler returns */
    conn_parse(c);
}

/*---- reading ----*/

static void on_alloc(gw_h1_t *c, uv_buf_t *buf)
{
    if (c->lingering) {
        /* bytes to drop: into a spare buffer, parser untouched, given back
         * by on_read (or the buffer kept for a dropped request, keep_buf) */
        if (!c->buf) {
            c->buf = spare_take(c->w);
            c->rbuf = c->buf->rbuf;
            c->spare = true;
        }
        c->rlen = 0;
        *buf = uv_buf_init(c->rbuf, GW_H1_READ_BUF);
        return;
    }
    if (!c->buf)
        buf_take(c); /* given back after the read if it holds nothing then */
    *buf = uv_buf_init(c->rbuf + c->rlen, (unsigned)(GW_H1_READ_BUF - c->rlen));
}

/*
 * A time the bytes just read arrived after, from the loop alone (0: not
 * known). A connection is in the worker's epoll set from its accept,
 * edge-triggered, and while it reads, every edge is read in the iteration
 * that reports it: on a connection reading since two iterations ago, bytes
 * read in this iteration were not there when the previous poll harvested its
 * edges (they would have been reported and read then), and that poll began
 * after the end of the iteration before it (w->stamp_prev_ns, a time stamped
 * in or before it). So the wait of a request read now is at most now - that
 * time, and the too-late check (gw_ol_too_late) needs the kernel's figure
 * (getsockopt TCP_INFO, ~0.55 us here) only when that bound is past its
 * threshold: a connection the shut door keeps costs it no system call per
 * answer. A new connection, or one that stopped reading meanwhile, is "not
 * known": its bytes may have waited in the kernel for any time. A read that
 * fills the buffer leaves bytes behind, read later: those of a pipelining
 * client, for which the kernel's figure (its last segment's time) is no truer.
 */
static uint64_t read_after(const gw_h1_t *c)
{
    const gw_worker_t *w = c->w;
    return c->read_iter + 2 <= w->iter_no ? w->stamp_prev_ns : 0;
}

uint64_t gw_h1_read_after_ns(const gw_h1_t *c)
{
    return c->read_after_ns;
}

static void on_read(gw_h1_t *c, ssize_t n)
{
    gw_worker_t *w = c->w;
    if (c->spare) {
        spare_give(w, c->buf);
        c->buf = NULL;
        c->rbuf = NULL;
        c->spare = false;
    }
    if (n == 0)
        return;
    if (n == UV_EOF && !c->lingering && (c->req || c->parsed < c->rlen)) {
        /* A half-close after requests (printf ... | nc): they still get their
         * answers, in order, and the connection closes after the last. */
        c->eof = true;
        stop_reading(c);
        gw_http_iteration(w);
        conn_parse(c);
        return;
    }
    if (n < 0 || c->lingering) {
        if (n < 0)
            conn_close(c);
        else
            conn_settle(c);
        return;
    }
    gw_http_iteration(w);
    c->busy = true;
    c->rlen += (size_t)n;
    c->read_after_ns = read_after(c);
    conn_parse(c);
}

/* Bytes (or the end, or an error) to read: one recv(2) into what on_alloc
 * gives. A read that leaves the buffer's room unfilled found the socket
 * drained (as nginx assumes, unless the client's FIN came: then on to the
 * end); a full one leaves bytes behind, read in the next iteration. */
static void read_once(gw_h1_t *c)
{
    uv_buf_t b;
    on_alloc(c, &b);
    ssize_t n;
    do
        n = recv(c->fd, b.base, b.len, 0);
    while (n < 0 && errno == EINTR);
    if (n < 0 && errno == EAGAIN) {
        c->rready = false;
        n = 0;
    } else if (n < 0) {
        n = -errno;
    } else if (n == 0) {
        n = UV_EOF;
    } else if ((size_t)n < b.len && !c->rdhup) {
        c->rready = false;
    }
    on_read(c, n);
    if (c->rready && c->reading)
        post(c);
}

static void conn_event(gw_h1_t *c, uint32_t ev)
{
    if (c->closing)
        return;
    if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP))
        c->rready = true;
    if (ev & (EPOLLRDHUP | EPOLLHUP))
        c->rdhup = true;
    if ((ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)) && c->writing)
        write_more(c);
    if (c->rready && c->reading && !c->closing)
        read_once(c);
}

/*---- accepting ----*/

/* Out of file descriptors: how long the listening socket is left alone. The
 * connections in its queue wait (the kernel keeps them); one that closes
 * frees a descriptor for them. */
#define FD_STARVED_RETRY_MS 100

/* The listening socket in the worker's epoll set or out of it (level-triggered:
 * a queue left unaccepted is reported again). */
static void lpoll(gw_worker_t *w, bool on)
{
    if (w->edge.lfd < 0 || w->edge.lpolled == on)
        return;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &w->edge.lfd};
    if (epoll_ctl(w->edge.efd, on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, w->edge.lfd, &ev) == 0)
        w->edge.lpolled = on;
    else
        cm_log_warn("gw", "epoll_ctl on the listening socket failed", "worker=%u error=%s",
                    w->index, strerror(errno));
}

static void on_accept_retry(uv_timer_t *t)
{
    gw_worker_t *w = t->data;
    w->edge.fd_starved = false;
    if (w->edge.accepting)
        lpoll(w, true);
}

/* accept4 failed for want of a resource: a descriptor (EMFILE, ENFILE) or
 * kernel memory (ENOBUFS, ENOMEM), or with an error that no retry mends
 * (EBADF, EINVAL, ...). The connection stays in the queue, so the socket
 * stays readable, and a level-triggered poll would report it again at once,
 * forever (a worker at 100% CPU, and a warning per call where one is
 * printed). Stop polling it for a while instead, and say so once a second.
 * nginx does the same for EMFILE/ENFILE (ngx_event_accept.c,
 * ngx_disable_accept_events); the other errors spin it just the same. */
static void accept_pause(gw_worker_t *w, int err)
{
    w->edge.fd_starved_n++;
    if (w->now_ns - w->edge.fd_starved_logged_ns >= 1000000000u || w->edge.fd_starved_logged_ns == 0) {
        cm_log_warn("gw",
                    err == EMFILE || err == ENFILE    ? "accept: out of file descriptors"
                    : err == ENOBUFS || err == ENOMEM ? "accept: out of kernel memory"
                                                      : "accept failed",
                    "worker=%u error=%s failed_accepts=%llu", w->index, strerror(err),
                    (unsigned long long)w->edge.fd_starved_n);
        w->edge.fd_starved_n = 0;
        w->edge.fd_starved_logged_ns = w->now_ns ? w->now_ns : 1;
    }
    if (w->edge.fd_starved)
        return;
    w->edge.fd_starved = true;
    lpoll(w, false);
    uv_timer_start(&w->edge.accept_timer, on_accept_retry, FD_STARVED_RETRY_MS, 0);
}

/* What an accept4 error leaves: the connection already gone from the queue
 * (the next one may be fine: go on), nothing queued (wait for readiness), or
 * a connection that the same call would fail on again (pause). Linux hands
 * the new socket's pending network errors to accept (accept(2), "Error
 * handling"); a firewall's refusal is EPERM. */
typedef enum { ACCEPT_NEXT, ACCEPT_WAIT, ACCEPT_PAUSE } accept_err_t;

static accept_err_t accept_error(int err)
{
    switch (err) {
    case EAGAIN:
#if EWOULDBLOCK != EAGAIN
    case EWOULDBLOCK:
#endif
        return ACCEPT_WAIT;
    case EINTR:
    case ECONNABORTED:
    case EPROTO:
    case EPERM:
    case ENETDOWN:
    case ENOPROTOOPT:
    case EHOSTDOWN:
    case ENONET:
    case EHOSTUNREACH:
    case EOPNOTSUPP:
    case ENETUNREACH:
        return ACCEPT_NEXT;
    default: /* EMFILE, ENFILE, ENOBUFS, ENOMEM, and what is a bug here */
        return ACCEPT_PAUSE;
    }
}

static void on_accept(gw_worker_t *w)
{
    gw_http_iteration(w);
    for (int i = 0; i < ACCEPT_BATCH && w->edge.accepting; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        int fd = accept4(w->edge.lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int err = errno;
            accept_err_t what = accept_error(err);
            if (what == ACCEPT_NEXT)
                continue;
            if (what == ACCEPT_PAUSE)
                accept_pause(w, err);
            return;
        }
        gw_conn_t *g = gw_conn_open(w, (const struct sockaddr *)&ss);
        if (!g) {
            close(fd); /* refused by the guard's caps: no buffers */
            continue;
        }
        gw_h1_t *c = cm_xmalloc(sizeof(*c));
        memset(c, 0, sizeof(*c)); /* no buffer yet: the first read takes one */
        c->guard = g;
        gw_conn_set_owner(g, c);
        c->w = w;
        c->next = w->edge.h1_conns;
        if (c->next)
            c->next->prev = c;
        w->edge.h1_conns = c;
        memcpy(&c->peer, &ss, sl < sizeof(c->peer) ? sl : sizeof(c->peer));
        c->fd = fd;
        w->edge.h1_open++;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int){1}, sizeof(int));
        /* Registered once for all it will ever wait for, edge-triggered (as
         * nginx): no epoll_ctl when reading stops or an answer waits for room.
         * Bytes already in are reported by the next epoll_wait. */
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
                                 .data.ptr = c};
        if (epoll_ctl(w->edge.efd, EPOLL_CTL_ADD, fd, &ev) != 0) {
            conn_close(c); /* freed with the iteration's closed ones */
            continue;
        }
        start_reading(c);
    }
}

int gw_h1_listen(gw_worker_t *w, const struct sockaddr *sa, char *errbuf, size_t errlen)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    socklen_t sl = sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                             : sizeof(struct sockaddr_in);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
        bind(fd, sa, sl) != 0 || listen(fd, GW_LISTEN_BACKLOG) != 0) {
        snprintf(errbuf, errlen, "cannot listen on %s: %s", w->srv->cfg->listen,
                 strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    /* The worker's epoll set: its public sockets, its listening socket, and
     * libuv's own epoll fd (readable when libuv has I/O to run). */
    w->edge.efd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &w->loop};
    if (w->edge.efd < 0 || epoll_ctl(w->edge.efd, EPOLL_CTL_ADD, uv_backend_fd(&w->loop), &ev) != 0) {
        snprintf(errbuf, errlen, "worker epoll: %s", strerror(errno));
        if (w->edge.efd >= 0)
            close(w->edge.efd);
        w->edge.efd = -1;
        close(fd);
        return -1;
    }
    w->edge.lfd = fd;
    w->edge.lpolled = false;
    uv_timer_init(&w->loop, &w->edge.accept_timer);
    w->edge.accept_timer.data = w;
    uv_timer_init(&w->loop, &w->edge.h1_sweep);
    w->edge.h1_sweep.data = w;
    uv_timer_start(&w->edge.h1_sweep, on_buf_sweep, BUF_SWEEP_MS, BUF_SWEEP_MS);
    w->edge.fd_starved = false;
    w->edge.accepting = true;
    lpoll(w, true);
    return 0;
}

void gw_h1_accepting(gw_worker_t *w, bool on)
{
    if (w->edge.lfd < 0 || w->edge.accepting == on)
        return;
    w->edge.accepting = on;
    if (on && !w->edge.fd_starved) /* else on_accept_retry polls again */
        lpoll(w, true);
    else if (!on)
        lpoll(w, false);
}

/* Connections waiting in the kernel for fd's accept(); 0 if unknown. */
static uint32_t accept_queue(int fd)
{
    struct tcp_info ti;
    socklen_t len = sizeof(ti);
    memset(&ti, 0, sizeof(ti));
    /* On a listening socket Linux reports the accept queue's length in tcpi_unacked. */
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0)
        return 0;
    return ti.tcpi_unacked;
}

bool gw_h1_listening(const gw_worker_t *w)
{
    return w->edge.lfd >= 0;
}

uint32_t gw_h1_listen_queue(const gw_worker_t *w)
{
    return w->edge.lfd >= 0 ? accept_queue(w->edge.lfd) : 0;
}

int gw_h1_door(gw_worker_t *w, bool shut, uint32_t *reset)
{
    if (w->edge.lfd < 0)
        return CM_ENOTFOUND;
    if (shut) {
        uint32_t queued = accept_queue(w->edge.lfd);
        /* shutdown() of a listening socket: the kernel resets its queue */
        if (shutdown(w->edge.lfd, SHUT_RD) != 0)
            return CM_EIO;
        gw_h1_accepting(w, false);
        if (reset)
            *reset = queued;
    } else {
        if (listen(w->edge.lfd, GW_LISTEN_BACKLOG) != 0)
            return CM_EIO; /* errno says why */
        gw_h1_accepting(w, true);
    }
    return 0;
}

uint64_t gw_h1_leaving(const gw_worker_t *w)
{
    return w->edge.h1_leaving + w->edge.h1_door_trims;
}

uint64_t gw_h1_open_count(const gw_worker_t *w)
{
    return w->edge.h1_open;
}

void gw_h1_trim(gw_req_t *r)
{
    r->close_after = r->trimmed = true;
    r->w->edge.h1_door_trims++;
}

void gw_h1_trim_done(gw_req_t *r)
{
    if (r->trimmed) {
        r->trimmed = false;
        r->w->edge.h1_door_trims--;
    }
}

void gw_h1_stop_accepting(gw_worker_t *w)
{
    if (w->edge.lfd >= 0) {
        lpoll(w, false);
        uv_close((uv_handle_t *)&w->edge.accept_timer, NULL);
        uv_close((uv_handle_t *)&w->edge.h1_sweep, NULL);
        close(w->edge.lfd);
        w->edge.lfd = -1;
        w->edge.accepting = false;
    }
}

void gw_h1_stop(gw_worker_t *w)
{
    gw_h1_stop_accepting(w);
    while (w->edge.h1_conns)
        conn_close(w->edge.h1_conns);
}

/*---- the worker's loop ----*/

/*
 * Whether libuv has work to run now without an fd saying so: a watcher it
 * changed outside uv_run (uv_poll_start, a timer's or Redis's, applied with
 * epoll_ctl only at its next poll), a pending or closing handle, an idle
 * one, a timer due. uv.h has no call for the first: the queue is in
 * UV_LOOP_PRIVATE_FIELDS (libuv 1.44, Debian 12, an array of two pointers;
 * 1.45 made it a struct uv__queue), empty when its next points at itself.
 */
static bool uv_due(uv_loop_t *l)
{
#if UV_VERSION_HEX >= 0x012d00 /* 1.45: struct uv__queue {next, prev} */
    bool changed = (void *)l->watcher_queue.next != (void *)&l->watcher_queue;
#else /* void *watcher_queue[2]: {next, prev} */
    bool changed = l->watcher_queue[0] != (void *)&l->watcher_queue;
#endif
    return changed || uv_backend_timeout(l) == 0;
}

#define EVENTS_MAX 512

/*
 * The worker's loop: libuv runs inside it rather than around it. Public
 * connections are in the worker's own epoll set, edge-triggered (EPOLLET:
 * each socket registered once, no re-poll of a socket that was reported and
 * drained; recv/send as nginx), beside the listening socket and libuv's epoll
 * fd, which is readable when libuv's own I/O (Redis, upstreams, the thread
 * pool's and other threads' wakeups) is ready. One epoll_wait an iteration;
 * uv_run(UV_RUN_NOWAIT) only in iterations where libuv has something to do
 * (its fd, a timer due, a change to apply), which the buy path's answers do
 * not make. This saves ~0.2 us (4-6%) per sold-out answer against libuv's
 * streams: `FLOOR_EPOLL=1 python3 bench/profile.py build floor` against
 * FLOOR_EPOLL=0 (bench/uv_floor.c, the floor with each loop).
 */
void gw_h1_run(gw_worker_t *w)
{
    uv_loop_t *l = &w->loop;
    struct epoll_event ev[EVENTS_MAX];
    bool run_uv = true;
    /* The liveness stamp (gw_liveness.c): once a turn, from the time the
     * loop already read after its poll, so a turn costs no clock read more.
     * An idle loop still turns: the connection guard's sweep timer
     * (gw_conn.c) fires every 50..500 ms, so epoll_wait never blocks longer. */
    uv_update_time(l);
    for (;;) {
        atomic_store_explicit(&w->beat_ms, uv_now(l), memory_order_relaxed);
        if (run_uv || uv_due(l)) {
            int alive = uv_run(l, UV_RUN_NOWAIT);
            if (!alive && !w->edge.h1_conns && w->edge.lfd < 0 && !w->edge.h1_dead)
                break;
        }
        /* the iteration's end: the spool and fsync batches, the door, the relay */
        gw_http_check(w);
        gw_h1_t *dead = w->edge.h1_dead;
        w->edge.h1_dead = NULL;
        while (dead) {
            gw_h1_t *c = dead;
            dead = c->dead_next;
            if (c->posted) { /* freed once the posted list lets go of it (below) */
                c->dead_next = w->edge.h1_dead;
                w->edge.h1_dead = c;
            } else {
                conn_free(c);
            }
        }
        int timeout = 0;
        if (!w->edge.h1_posted && !w->edge.h1_dead) {
            uv_update_time(l);
            timeout = uv_due(l) ? 0 : uv_backend_timeout(l);
        }
        /* the time asleep, for the overload signals' busy share (as libuv's
         * UV_METRICS_IDLE_TIME measured its own poll: a wait of 0 is work) */
        uint64_t t0 = timeout ? uv_hrtime() : 0;
        int n = epoll_wait(w->edge.efd, ev, EVENTS_MAX, timeout);
        if (timeout)
            w->edge.idle_ns += uv_hrtime() - t0;
        if (n < 0 && errno != EINTR) {
            cm_log_error("gw", "epoll_wait failed", "worker=%u error=%s", w->index,
                         strerror(errno));
            n = 0;
        }
        uv_update_time(l);
        run_uv = n <= 0;
        for (int i = 0; i < n; i++) {
            void *p = ev[i].data.ptr;
            if (p == l)
                run_uv = true;
            else if (p == &w->edge.lfd)
                on_accept(w);
            else
                conn_event(p, ev[i].events);
        }
        /* bytes no edge will announce again: once each, in arrival order of
         * their posting (a connection posted again waits for the next round) */
        gw_h1_t *posted = w->edge.h1_posted;
        w->edge.h1_posted = NULL;
        while (posted) {
            gw_h1_t *c = posted;
            posted = c->post_next;
            c->posted = false;
            if (!c->closing && c->reading && c->rready)
                read_once(c);
        }
    }
    while (w->edge.h1_dead) {
        gw_h1_t *c = w->edge.h1_dead;
        w->edge.h1_dead = c->dead_next;
        conn_free(c);
    }
    atomic_store_explicit(&w->beat_ms, 0, memory_order_relaxed);
}

/*---- what the handlers read of a request ----*/

const char *gw_req_header(const gw_req_t *r, const char *name)
{
    return r->conn ? gw_h1_head_find(r->conn->h, name) : NULL;
}

const char *gw_req_header_once(const gw_req_t *r, const char *name, bool *dup)
{
    *dup = false;
    if (!r->conn)
        return NULL;
    const gw_h1_head_t *h = r->conn->h;
    size_t n = strlen(name);
    const char *first = NULL;
    for (unsigned i = 0; i < h->nhdrs; i++)
        if (h->hdrs[i].nlen == n && strncasecmp(h->hdrs[i].name, name, n) == 0) {
            if (first) {
                *dup = true;
                break;
            }
            first = h->hdrs[i].value;
        }
    return first;
}

bool gw_req_http10(const gw_req_t *r)
{
    return r->conn && r->conn->h->parser.http_major == 1 && r->conn->h->parser.http_minor == 0;
}

const gw_hdr_t *gw_req_headers(const gw_req_t *r, unsigned *n)
{
    const gw_h1_t *c = r->conn;
    *n = c ? c->h->nhdrs : 0;
    return c ? c->h->hdrs : NULL;
}

const char *gw_req_xff(const gw_req_t *r)
{
    if (r->hdr.xff_count <= 1)
        return r->hdr.xff;
    gw_worker_t *w = r->w;
    if (!w->edge.xff_join)
        w->edge.xff_join = cm_xmalloc(GW_H1_READ_BUF);
    char *buf = w->edge.xff_join;
    size_t cap = GW_H1_READ_BUF; /* the fields and their ", " fit: they were one head */
    unsigned n;
    const gw_hdr_t *hs = gw_req_headers(r, &n);
    size_t len = 0;
    buf[0] = '\0';
    for (unsigned i = 0; i < n; i++) {
        if (!name_is(&hs[i], "X-Forwarded-For", 15))
            continue;
        size_t vl = strlen(hs[i].value);
        if (len + 2 + vl + 1 > cap)
            return r->hdr.xff; /* cannot be: cap holds a whole head */
        if (len) {
            memcpy(buf + len, ", ", 2);
            len += 2;
        }
        memcpy(buf + len, hs[i].value, vl + 1);
        len += vl;
    }
    return buf;
}

/* The query's arguments, parsed (in place, decoded) on the first ask. */
static void args_parse(gw_h1_head_t *h)
{
    if (h->args_parsed)
        return;
    h->args_parsed = true;
    h->nargs = gw_h1_parse_query(h->query, h->args, GW_H1_MAX_ARGS);
    h->query = NULL; /* no longer as sent */
}

const char *gw_req_query(const gw_req_t *r)
{
    const gw_h1_t *c = r->conn;
    return c && !c->h->args_parsed ? c->h->query : NULL;
}

const char *gw_req_authority(const gw_req_t *r)
{
    return r->conn ? r->conn->h->authority : NULL;
}

char *gw_req_take_raw_path(gw_req_t *r)
{
    gw_h1_t *c = r->conn;
    if (!c)
        return NULL;
    char *raw = c->h->raw_path;
    c->h->raw_path = NULL;
    return raw;
}

const char *gw_req_arg(const gw_req_t *r, const char *name)
{
    const gw_h1_t *c = r->conn;
    if (!c)
        return NULL;
    args_parse(c->h);
    for (unsigned i = 0; i < c->h->nargs; i++)
        if (strcmp(c->h->args[i].name, name) == 0)
            return c->h->args[i].value ? c->h->args[i].value : "";
    return NULL;
}

const gw_arg_t *gw_req_args(const gw_req_t *r, unsigned *n)
{
    const gw_h1_t *c = r->conn;
    if (c)
        args_parse(c->h);
    *n = c ? c->h->nargs : 0;
    return c ? c->h->args : NULL;
}

const struct sockaddr *gw_req_peer(const gw_req_t *r)
{
    return r->conn ? (const struct sockaddr *)&r->conn->peer : NULL;
}

int gw_req_fd(const gw_req_t *r)
{
    return r->conn && !r->conn->closing ? r->conn->fd : -1;
}

int gw_h1_fd(gw_h1_t *c)
{
    return c->closing ? -1 : c->fd;
}

gw_conn_t *gw_h1_guard(gw_h1_t *c)
{
    return c ? c->guard : NULL;
}

/* 413, and the connection closes after it: the body's rest stays unread. */
void gw_req_too_large(gw_req_t *r, uint64_t limit)
{
    gw_resp_error(&r->resp, GW_R_TOO_LARGE, NULL, "body is larger than %llu bytes",
                  (unsigned long long)limit);
    r->state = GW_ST_DONE;
    r->close_after = true;
}

void gw_req_finish(gw_req_t *r)
{
    gw_worker_t *w = r->w;
    w->suspended--;
    r->state = GW_ST_DONE;
    if (!r->conn) {
        /* The client went away while we waited. */
        gw_http_req_free(r);
        return;
    }
    /* called from a Redis reply, a timer or a thread's completion: the
     * iteration's clock (and Date) as a read's, for the guard's deadlines */
    gw_http_iteration(w);
    gw_h1_finish(r);
}
