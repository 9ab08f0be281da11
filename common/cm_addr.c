#include "common/cm_addr.h"
#include "common/cm_err.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

bool cm_host_is_valid(const char *host, bool v6_only)
{
    unsigned char addr[16];
    if (inet_pton(AF_INET6, host, addr) == 1)
        return true;
    if (v6_only)
        return false;
    if (inet_pton(AF_INET, host, addr) == 1)
        return true;
    size_t n = strlen(host);
    if (n == 0 || n > 253)
        return false;
    bool alpha = false;
    for (const char *p = host; *p; p++) {
        if (isalpha((unsigned char)*p) || *p == '-')
            alpha = true;
        else if (!isdigit((unsigned char)*p) && *p != '.')
            return false;
    }
    return alpha && host[0] != '.' && host[0] != '-' && !strstr(host, "..");
}

static bool is_ip_literal(const char *host)
{
    unsigned char addr[16];
    return inet_pton(AF_INET6, host, addr) == 1 || inet_pton(AF_INET, host, addr) == 1;
}

/* 1..5 digits, min..65535. */
static int parse_port(const char *p, unsigned flags, int *port, char *errbuf, size_t errlen)
{
    int min = (flags & CM_HOSTPORT_PORT_ZERO) ? 0 : 1;
    size_t n = strlen(p);
    bool digits = n > 0 && n <= 5;
    for (size_t i = 0; digits && i < n; i++)
        digits = isdigit((unsigned char)p[i]) != 0;
    long v = digits ? strtol(p, NULL, 10) : -1;
    if (!digits || v < min || v > 65535) {
        cm_errbuf_set(errbuf, errlen, "bad port '%s' (want %d..65535)", p, min);
        return CM_EINVAL;
    }
    if (port)
        *port = (int)v;
    return 0;
}

int cm_hostport_parse(const char *s, unsigned flags, char *host, size_t hostcap, int *port,
                      char *errbuf, size_t errlen)
{
    const char *h = s, *portp = NULL;
    size_t hl;
    bool bracketed = s[0] == '[';
    if (bracketed) {
        const char *close = strchr(s, ']');
        if (!close) {
            cm_errbuf_set(errbuf, errlen, "unclosed '[' in '%s'", s);
            return CM_EINVAL;
        }
        h = s + 1;
        hl = (size_t)(close - h);
        if (close[1] == ':')
            portp = close + 2;
        else if (close[1] != '\0') {
            cm_errbuf_set(errbuf, errlen, "want ':' and a port after ']' in '%s'", s);
            return CM_EINVAL;
        }
    } else {
        const char *first = strchr(s, ':'), *last = strrchr(s, ':');
        if (first && first != last) { /* two or more ':': a bare IPv6 address */
            if (!(flags & CM_HOSTPORT_BARE_V6)) {
                cm_errbuf_set(errbuf, errlen, "an IPv6 address needs brackets ([::1]:80) in '%s'",
                              s);
                return CM_EINVAL;
            }
        }
        hl = last ? (size_t)(last - s) : strlen(s);
        portp = last ? last + 1 : NULL;
    }
    if (!portp && !(flags & CM_HOSTPORT_PORT_OPTIONAL)) {
        cm_errbuf_set(errbuf, errlen, "no port in '%s' (want HOST:PORT, IPv6 as [::1]:80)", s);
        return CM_EINVAL;
    }
    char tmp[256];
    if (hl >= hostcap || hl >= sizeof(tmp)) {
        cm_errbuf_set(errbuf, errlen, "host too long in '%s'", s);
        return CM_EINVAL;
    }
    memcpy(tmp, h, hl);
    tmp[hl] = '\0';
    if (hl == 0 && !bracketed) {
        if (!(flags & CM_HOSTPORT_EMPTY_HOST)) {
            cm_errbuf_set(errbuf, errlen, "no host in '%s'", s);
            return CM_EINVAL;
        }
    } else if (!cm_host_is_valid(tmp, bracketed || strchr(tmp, ':'))) {
        cm_errbuf_set(errbuf, errlen,
                      bracketed ? "'%s' is not an IPv6 address" : "'%s' is not an IP address or host name",
                      tmp);
        return CM_EINVAL;
    } else if ((flags & CM_HOSTPORT_NUMERIC) && !is_ip_literal(tmp)) {
        cm_errbuf_set(errbuf, errlen, "'%s' is not an IP address (no names here)", tmp);
        return CM_EINVAL;
    }
    if (portp && parse_port(portp, flags, port, errbuf, errlen) != 0)
        return CM_EINVAL;
    memcpy(host, tmp, hl + 1);
    return 0;
}
