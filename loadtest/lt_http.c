/*
 * HTTP/1.1 response parsing (see lt_http.h) and a blocking one-shot client.
 */
#include "loadtest/lt_http.h"

#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "common/cm_time.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

void lt_http_parser_init(lt_http_parser_t *p, bool head_request)
{
    memset(p, 0, sizeof(*p));
    lt_http_parser_reset(p, head_request);
}

void lt_http_parser_reset(lt_http_parser_t *p, bool head_request)
{
    char *body = p->resp.body;
    p->phase = 0;
    p->head_request = head_request;
    p->line_len = 0;
    p->header_bytes = 0;
    p->error = NULL;
    p->resp = (lt_http_resp_t){.status = 0, .content_length = -1, .retry_after_s = -1,
                               .body = body};
    if (body)
        body[0] = '\0';
}

void lt_http_parser_free(lt_http_parser_t *p)
{
    CM_FREE(p->resp.body);
    p->body_cap = 0;
}

static int perr(lt_http_parser_t *p, const char *msg)
{
    p->error = msg;
    return CM_EINVAL;
}

static bool parse_uint(const char *s, size_t n, int64_t max, int64_t *out)
{
    if (n == 0 || n > 18)
        return false;
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return false;
        v = v * 10 + (s[i] - '0');
    }
    if (v > max)
        return false;
    *out = v;
    return true;
}

static int on_status_line(lt_http_parser_t *p, const char *l, size_t n)
{
    /* HTTP/1.1 SP 3DIGIT SP reason */
    if (n < 12 || (memcmp(l, "HTTP/1.1 ", 9) != 0 && memcmp(l, "HTTP/1.0 ", 9) != 0))
        return perr(p, "bad status line");
    int64_t st;
    if (!parse_uint(l + 9, 3, 999, &st) || st < 100 || (n > 12 && l[12] != ' '))
        return perr(p, "bad status code");
    p->resp.status = (int)st;
    if (l[7] == '0')
        p->resp.conn_close = true;
    return 0;
}

static bool token_has(const char *v, size_t n, const char *word)
{
    size_t w = strlen(word);
    for (size_t i = 0; i + w <= n; i++)
        if (strncasecmp(v + i, word, w) == 0)
            return true;
    return false;
}

static int on_header(lt_http_parser_t *p, const char *l, size_t n)
{
    if (l[0] == ' ' || l[0] == '\t')
        return perr(p, "obsolete header folding");
    const char *colon = memchr(l, ':', n);
    if (!colon || colon == l)
        return perr(p, "header without a name");
    size_t nlen = (size_t)(colon - l);
    for (size_t i = 0; i < nlen; i++)
        if (l[i] == ' ' || l[i] == '\t')
            return perr(p, "space in a header name");
    const char *v = colon + 1;
    size_t vlen = n - nlen - 1;
    while (vlen && (*v == ' ' || *v == '\t'))
        v++, vlen--;
    while (vlen && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
        vlen--;
    if (nlen == 14 && strncasecmp(l, "Content-Length", 14) == 0) {
        int64_t cl;
        if (!parse_uint(v, vlen, INT64_MAX / 2, &cl))
            return perr(p, "bad Content-Length");
        if (p->resp.content_length >= 0 && p->resp.content_length != cl)
            return perr(p, "conflicting Content-Length");
        if (cl > LT_HTTP_BODY_MAX)
            return perr(p, "body too large");
        p->resp.content_length = cl;
    } else if (nlen == 17 && strncasecmp(l, "Transfer-Encoding", 17) == 0) {
        return perr(p, "Transfer-Encoding not supported");
    } else if (nlen == 11 && strncasecmp(l, "Retry-After", 11) == 0) {
        int64_t ra;
        if (parse_uint(v, vlen, 86400 * 365, &ra))
            p->resp.retry_after_s = (int)ra;
    } else if (nlen == 10 && strncasecmp(l, "Connection", 10) == 0) {
        if (token_has(v, vlen, "close"))
            p->resp.conn_close = true;
    } else if (nlen == 20 && strncasecmp(l, "X-Flashgate-Degraded", 20) == 0) {
        p->resp.degraded = vlen == 1 && v[0] == '1';
    }
    return 0;
}

static int end_of_headers(lt_http_parser_t *p)
{
    int st = p->resp.status;
    bool no_body = p->head_request || (st >= 100 && st < 200) || st == 204 || st == 304;
    if (st >= 100 && st < 200)
        return perr(p, "1xx answers are not expected");
    if (no_body) {
        p->resp.content_length = 0;
    } else if (p->resp.content_length < 0) {
        return perr(p, "answer without Content-Length");
    }
    size_t need = (size_t)p->resp.content_length + 1;
    if (p->body_cap < need) {
        p->body_cap = need < 1024 ? 1024 : need;
        p->resp.body = cm_xrealloc(p->resp.body, p->body_cap);
    }
    p->resp.body[0] = '\0';
    p->resp.body_len = 0;
    p->phase = p->resp.content_length == 0 ? 3 : 2;
    return 0;
}

int lt_http_parser_feed(lt_http_parser_t *p, const char *data, size_t len, size_t *consumed)
{
    size_t i = 0;
    int rc = LT_HTTP_NEED_MORE;
    while (i < len && p->phase < 2) {
        char c = data[i++];
        if (++p->header_bytes > 4 * LT_HTTP_LINE_MAX) {
            rc = perr(p, "headers too large");
            goto out;
        }
        if (c != '\n') {
            if (p->line_len + 1 >= LT_HTTP_LINE_MAX) {
                rc = perr(p, "header line too long");
                goto out;
            }
            p->line[p->line_len++] = c;
            continue;
        }
        if (p->line_len == 0 || p->line[p->line_len - 1] != '\r') {
            rc = perr(p, "line not ended by CRLF");
            goto out;
        }
        size_t n = p->line_len - 1;
        p->line[n] = '\0';
        p->line_len = 0;
        if (memchr(p->line, '\r', n) || memchr(p->line, '\0', n)) {
            rc = perr(p, "stray CR or NUL in a header");
            goto out;
        }
        if (p->phase == 0) {
            rc = on_status_line(p, p->line, n);
            p->phase = 1;
        } else if (n == 0) {
            rc = end_of_headers(p);
        } else {
            rc = on_header(p, p->line, n);
        }
        if (rc < 0)
            goto out;
        rc = LT_HTTP_NEED_MORE;
    }
    if (p->phase == 2) {
        size_t want = (size_t)p->resp.content_length - p->resp.body_len;
        size_t take = len - i < want ? len - i : want;
        memcpy(p->resp.body + p->resp.body_len, data + i, take);
        p->resp.body_len += take;
        p->resp.body[p->resp.body_len] = '\0';
        i += take;
        if (p->resp.body_len == (size_t)p->resp.content_length)
            p->phase = 3;
    }
    if (p->phase == 3)
        rc = LT_HTTP_DONE;
out:
    *consumed = i;
    return rc;
}

int lt_http_parse_url(const char *url, char *host, size_t hostlen, int *port)
{
    if (strncmp(url, "http://", 7) != 0)
        return CM_EINVAL;
    const char *h = url + 7;
    const char *end = h + strcspn(h, "/");
    const char *colon = memchr(h, ':', (size_t)(end - h));
    const char *hend = colon ? colon : end;
    if (hend == h || (size_t)(hend - h) >= hostlen)
        return CM_EINVAL;
    memcpy(host, h, (size_t)(hend - h));
    host[hend - h] = '\0';
    *port = 80;
    if (colon) {
        int64_t v;
        if (!parse_uint(colon + 1, (size_t)(end - colon - 1), 65535, &v) || v == 0)
            return CM_EINVAL;
        *port = (int)v;
    }
    return 0;
}

static int wait_fd(int fd, short ev, uint64_t deadline_ms)
{
    uint64_t now = cm_mono_ms();
    if (now >= deadline_ms)
        return CM_ETIMEOUT;
    struct pollfd pfd = {.fd = fd, .events = ev};
    int r = poll(&pfd, 1, (int)(deadline_ms - now));
    return r > 0 ? 0 : r == 0 ? CM_ETIMEOUT : CM_EIO;
}

int lt_http_simple(const char *method, const char *base_url, const char *path,
                   const char *token, const char *json_body, int timeout_ms, int *status,
                   char **body, char *errbuf, size_t errlen)
{
    char host[256];
    int port;
    *body = NULL;
    if (lt_http_parse_url(base_url, host, sizeof(host), &port) < 0) {
        snprintf(errbuf, errlen, "%s: not a URL like http://host:port", base_url);
        return CM_EINVAL;
    }
    char portstr[8];
    snprintf(portstr, sizeof(portstr), "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai;
    if (getaddrinfo(host, portstr, &hints, &ai) != 0) {
        snprintf(errbuf, errlen, "%s: cannot resolve %s", base_url, host);
        return CM_EINVAL;
    }
    uint64_t deadline = cm_mono_ms() + (uint64_t)timeout_ms;
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int rc = fd < 0 ? CM_EIO : 0;
    if (rc == 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) < 0)
        rc = CM_EBACKEND;
    freeaddrinfo(ai);
    if (rc < 0) {
        snprintf(errbuf, errlen, "%s: cannot connect: %s", base_url, strerror(errno));
        if (fd >= 0)
            close(fd);
        return rc;
    }
    size_t blen = json_body ? strlen(json_body) : 0;
    size_t cap = 1024 + blen + (token ? strlen(token) : 0);
    char *req = cm_xmalloc(cap);
    int n = snprintf(req, cap,
                     "%s %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n"
                     "%s%s%sContent-Length: %zu\r\n%s\r\n",
                     method, path, host, port, token ? "Authorization: Bearer " : "",
                     token ? token : "", token ? "\r\n" : "", blen,
                     json_body ? "Content-Type: application/json\r\n" : "");
    if (json_body) /* sent by length: no NUL wanted */
        memcpy(req + n, json_body, blen); // NOLINT(bugprone-not-null-terminated-result)
    size_t total = (size_t)n + blen, off = 0;
    while (off < total && rc == 0) {
        ssize_t w = send(fd, req + off, total - off, MSG_NOSIGNAL);
        if (w < 0)
            rc = CM_EIO;
        else
            off += (size_t)w;
    }
    free(req);
    lt_http_parser_t p;
    lt_http_parser_init(&p, strcmp(method, "HEAD") == 0);
    char buf[8192];
    int prc = LT_HTTP_NEED_MORE;
    while (rc == 0 && prc == LT_HTTP_NEED_MORE) {
        rc = wait_fd(fd, POLLIN, deadline);
        if (rc < 0)
            break;
        ssize_t r = recv(fd, buf, sizeof(buf), 0);
        if (r <= 0) {
            rc = CM_EIO;
            break;
        }
        size_t used;
        prc = lt_http_parser_feed(&p, buf, (size_t)r, &used);
        if (prc < 0)
            rc = CM_EINVAL;
    }
    close(fd);
    if (rc < 0) {
        snprintf(errbuf, errlen, "%s %s%s: %s", method, base_url, path,
                 p.error ? p.error : cm_strerror(rc));
        lt_http_parser_free(&p);
        return rc;
    }
    *status = p.resp.status;
    *body = p.resp.body ? p.resp.body : cm_xstrdup("");
    p.resp.body = NULL;
    lt_http_parser_free(&p);
    return 0;
}
