/*
 * The checks a start runs before it opens anything, shared by the start
 * (gw_server_start) and --check-config, so that a configuration the check
 * passes does not then fail to start short of binding its ports.
 */
#ifndef GW_PREFLIGHT_H
#define GW_PREFLIGHT_H

#include "gateway/gw_config.h"

#include <stddef.h>

/*
 * Everything a start checks before it binds, without changing anything: the
 * data dir exists as a writable directory or can be created, the listen
 * addresses parse, server.trusted_proxies parses, <data-dir>/status.key (when
 * present) is a key of the owner's alone, and the admin listener's tokens and
 * TLS files are as gw_admin_start needs them. Returns 0 or a negative CM_E*
 * with the reason in errbuf. Thread-safe as long as nothing starts the admin
 * listener at the same time (its TLS state is the process's).
 */
int gw_server_check(const gw_config_t *cfg, char *errbuf, size_t errlen);

/* The admin listener's part of gw_server_check (gw_admin.c): token files,
 * server.admin_listen and the rules on it, the TLS files. Loads nothing it
 * keeps. Returns 0 or a negative CM_E* (errbuf says why). */
int gw_admin_check(const gw_config_t *cfg, char *errbuf, size_t errlen);

/* <data-dir>/status.key, when present, read as the start reads it (gw_token.c):
 * a regular file, no access for group or others, 64 hex digits. Absent: 0 (the
 * start makes one). Returns 0 or a negative CM_E* (errbuf says why). */
int gw_status_key_check(const gw_config_t *cfg, char *errbuf, size_t errlen);

#endif
