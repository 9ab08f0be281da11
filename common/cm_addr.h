/*
 * host:port, the one parser of network addresses for every module: the
 * gateway's listeners and brokers, redis:// seeds (cm_url.c), the settle
 * worker's metrics listener and Redis Cluster's MOVED/ASK replies
 * (inventory/inv_cluster.c). One grammar, tightened per caller by flags:
 *
 *   host:port      host is an IPv4 literal (inet_pton) or a DNS name: labels of
 *                  [A-Za-z0-9-] joined by '.', not all digits (that would be a
 *                  bad IPv4), no leading '.' or '-', no "..", at most 253 bytes
 *   [v6]:port      the brackets hold an IPv6 literal (inet_pton), nothing else
 *   port           1 to 5 decimal digits, 1..65535 (0 with CM_HOSTPORT_PORT_ZERO);
 *                  no sign, no spaces
 *
 * Refused unless a flag allows it: a missing port, port 0, an unbracketed
 * IPv6 address, an empty host, a DNS name where an IP literal is required.
 */
#ifndef CM_ADDR_H
#define CM_ADDR_H

#include <stdbool.h>
#include <stddef.h>

typedef enum {
    /* "host" and "[v6]" alone are accepted; *port is then left as the caller set it (its default) */
    CM_HOSTPORT_PORT_OPTIONAL = 1u << 0,
    /* port 0 is accepted (a listener on any free port) */
    CM_HOSTPORT_PORT_ZERO = 1u << 1,
    /* an unbracketed host with two or more ':' is an IPv6 literal whose port follows the last ':'
     * ("fe80::1:7001"), as Redis writes MOVED replies; the port is then required */
    CM_HOSTPORT_BARE_V6 = 1u << 2,
    /* an empty host (":7005", a cluster node that announced no address) is accepted as "" */
    CM_HOSTPORT_EMPTY_HOST = 1u << 3,
    /* the host must be an IP literal (the caller binds it without a resolver) */
    CM_HOSTPORT_NUMERIC = 1u << 4,
} cm_hostport_flag_t;

/*
 * Parses s (NUL-terminated) as host:port under `flags` (cm_hostport_flag_t,
 * or-ed). On success writes the host without brackets to host (hostcap bytes
 * with its NUL) and the port to *port (untouched when the port is optional
 * and absent; port may be NULL), and returns 0. On failure returns CM_EINVAL
 * with what is wrong in errbuf ("bad port '70000' (want 1..65535)"; the
 * caller prefixes its own context) and leaves host and *port unspecified.
 * Pure; thread-safe.
 */
int cm_hostport_parse(const char *s, unsigned flags, char *host, size_t hostcap, int *port,
                      char *errbuf, size_t errlen);

/*
 * true if host (no brackets) is an IPv6 literal, or, unless v6_only, an IPv4
 * literal or a DNS name as cm_hostport_parse accepts them. Pure; thread-safe.
 */
bool cm_host_is_valid(const char *host, bool v6_only);

#endif
