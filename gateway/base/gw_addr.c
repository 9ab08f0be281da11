/*
 * Addresses: trusted proxies (server.trusted_proxies), the client address of
 * a request behind them (X-Forwarded-For), and listen addresses.
 */
#include "common/cm_alloc.h"
#include "common/cm_err.h"
#include "gateway/base/gw_base.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*---- Trusted proxies ----*/

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

bool gw_ipv4_parse(const char *s, uint8_t out[4])
{
    for (int i = 0; i < 4; i++) {
        if (!is_digit(*s))
            return false;
        unsigned v = (unsigned)(*s++ - '0');
        if (v == 0 && is_digit(*s))
            return false; /* a leading zero: inet_pton refuses it */
        for (int k = 0; k < 2 && is_digit(*s); k++)
            v = v * 10 + (unsigned)(*s++ - '0');
        if (v > 255 || is_digit(*s))
            return false;
        out[i] = (uint8_t)v;
        if (i < 3 && *s++ != '.')
            return false;
    }
    return *s == '\0';
}

static int parse_addr(const char *s, gw_cidr_t *out)
{
    memset(out, 0, sizeof(*out));
    if (gw_ipv4_parse(s, out->addr) || inet_pton(AF_INET, s, out->addr) == 1) {
        out->family = AF_INET;
        out->prefix = 32;
        return 0;
    }
    if (inet_pton(AF_INET6, s, out->addr) == 1) {
        out->family = AF_INET6;
        out->prefix = 128;
        return 0;
    }
    return CM_EINVAL;
}

int gw_proxies_parse(gw_proxies_t *p, const char *list, char *errbuf, size_t errlen)
{
    p->v = NULL;
    p->n = 0;
    const char *s = list;
    while (*s) {
        while (*s == ' ' || *s == ',')
            s++;
        if (!*s)
            break;
        const char *e = s;
        while (*e && *e != ',' && *e != ' ')
            e++;
        char item[80];
        size_t len = (size_t)(e - s);
        if (len >= sizeof(item))
            goto bad;
        memcpy(item, s, len);
        item[len] = '\0';
        char *slash = strchr(item, '/');
        if (slash)
            *slash = '\0';
        gw_cidr_t c;
        if (parse_addr(item, &c) != 0)
            goto bad;
        if (slash) {
            char *end;
            long pf = strtol(slash + 1, &end, 10);
            if (*end || end == slash + 1 || pf < 0 || (unsigned long)pf > c.prefix)
                goto bad;
            c.prefix = (unsigned)pf;
        }
        p->v = cm_xrealloc(p->v, (p->n + 1) * sizeof(*p->v));
        p->v[p->n++] = c;
        s = e;
        continue;
    bad:
        snprintf(errbuf, errlen, "trusted proxy '%.*s' is not an IP address or CIDR", (int)len,
                 s);
        gw_proxies_free(p);
        return CM_EINVAL;
    }
    return 0;
}

void gw_proxies_free(gw_proxies_t *p)
{
    CM_FREE(p->v);
    p->n = 0;
}

static bool prefix_match(const uint8_t *a, const uint8_t *b, unsigned bits)
{
    unsigned bytes = bits / 8, rem = bits % 8;
    if (memcmp(a, b, bytes) != 0)
        return false;
    if (rem == 0)
        return true;
    uint8_t mask = (uint8_t)(0xffu << (8 - rem));
    return (a[bytes] & mask) == (b[bytes] & mask);
}

static bool match_raw(const gw_proxies_t *p, int family, const uint8_t *addr)
{
    for (size_t i = 0; i < p->n; i++)
        if (p->v[i].family == family && prefix_match(p->v[i].addr, addr, p->v[i].prefix))
            return true;
    return false;
}

/* Normalises a socket address to (family, bytes); v4-mapped v6 becomes v4. */
static int sa_raw(const struct sockaddr *sa, uint8_t *out)
{
    if (!sa)
        return 0;
    if (sa->sa_family == AF_INET) {
        memcpy(out, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        return AF_INET;
    }
    if (sa->sa_family == AF_INET6) {
        const uint8_t *a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(a, mapped, 12) == 0) {
            memcpy(out, a + 12, 4);
            return AF_INET;
        }
        memcpy(out, a, 16);
        return AF_INET6;
    }
    return 0;
}

bool gw_proxies_match(const gw_proxies_t *p, const struct sockaddr *sa)
{
    uint8_t raw[16];
    int fam = sa_raw(sa, raw);
    return fam && match_raw(p, fam, raw);
}

static size_t key_of(int family, const uint8_t *raw, uint8_t *key)
{
    if (family == AF_INET) {
        memcpy(key, raw, 4);
        return 4;
    }
    /* IPv6 clients are limited per /64: one subscriber usually holds a whole /64. */
    memcpy(key, raw, 8);
    return 8;
}

/* gw_client_addr's walk; static so gw_client_key (every buy) keeps it inlined. */
static int client_addr(const gw_proxies_t *p, const struct sockaddr *peer, const char *xff,
                       uint8_t *raw)
{
    int fam = sa_raw(peer, raw);
    if (!fam)
        return 0;
    if (!xff || p->n == 0 || !match_raw(p, fam, raw))
        return fam;
    /* Walk X-Forwarded-For from the right; the first untrusted hop is the client. */
    size_t len = strlen(xff);
    while (len > 0) {
        size_t end = len;
        while (len > 0 && xff[len - 1] != ',')
            len--;
        size_t start = len;
        while (start < end && isspace((unsigned char)xff[start]))
            start++;
        size_t stop = end;
        while (stop > start && isspace((unsigned char)xff[stop - 1]))
            stop--;
        char item[64];
        size_t n = stop - start;
        if (n == 0 || n >= sizeof(item))
            break; /* malformed: keep the last good hop */
        memcpy(item, xff + start, n);
        item[n] = '\0';
        gw_cidr_t c;
        if (parse_addr(item, &c) != 0)
            break;
        /* A dual-stack proxy writes an IPv4 client as ::ffff:a.b.c.d: the IPv4
         * address, as sa_raw makes of such a peer. Left IPv6, its /64 key is
         * zero for every IPv4 client: one per-IP bucket for them all. */
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (c.family == AF_INET6 && memcmp(c.addr, mapped, 12) == 0) {
            c.family = AF_INET;
            memmove(c.addr, c.addr + 12, 4);
        }
        fam = c.family;
        memcpy(raw, c.addr, 16);
        if (!match_raw(p, fam, raw))
            break;
        if (len > 0)
            len--; /* skip the comma */
    }
    return fam;
}

int gw_client_addr(const gw_proxies_t *p, const struct sockaddr *peer, const char *xff,
                   uint8_t addr[16])
{
    return client_addr(p, peer, xff, addr);
}

size_t gw_client_key(const gw_proxies_t *p, const struct sockaddr *peer, const char *xff,
                     uint8_t *key)
{
    uint8_t raw[16];
    int fam = client_addr(p, peer, xff, raw);
    return fam ? key_of(fam, raw, key) : 0;
}

/*---- Listen addresses ----*/

int gw_addr_parse_listen(const char *hostport, struct sockaddr_storage *ss, char *errbuf,
                     size_t errlen)
{
    char host[128];
    unsigned port;
    if (gw_config_split_hostport(hostport, host, sizeof(host), &port) != 0) {
        snprintf(errbuf, errlen, "bad listen address '%s'", hostport);
        return CM_EINVAL;
    }
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
    } else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
    } else if (strcmp(host, "localhost") == 0) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        a4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    } else {
        snprintf(errbuf, errlen, "listen host '%s' must be an IP address", host);
        return CM_EINVAL;
    }
    return 0;
}
