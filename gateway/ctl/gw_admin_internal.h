/*
 * The admin listener's parts (ctl only): its TLS files (gw_admin_tls.c) and
 * its tokens' sources (gw_admin_token.c), which gw_admin.c's start and check
 * load. Single-threaded init, but gw__admin_tls_client_verified (any admin
 * thread).
 */
#ifndef GW_ADMIN_INTERNAL_H
#define GW_ADMIN_INTERNAL_H

#include "gateway/base/gw_admin_route.h"
#include "gateway/base/gw_types.h"

#include <stdbool.h>
#include <stddef.h>

struct MHD_Connection;

/* The PEM texts libmicrohttpd serves from (it keeps pointers: they live until
 * gw_admin_stop). One admin listener per process. */
typedef struct gw_admin_tls {
    char *cert, *key, *ca;
    size_t key_cap;
} gw_admin_tls_t;
extern gw_admin_tls_t gw__admin_tls;

/* Loads the configured PEM files into gw__admin_tls (none: plain HTTP).
 * Returns 0 or a negative CM_E* (errbuf says why). */
int gw__admin_tls_load(const gw_config_t *cfg, char *errbuf, size_t errlen);
/* Frees gw__admin_tls (the key's secret page wiped). */
void gw__admin_tls_free(void);
/* With server.admin_tls_client_ca: the connection's client certificate
 * chains to the CAs. */
bool gw__admin_tls_client_verified(struct MHD_Connection *c);

/* Adds a token (copied into the server's secret page of tokens). */
void gw__admin_token_add(gw_server_t *srv, const char *name, gw_role_t role, const char *tok,
                         size_t len);
/* The named tokens of server.admin_tokens_file (see gw_admin_token.c).
 * Returns 0 or a negative CM_E* (errbuf says why). */
int gw__admin_tokens_load(gw_server_t *srv, bool quiet, char *errbuf, size_t errlen);
/* Reads or creates <data-dir>/admin.token (0600). Never logs the token. */
int gw__admin_token_make(gw_server_t *srv, char *errbuf, size_t errlen);
/* The token of server.admin_token_file. Returns 0 or a negative CM_E*. */
int gw__admin_token_file_load(gw_server_t *srv, bool quiet, char *errbuf, size_t errlen);

#endif
