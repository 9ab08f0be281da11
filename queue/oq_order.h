/*
 * The order record and its one codec: every binary that writes or reads an
 * order (the gateway's spool and relay, flashgate-spool, flashgate-settle,
 * flashgate-load's audit) uses this struct, this encoder and this decoder, so
 * the bounds of a field are written once (here) and cannot drift apart.
 *
 * One record says one thing about one order; `type` says what:
 *
 *   order    {"order_id","sale_id","user_id","person"?,"qty","accepted_at","node","idem_key"?,
 *            "key_fp"?}
 *            the accepted order (spool ORDER record, kafka.topic). No "type"
 *            member is written; "type":"order" is accepted.
 *   cancel   {"type":"cancel","order_id","sale_id","user_id","qty","reason"}
 *            an operator's cancel command (spool EVENT, kafka.topic)
 *   outcome  {"type":"outcome","order_id","sale_id","user_id","qty","status","reason"?,"at"}
 *            what settlement decided (kafka.outcomes_topic)
 *   release  {"type":"release","order_id","sale_id","user_id","qty","status","reason","at"}
 *            units given back by compensation (spool EVENT, replayed at start)
 *
 * Bounds (the decoder rejects anything else, naming the field):
 *   order_id            1..INV_ORDER_ID_MAX of [A-Za-z0-9._-] (inv_id_valid)
 *   sale_id, user_id    1..64 of [A-Za-z0-9._-] (inv_id_valid); user_id may be
 *                       "" or absent outside an order: "whoever holds the
 *                       order" (a cancel from a gateway, whose status table
 *                       keeps no user ids; the inventory releases by order id)
 *   person              absent, or 1..64 of [A-Za-z0-9._-] other than user_id:
 *                       the person whose per-user mark the order holds in the
 *                       inventory (identity.person_claim) when it is not the
 *                       account (user_id); any type may carry it (an outcome
 *                       or release repeats its order's). Written only when it
 *                       differs from user_id; a reader that predates it sees
 *                       the account alone (docs/identity.md "Persons")
 *   idem_key            absent, or 1..128 printable ASCII without spaces
 *   key_fp              absent, or 1..OQ_KEY_FP_MAX, only in an order with an
 *                       idem_key: a keyed fingerprint of the Idempotency-Key as
 *                       the client sent it (inv_idem_fp_stamp), where idem_key
 *                       is identity's scoped form of it; never the key itself
 *                       (the encoder leaves it out of any other record)
 *   qty                 order: 1..OQ_QTY_MAX (what the buy path accepts);
 *                       other types: 0..OQ_QTY_MAX, absent = 0 (a cancel may
 *                       name an order this node never saw)
 *   accepted_at         integer milliseconds since the Unix epoch,
 *                       0..OQ_TIME_MAX_MS; required for an order
 *   node                0..CM_ID_NODE_MAX; absent = OQ_NODE_UNKNOWN
 *   status              outcome: settled|failed|cancelled; release: failed|cancelled
 *   at                  like accepted_at; absent = 0
 *   reason              0..OQ_REASON_MAX bytes of UTF-8 without NUL
 * Unknown members are ignored (a newer writer may add some); duplicate
 * members make the record invalid.
 */
#ifndef OQ_ORDER_H
#define OQ_ORDER_H

#include "inventory/inv.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The topics' default names, the one place they are written. */
#define OQ_TOPIC_ORDERS "flashgate.orders"     /* orders and cancel commands, key = sale id */
#define OQ_TOPIC_OUTCOMES "flashgate.outcomes" /* settlement outcomes, key = sale id */

#define OQ_QTY_MAX 1000u                 /* units in one order: the buy path's bound */
#define OQ_REASON_MAX 255                /* bytes of a failure or cancel reason */
#define OQ_NODE_UNKNOWN UINT32_MAX       /* node not recorded (a cancel before its order) */
#define OQ_TIME_MAX_MS 253402300799999LL /* 9999-12-31T23:59:59.999Z */
#define OQ_KEY_FP_MAX ((1LL << 52) - 1)  /* inv_idem_fp_stamp's range */
/* Room for any encoded record: every reason byte escaped as \u00XX, ids plain. */
#define OQ_ORDER_JSON_MAX 2560

/*---- Order status: the one state machine, its names in one table ----*/

#define OQ_STATUS_MAP(XX)                                                                        \
    XX(QUEUED, "queued")                                                                         \
    XX(SETTLED, "settled")                                                                       \
    XX(FAILED, "failed")                                                                         \
    XX(CANCELLED, "cancelled")

typedef enum {
#define XX(n, s) OQ_STATUS_##n,
    OQ_STATUS_MAP(XX)
#undef XX
        OQ_STATUS_COUNT
} oq_status_t;

/* "queued", "settled", "failed", "cancelled" ("unknown" out of range). Thread-safe. */
const char *oq_status_name(oq_status_t s);
/* Parses a status name of len bytes; returns an oq_status_t or -1. Thread-safe. */
int oq_status_parse(const char *s, size_t len);
/* True for the statuses that give the units back (failed, cancelled). */
static inline bool oq_status_releases(oq_status_t s)
{
    return s == OQ_STATUS_FAILED || s == OQ_STATUS_CANCELLED;
}

/*---- The record ----*/

typedef enum {
    OQ_MSG_ORDER = 0,
    OQ_MSG_CANCEL = 1,
    OQ_MSG_OUTCOME = 2,
    OQ_MSG_RELEASE = 3,
} oq_msg_type_t;

/* "order", "cancel", "outcome", "release". Thread-safe. */
const char *oq_msg_type_name(oq_msg_type_t t);

typedef struct oq_order {
    oq_msg_type_t type;
    char order_id[INV_ORDER_ID_MAX + 1];
    char sale_id[INV_SALE_ID_MAX + 1];
    char user_id[INV_USER_ID_MAX + 1];   /* the account */
    char person[INV_USER_ID_MAX + 1];    /* "" = the person is user_id (oq_order_person) */
    char idem_key[INV_IDEM_KEY_MAX + 1]; /* "" = none */
    uint64_t key_fp;        /* inv_idem_fp_stamp of the raw key; 0 = none */
    uint32_t qty;
    uint32_t node_id;       /* OQ_NODE_UNKNOWN = not recorded */
    int64_t accepted_at_ms; /* ms since the epoch; 0 = unknown (not an order record) */
    oq_status_t status;     /* outcome, release */
    int64_t at_ms;          /* outcome, release: when it was decided */
    char reason[OQ_REASON_MAX + 1]; /* cancel, outcome, release; "" = none */
    /* release: a give-back (inv_giveback: the order was never answered 202
     * by this gateway), written "giveback":true; false for every other type */
    bool giveback;
} oq_order_t;

/* The person whose per-user mark the order holds in the inventory: o->person,
 * or o->user_id when that is "". What inv_replay, inv_release and inv_giveback
 * take as their user. Thread-safe. */
static inline const char *oq_order_person(const oq_order_t *o)
{
    return o->person[0] ? o->person : o->user_id;
}

/* Sets o->person to person, or "" when it is o->user_id or NULL (the rule
 * oq_order_check holds the field to). Call after user_id is set. */
void oq_order_person_set(oq_order_t *o, const char *person);

/*
 * Checks every field of `o` against the bounds above. Returns 0, or
 * CM_EINVAL with "<field>: <rule>" in errbuf (may be NULL). Thread-safe.
 */
int oq_order_check(const oq_order_t *o, char *errbuf, size_t errlen);

/*
 * Encodes `o` as one line of compact JSON into buf, NUL-terminated. Returns
 * the length written (without the NUL), or CM_EINVAL if `o` fails
 * oq_order_check (nothing the decoder would refuse is ever written) or buf is
 * too small (OQ_ORDER_JSON_MAX always suffices). No allocation: it is on the
 * hot path (every accepted order is spooled before its 202). Thread-safe.
 */
int oq_order_encode(const oq_order_t *o, char *buf, size_t len);

/*
 * Decodes one record of len bytes (no NUL needed) into *out and checks it
 * (oq_order_check). Returns 0, or CM_EINVAL with the reason in errbuf ("qty:
 * must be an integer of 1..1000"; errbuf may be NULL); *out is then
 * unspecified. Never reads past buf + len. Thread-safe.
 */
int oq_order_decode(const char *buf, size_t len, oq_order_t *out, char *errbuf, size_t errlen);

/*
 * Copies src into dst (cap bytes with the NUL, at most OQ_REASON_MAX + 1) as a
 * reason oq_order_check accepts: cut before the first character that does not
 * fit whole, a byte that is not UTF-8 written as '?'. For text from outside
 * the codec: a database's error message, a reason read back from a table.
 * Returns the length written. Thread-safe.
 */
size_t oq_reason_copy(char *dst, size_t cap, const char *src);

/*
 * The two halves of oq_order_decode, for tests and the fuzz target:
 * oq_order_decode_fast reads only the encoder's exact form (no jansson, no
 * allocation) and returns -1 for anything else; oq_order_decode_json is the
 * jansson decoder, the judge: whatever the fast half accepts, it accepts with
 * the same fields.
 */
int oq_order_decode_fast(const char *buf, size_t len, oq_order_t *out);
int oq_order_decode_json(const char *buf, size_t len, oq_order_t *out, char *errbuf,
                         size_t errlen);

#endif
