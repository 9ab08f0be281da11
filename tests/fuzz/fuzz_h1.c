/*
 * Fuzz target: the public listener's request parser (gw_h1_head_t, gw_h1.c)
 * driven as a connection drives it: bytes appended to an 8 KiB buffer,
 * parsed as they arrive, body bytes dropped from the buffer once delivered,
 * the rest moved to the front after each message (pipelining).
 * Input: byte 0 seeds where the reads are cut; the rest is the byte stream.
 * Promises: the same stream gives the same requests (method, path, headers,
 * query arguments, body) and the same stop (error or buffer full) whether it
 * arrives in one read or cut anywhere (a span cut by a read continues in the
 * buffer); every header name and value is NUL-terminated at its length inside
 * the buffer; names hold no ':' and no NUL; at most GW_H1_MAX_HEADERS fields;
 * a chunked body's trailers add no field to the head's; a path kept as sent
 * (h->raw_path: it had a '%') decodes to the path routed by, and is freed
 * once the head is handled.
 */
#include "gateway/base/gw_base.h"
#include "gateway/buy/gw_buy.h"
#include "gateway/ctl/gw_ctl.h"
#include "gateway/edge/gw_edge.h"
#include "gateway/edge/gw_upcall.h"
#include "gateway/http/gw_http.h"
#include "gateway/overload/gw_ol.h"
#include "gateway/proxy/gw_proxy.h"
#include "tests/fuzz/fuzz.h"

#include <stdio.h>
#include <string.h>

typedef struct run {
    char buf[GW_H1_READ_BUF];
    gw_h1_head_t h;
    char log[65536]; /* what was parsed, request by request */
    size_t loglen;
    size_t body;
    unsigned nhdrs; /* the head's fields: trailers add none */
} run_t;

static void logf_(run_t *r, const char *s, size_t n)
{
    if (r->loglen + n + 1 > sizeof(r->log))
        n = sizeof(r->log) - r->loglen - 1;
    memcpy(r->log + r->loglen, s, n);
    r->loglen += n;
    r->log[r->loglen] = '\0';
}

static void logs(run_t *r, const char *s)
{
    logf_(r, s, strlen(s));
}

static bool on_head(gw_h1_head_t *h)
{
    run_t *r = h->owner;
    char tmp[64];
    logs(r, "\n>");
    logs(r, llhttp_method_name((llhttp_method_t)h->parser.method));
    logs(r, " ");
    logs(r, h->url);
    /* the path as sent, kept when it had an escape: it decodes to the path
     * routed by (without one, the path routed by is the one sent) */
    if (h->raw_path) {
        FZ_CHECK(strchr(h->raw_path, '%') != NULL);
        FZ_CHECK(strpbrk(h->raw_path, "?#") == NULL);
        char dec[GW_H1_READ_BUF];
        FZ_CHECK(strlen(h->raw_path) < sizeof(dec));
        strcpy(dec, h->raw_path);
        gw_h1_unescape(dec);
        FZ_CHECK(strcmp(dec, h->url) == 0);
        logs(r, " raw=");
        logs(r, h->raw_path);
    }
    FZ_CHECK(h->nhdrs <= GW_H1_MAX_HEADERS);
    for (unsigned i = 0; i < h->nhdrs; i++) {
        const gw_hdr_t *f = &h->hdrs[i];
        FZ_CHECK(f->name >= h->buf && f->name + f->nlen < h->buf + GW_H1_READ_BUF);
        FZ_CHECK(strlen(f->name) == f->nlen);
        FZ_CHECK(memchr(f->name, ':', f->nlen) == NULL);
        FZ_CHECK(strlen(f->value) <= f->vlen);
        logs(r, "|");
        logs(r, f->name);
        logs(r, "=");
        logs(r, f->value);
    }
    /* The query is parsed when a handler first asks (gw_h1.c args_parse): here, now. */
    if (h->query) {
        FZ_CHECK(h->query > h->buf && h->query < h->buf + GW_H1_READ_BUF);
        FZ_CHECK(strchr(h->query, '#') == NULL);
        h->nargs = gw_h1_parse_query(h->query, h->args, GW_H1_MAX_ARGS);
        h->args_parsed = true;
        h->query = NULL;
    }
    for (unsigned i = 0; i < h->nargs; i++) {
        logs(r, "&");
        logs(r, h->args[i].name);
        logs(r, h->args[i].value ? "=" : "");
        logs(r, h->args[i].value ? h->args[i].value : "");
    }
    snprintf(tmp, sizeof(tmp), " v%u.%u", h->parser.http_major, h->parser.http_minor);
    logs(r, tmp);
    logs(r, " body:");
    FZ_CHECK(h->head_end <= GW_H1_READ_BUF);
    r->body = 0;
    r->nhdrs = h->nhdrs;
    return false;
}

static void on_body(gw_h1_head_t *h, const char *at, size_t len)
{
    run_t *r = h->owner;
    FZ_CHECK(at >= h->buf && at + len <= h->buf + GW_H1_READ_BUF);
    r->body += len;
    /* body bytes in order, whatever the cuts: the log gets them, the cuts do not show */
    logf_(r, at, len);
}

/* Feeds data in reads whose sizes come from seed (0: one read). Returns how it stopped. */
static const char *feed(run_t *r, const uint8_t *data, size_t size, unsigned seed)
{
    gw_h1_head_init(&r->h, r->buf, r);
    r->h.on_head = on_head;
    r->h.on_body = on_body;
    r->loglen = 0;
    r->log[0] = '\0';
    size_t rlen = 0, parsed = 0, off = 0;
    uint32_t x = seed * 2654435761u + 1;
    while (off < size || parsed < rlen) {
        if (off < size) {
            size_t room = GW_H1_READ_BUF - rlen;
            if (room == 0)
                return "full";
            x = x * 1103515245u + 12345u;
            size_t n = seed ? 1 + (x >> 16) % 37 : size - off;
            if (n > size - off)
                n = size - off;
            if (n > room)
                n = room;
            memcpy(r->buf + rlen, data + off, n);
            rlen += n;
            off += n;
        }
        while (parsed < rlen) {
            llhttp_errno_t e;
            size_t n = gw_h1_head_execute(&r->h, parsed, rlen - parsed, &e);
            parsed += n;
            FZ_CHECK(r->h.raw_path == NULL); /* freed once the head was handled */
            if (e == HPE_PAUSED) {
                if (r->h.too_many)
                    return "too many headers";
                if (r->h.bad_name)
                    return "bad header name";
                if (r->h.folded)
                    return "obs-fold";
                if (r->h.bare_lf)
                    return "bare LF";
                if (r->h.bad_path)
                    return "bad path";
                FZ_CHECK(r->h.msg_done);
                FZ_CHECK(r->h.nhdrs == r->nhdrs); /* a chunked body's trailers are ignored */
                logs(r, "<done");
                memmove(r->buf, r->buf + parsed, rlen - parsed);
                rlen -= parsed;
                parsed = 0;
                gw_h1_head_next(&r->h);
                continue;
            }
            if (e != HPE_OK)
                return llhttp_errno_name(e);
            FZ_CHECK(n == rlen - (parsed - n));
            if (r->h.head_in) {
                /* in a body: the head's strings stay, the delivered body goes */
                FZ_CHECK(r->h.head_end <= parsed);
                rlen = parsed = r->h.head_end;
            }
        }
    }
    return "end";
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 65536)
        return 0;
    static run_t a, b;
    const char *sa = feed(&a, data + 1, size - 1, 0);
    const char *sb = feed(&b, data + 1, size - 1, data[0] | 1u);
    /* "full" depends on the cuts only when one read brought more than fits:
     * then the one-read run stops earlier; compare only what both parsed. */
    if (strcmp(sa, "full") != 0 && strcmp(sb, "full") != 0) {
        if (strcmp(sa, sb) != 0 || a.loglen != b.loglen || memcmp(a.log, b.log, a.loglen) != 0)
            fprintf(stderr, "one read: %s%s\ncut: %s%s\n", a.log, sa, b.log, sb);
        FZ_CHECK(strcmp(sa, sb) == 0);
        FZ_CHECK(a.loglen == b.loglen && memcmp(a.log, b.log, a.loglen) == 0);
    }
    return 0;
}
