/*
 * Versioned admin changes and the append-only audit log.
 *
 * Every change made through the admin API (sales, stock, limits, rules,
 * degrade level, rollbacks) gets the next version number and one JSON line in
 * <data-dir>/audit.log, written and fdatasync'ed before the API answers:
 *   {"version":N,"at":"<RFC 3339>","who":"<token name>","what":"limits.patch",
 *    "target":"...","old":{...},"new":{...},"config":{"limits":{...},"rules":[...]}}
 * "config" is the set of limits and rules in force after the change, so that
 * POST /admin/v1/config/rollback can restore the set of any version. Stock
 * and sales are never rolled back (units may have been sold since): they are
 * audited only. The version counter continues across restarts: from the
 * log's last line that parses with a version (the writer's versions never go
 * back), read from the end of the file, so that opening costs the same
 * whatever the log's length; a torn last line is then cut off. Each start
 * appends a "start" line with the configured limits, as the process then
 * runs with those.
 *
 * Callers serialise changes (the admin API's lock). The log's own mutex covers
 * one append (write, fdatasync, the cut of a failed one); a reader holds it only
 * to read the file's length, and reads the lines before it without: a GET of
 * the audit never holds up a change. Admin threads only.
 */
#ifndef GW_AUDIT_H
#define GW_AUDIT_H

#include <stddef.h>
#include <stdint.h>

struct gw_server;
typedef struct gw_audit gw_audit_t;

/* Opens (creates) the log and appends the "start" line. Returns 0 or a negative cm_err_t. */
int gw_audit_open(struct gw_server *srv, char *errbuf, size_t errlen);
void gw_audit_close(struct gw_server *srv);

/*
 * Appends one change; old_json and new_json are jansson values (stolen, may
 * be NULL for null). Adds the current limits and rules as "config". Returns
 * the new version once its line is written and fdatasync'ed, or 0 when it
 * could not be (logged; the change stays: it was already applied). A failed
 * append is cut back off the log and its version given to the next change; a
 * version is never on two lines (see gw_audit.c).
 */
uint64_t gw_audit_record(struct gw_server *srv, const char *who, const char *what,
                         const char *target, void *old_json, void *new_json);
/* The current version (0 before any line). Thread-safe. */
uint64_t gw_audit_version(struct gw_server *srv);
/*
 * The entries with version > since, oldest first, at most `limit` (the
 * newest ones when more match), as a new jansson array; NULL on I/O error.
 * Lines that do not parse (a torn one) are skipped. Reads the log from its end
 * and parses only lines that can match: O(bytes read), which stop once `limit`
 * entries are found.
 */
void *gw_audit_list(struct gw_server *srv, uint64_t since, size_t limit);
/*
 * The "config" object recorded at `version` in *config (a new reference), NULL
 * when no line of that version has one. 0, or CM_EIO (*config NULL) when the
 * log cannot be read.
 */
int gw_audit_config_at(struct gw_server *srv, uint64_t version, void **config);

#endif
