#ifndef GW_CTL_T_H
#define GW_CTL_T_H

/*
 * The control plane's types that no folder below it sees: the admin
 * listener's part of the server, held behind srv->admin.
 */

#include "gateway/base/gw_types.h"

#include <stddef.h>

struct MHD_Daemon;
struct gw_admin_token;
struct gw_audit;

/* The admin listener (gateway/ctl): its daemon, tokens, audit log and answers. */
struct gw_server_admin {
    struct MHD_Daemon *daemon;
    struct gw_admin_token *tokens; /* named admin tokens (gw_admin_token.c) */
    size_t ntokens;
    char token_path[600];
    struct gw_audit *audit; /* versioned changes and the audit log (gw_audit.c) */
    gw_counters_t ctr;      /* the admin API's answers by code (only replies[]) */
};

#endif
