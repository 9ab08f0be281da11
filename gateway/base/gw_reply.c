/*
 * The one table that maps outcomes to HTTP status and stable error codes (and
 * the public routes' names, the reason phrases), and the response builder.
 */
#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "gateway/base/gw_base.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const struct {
    int status;
    const char *code;
    unsigned retry_after_s;
} reply_table[GW_R_COUNT] = {
#define XX(n, s, c, ra) [GW_R_##n] = {s, c, ra},
    GW_REPLY_MAP(XX)
#undef XX
};

int gw_reply_status(gw_reply_t r)
{
    return reply_table[r].status;
}

const char *gw_reply_code(gw_reply_t r)
{
    return reply_table[r].code;
}

unsigned gw_reply_retry_after(gw_reply_t r)
{
    return reply_table[r].retry_after_s;
}

void gw_resp_init(gw_resp_t *r, gw_reply_t reply)
{
    r->reply = reply;
    r->status = reply_table[reply].status;
    r->body_len = 0;
    r->body[0] = '\0';
    r->nheaders = 0;
    if (reply_table[reply].retry_after_s)
        gw_resp_retry_after(r, reply_table[reply].retry_after_s);
}

void gw_resp_retry_after(gw_resp_t *r, unsigned long long seconds)
{
    for (unsigned i = 0; i < r->nheaders; i++) {
        if (strcmp(r->headers[i][0], "Retry-After") == 0) {
            snprintf(r->headers[i][1], sizeof(r->headers[0][1]), "%llu", seconds);
            return;
        }
    }
    gw_resp_header(r, "Retry-After", "%llu", seconds);
}

void gw_resp_sold_out(gw_resp_t *r, const char *sale_id)
{
    gw_resp_error(r, GW_R_SOLD_OUT, NULL, "sale %s is sold out", sale_id);
}

/* strlcpy: copies what fits of s into out[cap], always terminated (as snprintf "%s"). */
static void copy_str(char *out, size_t cap, const char *s)
{
    size_t n = strnlen(s, cap - 1);
    memcpy(out, s, n);
    out[n] = '\0';
}

void gw_resp_header_set(gw_resp_t *r, const char *name, const char *value)
{
    if (r->nheaders >= CM_ARRAY_LEN(r->headers))
        return;
    copy_str(r->headers[r->nheaders][0], sizeof(r->headers[0][0]), name);
    copy_str(r->headers[r->nheaders][1], sizeof(r->headers[0][1]), value);
    r->nheaders++;
}

void gw_resp_header(gw_resp_t *r, const char *name, const char *fmt, ...)
{
    if (r->nheaders >= CM_ARRAY_LEN(r->headers))
        return;
    copy_str(r->headers[r->nheaders][0], sizeof(r->headers[0][0]), name);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->headers[r->nheaders][1], sizeof(r->headers[0][1]), fmt, ap);
    va_end(ap);
    r->nheaders++;
}

static char *put2(char *p, int v)
{
    *p++ = (char)('0' + v / 10 % 10);
    *p++ = (char)('0' + v % 10);
    return p;
}

static char *put_s(char *p, const char *s)
{
    while (*s)
        *p++ = *s++;
    return p;
}

void gw_http_date(time_t t, char out[GW_DATE_LEN + 1])
{
    /* Names spelled here, not strftime's %a %b: those follow the locale. */
    static const char *const days[7] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const mons[12] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    struct tm tm;
    if (!gmtime_r(&t, &tm)) {
        t = 0;
        gmtime_r(&t, &tm);
    }
    char *p = out;
    p = put_s(p, days[(unsigned)tm.tm_wday % 7]);
    p = put_s(p, ", ");
    p = put2(p, tm.tm_mday);
    *p++ = ' ';
    p = put_s(p, mons[(unsigned)tm.tm_mon % 12]);
    *p++ = ' ';
    p = put2(p, (tm.tm_year + 1900) / 100);
    p = put2(p, tm.tm_year + 1900);
    *p++ = ' ';
    p = put2(p, tm.tm_hour);
    *p++ = ':';
    p = put2(p, tm.tm_min);
    *p++ = ':';
    p = put2(p, tm.tm_sec);
    p = put_s(p, " GMT");
    *p = '\0';
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if s does not start one. */
static size_t utf8_len(const unsigned char *s)
{
    unsigned char c = s[0];
    size_t n;
    uint32_t cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0; /* also stops at the NUL */
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0; /* overlong, out of range or a surrogate */
    return n;
}

void gw_json_escape(char *buf, size_t cap, size_t *len, const char *s)
{
    /*
     * Request bytes (a decoded URL, a JSON parser's message) reach error
     * bodies: a byte that is not valid UTF-8 becomes U+FFFD, so the body is
     * always valid JSON, and a sequence is copied whole or not at all.
     */
    static const char hex[] = "0123456789abcdef";
    size_t n = *len;
    for (; *s && n + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            buf[n++] = '\\';
            buf[n++] = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            buf[n++] = '\\';
            buf[n++] = 'u';
            buf[n++] = '0';
            buf[n++] = '0';
            buf[n++] = hex[c >> 4];
            buf[n++] = hex[c & 15];
        } else if (c < 0x80) {
            buf[n++] = (char)c;
        } else {
            size_t k = utf8_len((const unsigned char *)s);
            if (k == 0) {
                memcpy(buf + n, "\\ufffd", 6);
                n += 6;
            } else {
                memcpy(buf + n, s, k); /* k <= 4 < 7 */
                n += k;
                s += k - 1;
            }
        }
    }
    buf[n] = '\0';
    *len = n;
}

void gw_resp_error(gw_resp_t *r, gw_reply_t reply, const char *extra_json, const char *fmt, ...)
{
    gw_resp_init(r, reply);
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    size_t n = (size_t)snprintf(r->body, sizeof(r->body), "{\"error\":\"%s\",\"message\":\"",
                                reply_table[reply].code);
    gw_json_escape(r->body, sizeof(r->body) - 64, &n, msg);
    n += (size_t)snprintf(r->body + n, sizeof(r->body) - n, "\"%s%s}", extra_json ? "," : "",
                          extra_json ? extra_json : "");
    if (n >= sizeof(r->body))
        n = sizeof(r->body) - 1;
    r->body_len = n;
}

static char *put_n(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

#define PUT_LIT(p, lit) put_n(p, lit, sizeof(lit) - 1)

char *gw_put_u64(char *p, uint64_t v)
{
    char tmp[24];
    size_t n = sizeof(tmp);
    do {
        tmp[--n] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return put_n(p, tmp + n, sizeof(tmp) - n);
}

size_t gw_resp_render(const gw_resp_t *r, const char *date, char *out, size_t cap,
                      size_t *date_off)
{
    /* Bounded by construction: header names and values are < 160 bytes each
     * (gw_resp_t), at most 6 of them: < GW_RESP_HEAD_MAX in all. */
    (void)cap;
    char *p = out;
    p = PUT_LIT(p, "HTTP/1.1 ");
    p = gw_put_u64(p, (uint64_t)r->status);
    *p++ = ' ';
    const char *reason = gw_reply_reason((unsigned)r->status);
    p = put_n(p, reason, strlen(reason));
    p = PUT_LIT(p, "\r\nDate: ");
    if (date_off)
        *date_off = (size_t)(p - out);
    p = put_n(p, date, GW_DATE_LEN);
    p = PUT_LIT(p, "\r\nContent-Type: application/json\r\n");
    bool cache_control = false;
    for (unsigned i = 0; i < r->nheaders; i++) {
        p = put_n(p, r->headers[i][0], strnlen(r->headers[i][0], sizeof(r->headers[0][0])));
        p = PUT_LIT(p, ": ");
        p = put_n(p, r->headers[i][1], strnlen(r->headers[i][1], sizeof(r->headers[0][1])));
        p = PUT_LIT(p, "\r\n");
        cache_control |= strcasecmp(r->headers[i][0], "Cache-Control") == 0;
    }
    /* Nothing is cacheable unless its handler says so (only sale info does,
     * docs/cdn.md): a cached 202, 429 or 503 would answer the next person. */
    if (!cache_control)
        p = PUT_LIT(p, "Cache-Control: no-store\r\n");
    p = PUT_LIT(p, "Content-Length: ");
    p = gw_put_u64(p, r->body_len);
    p = PUT_LIT(p, "\r\n");
    return (size_t)(p - out);
}

gw_prep_t *gw_prep_new(const gw_resp_t *r, const gw_worker_t *w)
{
    char head[GW_RESP_HEAD_MAX];
    size_t date_off;
    size_t hl = gw_resp_render(r, w->date, head, sizeof(head), &date_off);
    gw_prep_t *p = cm_xmalloc(sizeof(*p));
    p->len = hl + 2 + r->body_len;
    p->buf = cm_xmalloc(p->len);
    memcpy(p->buf, head, hl);
    memcpy(p->buf + hl, "\r\n", 2);
    memcpy(p->buf + hl + 2, r->body, r->body_len);
    p->head_len = hl;
    p->date_off = date_off;
    p->date_s = w->date_s;
    return p;
}

void gw_prep_redate(gw_prep_t *p, const gw_worker_t *w)
{
    if (p->date_s == w->date_s)
        return;
    memcpy(p->buf + p->date_off, w->date, GW_DATE_LEN);
    p->date_s = w->date_s;
}

void gw_prep_free(gw_prep_t *p)
{
    if (!p)
        return;
    free(p->buf);
    free(p);
}

static const struct {
    const char *name, *methods;
} route_info[GW_ROUTE_COUNT] = {
    [GW_ROUTE_NONE] = {"other", ""},
#define XX(n, name, m, p) [GW_ROUTE_##n] = {name, m},
    GW_PUBLIC_ROUTES(XX)
#undef XX
    [GW_ROUTE_PROXY] = {"proxy", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"},
};

const char *gw_route_methods(gw_route_t r)
{
    return route_info[r].methods;
}

const char *gw_route_name(gw_route_t r)
{
    return route_info[r].name;
}

const char *gw_reply_reason(unsigned status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 425: return "Too Early";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return status < 200 ? "Informational" : status < 300 ? "Success"
                    : status < 400 ? "Redirection" : status < 500 ? "Client Error"
                    : "Server Error";
    }
}
