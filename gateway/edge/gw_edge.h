/*
 * gateway/edge: the transport. The public listener's HTTP/1.1 layer (gw_h1.c:
 * llhttp over edge-triggered sockets), the connection guard (gw_conn.c) and
 * TCP_INFO (gw_tcp.c). It uses only gateway/base, and reaches the layers
 * above through the functions of gw_upcall.h alone.
 */
#ifndef GW_EDGE_H
#define GW_EDGE_H

#include "gateway/base/gw_base.h"

#include <llhttp.h>

/*---- Connection guard (gw_conn.c): per-address and total caps, head deadline, body rate ----*/

/* A body gets this long before its average rate is held to server.body_min_rate. */
#define GW_CONN_BODY_GRACE_MS 2000

/* The table of open connections per client address, shared by the workers. Thread-safe. */
gw_ip_table_t *gw_ip_table_new(void);
void gw_ip_table_free(gw_ip_table_t *t);
/* Starts the worker's sweep timer on w->loop. Single-threaded init, before the loop runs. */
void gw_conn_guard_init(gw_worker_t *w);
/* Closes the sweep timer (the loop can then end). Loop thread only. */
void gw_conn_guard_close(gw_worker_t *w);
/* Frees the guard; after the worker's connections closed. */
void gw_conn_guard_free(gw_worker_t *w);
/* Decides the per-worker connection cap (server.max_connections, lowered to
 * fit RLIMIT_NOFILE) into srv->conns.max_conns. Single-threaded init. */
void gw_conn_limit(gw_server_t *srv);
/*
 * An accepted socket from peer: the per-address cap and, at the total cap,
 * the eviction of an old connection. Returns the guard's entry (head phase),
 * or NULL: refused (close the socket). Loop thread.
 */
gw_conn_t *gw_conn_open(gw_worker_t *w, const struct sockaddr *peer);
/* The connection gw_h1_kill closes when the guard gives up on it. */
void gw_conn_set_owner(gw_conn_t *c, struct gw_h1 *owner);
/* The connection closed: forgets the entry (frees it). */
void gw_conn_release(gw_conn_t *c);
/* Hooks from the connection layer; all loop thread only, NULL-safe. */
void gw_conn_head_done(gw_conn_t *c); /* the head is in: body phase (rate held) */
void gw_conn_body(gw_conn_t *c, size_t n);
void gw_conn_busy(gw_conn_t *c);      /* the request is complete: being served */
void gw_conn_writing(gw_conn_t *c);   /* the answer is unsent: the client must read it */
void gw_conn_idle(gw_conn_t *c);      /* answered: keep-alive, waiting for the next head */
/* TCP_INFO's bytes_acked of a socket; UINT64_MAX if the kernel does not say (gw_tcp.c). */
uint64_t gw_tcp_bytes_acked(int fd);
/* Adds "connections": {open, evicted, head_timeouts, ...} to a stats object (json_t *). Thread-safe. */
void gw_conn_stats(gw_server_t *srv, void *json_obj);

/* Answers a request that waited (Redis, fsync, an upstream): r->resp or
 * r->cached is ready. Loop thread of req->w only. */
void gw_req_finish(gw_req_t *req);

/*---- The public listener's HTTP/1.1 layer (gw_h1.c) ----*/

#define GW_H1_READ_BUF 8192  /* a connection's read buffer: the largest head (else 431) */
#define GW_H1_MAX_HEADERS 64 /* header fields per request (else 431) */
#define GW_H1_MAX_ARGS 32    /* query arguments kept per request (more are ignored) */
#define GW_H1_METHOD_MAX 31  /* a method token llhttp does not know (longer: 400) */
/* A header field of the head, NUL-terminated in the connection's buffer. */
typedef struct gw_hdr {
    const char *name, *value;
    size_t nlen, vlen;
} gw_hdr_t;
/* A query argument, %XX-decoded in place; value NULL: no '='. */
typedef struct gw_arg {
    const char *name, *value;
} gw_arg_t;
/*
 * The request parser's state and the head it read: llhttp over a
 * connection's buffer, header and URL spans recorded as they come (a span a
 * read cut in two continues in the buffer), NUL-terminated in place when the
 * head is in (the bytes after each span are consumed: ' ', ':', CR, LF), the
 * query split and the path %XX-decoded. on_head runs then (returning true
 * pauses the parser inside the message: the request ends there), on_body for
 * each body chunk; the parser pauses itself at each message's end (HPE_PAUSED).
 * gw_h1.c drives it per connection, tests/fuzz/fuzz_h1.c with reads cut
 * anywhere.
 */
typedef struct gw_h1_head {
    llhttp_t parser;
    char *buf; /* where the bytes are: spans are offsets into it */
    void *owner;
    bool (*on_head)(struct gw_h1_head *h);
    void (*on_body)(struct gw_h1_head *h, const char *at, size_t len);
    gw_hdr_t hdrs[GW_H1_MAX_HEADERS];
    unsigned nhdrs;
    bool in_value; /* the last span was a header value */
    bool too_many; /* more header fields than GW_H1_MAX_HEADERS: the parser pauses (431) */
    bool bad_name; /* an empty field name (": x", llhttp takes it): the parser pauses (400) */
    bool folded;   /* a value folded onto the next line (obs-fold): the parser pauses (400) */
    bool bare_lf;  /* the request line or the final empty line ends in a bare LF (400) */
    bool bad_path; /* a dot segment, an encoded slash or an encoded NUL in the path (400) */
    bool in_msg;   /* a message has begun (its first byte), until gw_h1_head_next */
    bool head_in;  /* the head is complete */
    bool msg_done; /* the message is complete (the parser paused after it) */
    size_t url_off, url_len;
    const char *url; /* the decoded path, once the head is in */
    /* the path as sent (after the origin-form reduction), kept only when it
     * has a '%' (url is then the decoded one, written over it), else NULL:
     * allocated by head_strings, valid while on_head runs, freed after it
     * unless a proxied route took it (gw_req_take_raw_path) */
    char *raw_path;
    /* an absolute-form target's authority (the host asked for), or NULL */
    const char *authority;
    char *query;     /* the query as sent (no '?', no fragment), or NULL; parsed in place
                      * into args on the first gw_req_arg(s): read it before that */
    bool args_parsed;
    gw_arg_t args[GW_H1_MAX_ARGS];
    unsigned nargs;
    size_t head_end; /* the buffer's bytes the head's strings need */
    /* found in head_strings' walk over the fields, with the buffer's strings */
    gw_known_hdrs_t known;
    const char *expect; /* the first Expect, or NULL */
    unsigned nhost;     /* Host fields (two: 400) */
    const char *host;   /* the first Host field's value, or NULL */
    bool connection;    /* a Connection field was sent (its options are read then) */
} gw_h1_head_t;
void gw_h1_head_init(gw_h1_head_t *h, char *buf, void *owner);
/* Parses buf[off, off + n): the bytes consumed (less on a pause or an error), *err
 * llhttp's errno (HPE_OK, HPE_PAUSED, or the error). */
size_t gw_h1_head_execute(gw_h1_head_t *h, size_t off, size_t n, llhttp_errno_t *err);
/* The parser starts the current message again from buf[0] (gw_h1.c's other_method). */
void gw_h1_head_restart(gw_h1_head_t *h);
/* After a message: unpauses for the next one (whose bytes the caller moved to buf[0]). */
void gw_h1_head_next(gw_h1_head_t *h);
/* The first header field of that name (caseless), or NULL. */
const char *gw_h1_head_find(const gw_h1_head_t *h, const char *name);
/* Opens w's listening socket on sa (SO_REUSEPORT) on w's loop. -1 with errbuf. Init. */
int gw_h1_listen(gw_worker_t *w, const struct sockaddr *sa, char *errbuf, size_t errlen);
/* The worker's loop (gw_h1.c): until stopped and everything is closed. */
void gw_h1_run(gw_worker_t *w);
/* Starts or stops accepting (the overload door). Loop thread. */
void gw_h1_accepting(gw_worker_t *w, bool on);
/* Whether w's listening socket is open. Loop thread. */
bool gw_h1_listening(const gw_worker_t *w);
/* Connections waiting in the kernel for w's accept() (TCP_INFO); 0 if unknown. Loop thread. */
uint32_t gw_h1_listen_queue(const gw_worker_t *w);
/*
 * The overload door: shut stops polling the listening socket and makes it
 * stop listening (shutdown: the kernel resets its queue; *reset, if given,
 * gets how many it held); open listens again (GW_LISTEN_BACKLOG) and polls.
 * Returns 0, CM_ENOTFOUND without a socket, or CM_EIO (errno says why: the
 * door stays as it was). Loop thread.
 */
int gw_h1_door(gw_worker_t *w, bool shut, uint32_t *reset);
/* Connections closing once their answer is out, with those trimmed whose answer is not. */
uint64_t gw_h1_leaving(const gw_worker_t *w);
/* Open connections. Loop thread. */
uint64_t gw_h1_open_count(const gw_worker_t *w);
/* The shut door trims r: its connection closes after its answer (close_after),
 * counted in gw_h1_leaving until the answer is out. Loop thread. */
void gw_h1_trim(gw_req_t *r);
/* r's trim is no longer pending: its answer is out, or r is orphaned or freed.
 * No-op for an untrimmed r. Loop thread. */
void gw_h1_trim_done(gw_req_t *r);
/* Closes the listening socket (stop: no new connections). Loop thread. */
void gw_h1_stop_accepting(gw_worker_t *w);
/* Closes the listening socket and every connection. Loop thread. */
void gw_h1_stop(gw_worker_t *w);
/* Frees w's spare connection buffers (after its loop closed every connection). */
void gw_h1_worker_free(gw_worker_t *w);
/* Closes c now (the guard's deadlines and evictions). Loop thread. */
void gw_h1_kill(gw_h1_t *c);
int gw_h1_fd(gw_h1_t *c);
/* A time c's last read's bytes arrived after (0: not known; gw_h1.c). */
uint64_t gw_h1_read_after_ns(const gw_h1_t *c);
/* c's guard entry (gw_conn.c), NULL-safe. */
gw_conn_t *gw_h1_guard(gw_h1_t *c);
/* A waiting request's answer is ready: render it, go on with the connection. */
void gw_h1_finish(gw_req_t *r);
/* %XX-decodes s in place (other bytes, and %00, as they are); returns the new length. */
size_t gw_h1_unescape(char *s);
/* Splits a query string in place into at most max arguments; returns how many. */
unsigned gw_h1_parse_query(char *q, gw_arg_t *args, unsigned max);
/* An answer built piece by piece (the proxy's): status line and Date, headers,
 * then Content-Length (`announce`, none if < 0: a 204, or a HEAD whose length
 * is unknown), Connection and the body (none for HEAD). */
void gw_h1_status(gw_req_t *r, unsigned status);
void gw_h1_header(gw_req_t *r, const char *name, const char *value);
void gw_h1_body(gw_req_t *r, const char *body, size_t len, int64_t announce);
/* What a handler reads of its request; valid until the answer. */
const char *gw_req_header(const gw_req_t *r, const char *name); /* the first, or NULL */
/* The first field of that name, or NULL; *dup = true when there is more than one
 * (a proxy that appends a field leaves the client's before its own). Loop thread. */
const char *gw_req_header_once(const gw_req_t *r, const char *name, bool *dup);
const gw_hdr_t *gw_req_headers(const gw_req_t *r, unsigned *n);
bool gw_req_http10(const gw_req_t *r); /* an HTTP/1.0 request (no Host required) */
/* X-Forwarded-For as one list: r->hdr.xff when the request has at most one
 * such field, else all of them joined in order with ", " (a proxy that adds
 * its own field, as HAProxy's `option forwardfor` does, leaves the client's
 * before it: the first field alone is the client's to forge), in the
 * worker's xff_join, valid until the next call. Loop thread. */
const char *gw_req_xff(const gw_req_t *r);
const char *gw_req_arg(const gw_req_t *r, const char *name); /* "" for a bare name */
const gw_arg_t *gw_req_args(const gw_req_t *r, unsigned *n);
/* The query as the client sent it (no '?'), or NULL: none, or gw_req_arg(s) parsed it. */
const char *gw_req_query(const gw_req_t *r);
/* The path as the client sent it, when it differs from r->url (it had a %XX
 * escape), handed over to the caller (free it); else NULL: r->url is the path
 * as sent. Only while the head is handled (gw_http_head). Loop thread. */
char *gw_req_take_raw_path(gw_req_t *r);
/* An absolute-form target's authority (host[:port], as sent), or NULL: an
 * origin-form target, whose host is the Host field's. Loop thread. */
const char *gw_req_authority(const gw_req_t *r);
const struct sockaddr *gw_req_peer(const gw_req_t *r);
int gw_req_fd(const gw_req_t *r);
/* A body past `limit` (chunked, or not announced): 413 now, the connection
 * closing with the rest unread, as nginx's client_max_body_size. Loop thread. */
void gw_req_too_large(gw_req_t *r, uint64_t limit);

#endif
