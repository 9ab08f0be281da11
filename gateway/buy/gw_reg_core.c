/*
 * Registration's decisions (gw_reg_core.h) with no I/O, and the pure helpers
 * of gw_reg.h. The rules are docs/design.md "Registration"'s; the ones easy to
 * break:
 *   - a new person is answered ADDED only once its line is written (a failed
 *     line: the error, not in the set, a retry registers it)
 *   - under fsync durability a person joins the set at the write, and an
 *     answer, a 200 for a person found while the log holds bytes no fdatasync
 *     covered included, waits for the fdatasync that covers it
 *   - the window is the sale's machine's: a registration reaches this core
 *     inside it; a fleet's store decides in one step, its answer is the
 *     registration's
 */
#include "gateway/buy/gw_reg_core.h"
#include "gateway/buy/gw_reg.h"

#include "common/cm_err.h"
#include "common/cm_plant.h"
#include "inventory/inv.h"

#include <string.h>

/*---- pure helpers (gw_reg.h) ----*/

int gw_reg_window_check(int64_t opens_ms, int64_t closes_ms, int64_t window_ms,
                        int64_t lottery_opens_ms, char *errbuf, size_t errlen)
{
    if (opens_ms == 0 && closes_ms == 0)
        return 0;
    if (opens_ms <= 0 || closes_ms <= 0) {
        cm_errbuf_set(errbuf, errlen,
                      "registration_opens_at and registration_closes_at go together: set both "
                      "or neither");
        return CM_EINVAL;
    }
    if (closes_ms <= opens_ms) {
        cm_errbuf_set(errbuf, errlen, "registration_closes_at must be after registration_opens_at");
        return CM_EINVAL;
    }
    if (window_ms <= 0) {
        cm_errbuf_set(errbuf, errlen,
                      "registration needs a start-window lottery (fair_window_ms > 0): the "
                      "lottery is what takes only registered persons");
        return CM_EINVAL;
    }
    if (closes_ms > lottery_opens_ms) {
        cm_errbuf_set(errbuf, errlen,
                      "registration_closes_at must be no later than the lottery window's opening "
                      "(starts_at - fair_early_ms)");
        return CM_EINVAL;
    }
    return 0;
}

void gw_reg_page(uint64_t total, uint64_t cursor, uint64_t limit, uint64_t *start, uint64_t *end)
{
    *start = cursor < total ? cursor : total;
    *end = limit < total - *start ? *start + limit : total;
}

/*---- the core ----*/

void gw_reg_core_init(gw_reg_core_t *c)
{
    *c = (gw_reg_core_t){0};
}

static void answer(gw_reg_out_t *out, int a)
{
    out->answered = true;
    out->answer = a;
}

static void on_register(gw_reg_core_t *c, const gw_reg_ev_t *ev, gw_reg_out_t *out)
{
    if (ev->store_decides) { /* the store's one script decides: nothing held here */
        out->actions = GW_REG_DO_STORE;
        return;
    }
    if (c->appending)
        return; /* one at a time: the shell holds the set's lock over a registration */
    /* planted: a person registered already is taken as new (a second line, a
     * second chance) */
    if (ev->found && !CM_PLANT(REG_TWO_PER_PERSON)) {
        if (ev->sync && !ev->covered) {
            out->actions = GW_REG_DO_SYNC;
            out->held = GW_REG_ALREADY;
            return;
        }
        answer(out, GW_REG_ALREADY);
        return;
    }
    /* planted: the cap lets one person more in */
    if (CM_PLANT(REG_CAP_ONE_MORE) ? c->n > ev->cap : c->n >= ev->cap) {
        answer(out, GW_REG_FULL);
        return;
    }
    c->appending = true;
    c->sync = ev->sync;
    out->actions = GW_REG_DO_APPEND;
}

static void on_appended(gw_reg_core_t *c, const gw_reg_ev_t *ev, gw_reg_out_t *out)
{
    c->appending = false;
    if (ev->rc != 0) {
        answer(out, ev->rc < 0 ? ev->rc : CM_EIO);
        return;
    }
    c->n++;
    out->actions = GW_REG_DO_ADD;
    /* planted: fsync durability's 201 goes out at the write, before the
     * fdatasync (a power cut loses a registration answered 201) */
    if (c->sync && !CM_PLANT(REG_ANSWER_UNSYNCED)) {
        out->actions |= GW_REG_DO_SYNC;
        out->held = GW_REG_ADDED;
        return;
    }
    answer(out, GW_REG_ADDED);
}

static void on_line(gw_reg_core_t *c, const gw_reg_ev_t *ev, gw_reg_out_t *out)
{
    /* one record, no NUL inside, an id's characters */
    if (ev->len < 1 || ev->len > INV_USER_ID_MAX || memchr(ev->line, '\0', ev->len) ||
        !inv_id_valid(ev->line, ev->len, INV_USER_ID_MAX)) {
        out->bad = true;
        return;
    }
    if (ev->found)
        return;
    c->n++;
    out->actions = GW_REG_DO_ADD;
}

void gw_reg_core_step(gw_reg_core_t *c, const gw_reg_ev_t *ev, gw_reg_out_t *out)
{
    *out = (gw_reg_out_t){0};
    switch (ev->kind) {
    case GW_REG_EV_REGISTER:
        on_register(c, ev, out);
        break;
    case GW_REG_EV_APPENDED:
        if (c->appending)
            on_appended(c, ev, out);
        break;
    case GW_REG_EV_SYNCED: /* no state: each held answer comes back with its outcome */
        answer(out, ev->rc == 0 ? ev->held : ev->rc < 0 ? ev->rc : CM_EIO);
        break;
    case GW_REG_EV_STORED:
        answer(out, ev->stored);
        if (ev->stored == GW_REG_ADDED)
            c->n++;
        break;
    case GW_REG_EV_LINE:
        if (!c->appending)
            on_line(c, ev, out);
        break;
    }
}
