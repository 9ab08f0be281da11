/*
 * The order record's codec (see oq_order.h for the format and its bounds).
 *
 * oq_order_encode is on the HTTP hot path (every accepted order is encoded
 * into the spool before its 202), so it writes by hand into the caller's
 * buffer: no malloc, no json_t (jansson's json_dumpb would build a json_t,
 * five allocations, per order). The unit test decodes every output with the
 * decoder below, which parses with jansson, so the hand-written encoder
 * cannot drift from real JSON or from the bounds.
 * oq_order_decode (replay, the gateway's outcome consumer, settlement, audit)
 * first tries a reader of exactly the encoder's form; anything else goes to
 * jansson, which stays the one judge (oq_order_decode_json).
 */
#include "queue/oq_order.h"

#include "common/cm_err.h"
#include "common/cm_id.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

/*---- names ----*/

static const char *const status_names[OQ_STATUS_COUNT] = {
#define XX(n, s) [OQ_STATUS_##n] = s,
    OQ_STATUS_MAP(XX)
#undef XX
};

const char *oq_status_name(oq_status_t s)
{
    return (unsigned)s < OQ_STATUS_COUNT ? status_names[s] : "unknown";
}

int oq_status_parse(const char *s, size_t len)
{
    if (!s)
        return -1;
    for (int i = 0; i < OQ_STATUS_COUNT; i++)
        if (strlen(status_names[i]) == len && memcmp(status_names[i], s, len) == 0)
            return i;
    return -1;
}

static const char *const type_names[] = {"order", "cancel", "outcome", "release"};
#define NTYPES (sizeof(type_names) / sizeof(type_names[0]))

const char *oq_msg_type_name(oq_msg_type_t t)
{
    return (unsigned)t < NTYPES ? type_names[t] : "unknown";
}

/*---- checks ----*/

#define FAIL(...)                                                                                \
    do {                                                                                         \
        cm_errbuf_set(errbuf, errlen, __VA_ARGS__);                                              \
        return CM_EINVAL;                                                                        \
    } while (0)

/* Length of the valid UTF-8 sequence at p (n bytes left), or 0 if invalid. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
    size_t k;
    uint32_t cp;
    if (p[0] < 0x80)
        return 1;
    if ((p[0] & 0xe0) == 0xc0) {
        k = 2;
        cp = p[0] & 0x1fu;
    } else if ((p[0] & 0xf0) == 0xe0) {
        k = 3;
        cp = p[0] & 0x0fu;
    } else if ((p[0] & 0xf8) == 0xf0) {
        k = 4;
        cp = p[0] & 0x07u;
    } else {
        return 0;
    }
    if (k > n)
        return 0;
    for (size_t i = 1; i < k; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3fu);
    }
    static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min[k] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return k;
}

static bool str_fits(const char *s, size_t cap)
{
    return memchr(s, '\0', cap) != NULL;
}

void oq_order_person_set(oq_order_t *o, const char *person)
{
    if (!person || strcmp(person, o->user_id) == 0)
        o->person[0] = '\0';
    else
        snprintf(o->person, sizeof(o->person), "%s", person);
}

int oq_order_check(const oq_order_t *o, char *errbuf, size_t errlen)
{
    if ((unsigned)o->type >= NTYPES)
        FAIL("type: must be order, cancel, outcome or release");
    if (!str_fits(o->order_id, sizeof(o->order_id)) ||
        !inv_id_valid(o->order_id, strlen(o->order_id), INV_ORDER_ID_MAX))
        FAIL("order_id: must be 1..%d of [A-Za-z0-9._-]", INV_ORDER_ID_MAX);
    if (!str_fits(o->sale_id, sizeof(o->sale_id)) ||
        !inv_id_valid(o->sale_id, strlen(o->sale_id), INV_SALE_ID_MAX))
        FAIL("sale_id: must be 1..%d of [A-Za-z0-9._-]", INV_SALE_ID_MAX);
    /* only an order must name its user: a cancel from a status table that keeps
     * no user ids says "" (whoever holds the order), and its outcome and
     * release repeat it */
    if (!str_fits(o->user_id, sizeof(o->user_id)) ||
        ((o->type == OQ_MSG_ORDER || o->user_id[0]) &&
         !inv_id_valid(o->user_id, strlen(o->user_id), INV_USER_ID_MAX)))
        FAIL("user_id: must be 1..%d of [A-Za-z0-9._-]%s", INV_USER_ID_MAX,
             o->type == OQ_MSG_ORDER ? "" : " or \"\"");
    if (!str_fits(o->person, sizeof(o->person)) ||
        (o->person[0] && !inv_id_valid(o->person, strlen(o->person), INV_USER_ID_MAX)))
        FAIL("person: must be absent or 1..%d of [A-Za-z0-9._-]", INV_USER_ID_MAX);
    if (o->person[0] && strcmp(o->person, o->user_id) == 0)
        FAIL("person: absent when it is the user_id");
    if (!str_fits(o->idem_key, sizeof(o->idem_key)) ||
        (o->idem_key[0] && !inv_idem_key_valid(o->idem_key, strlen(o->idem_key))))
        FAIL("idem_key: must be 1..%d printable ASCII characters without spaces",
             INV_IDEM_KEY_MAX);
    /* a key_fp elsewhere than in an order with an idem_key is not written
     * (the records made from an order clear its key, not its fingerprint) */
    if (o->key_fp > (uint64_t)OQ_KEY_FP_MAX)
        FAIL("key_fp: must be an integer of 1..%lld", (long long)OQ_KEY_FP_MAX);
    uint32_t qmin = o->type == OQ_MSG_ORDER ? 1 : 0;
    if (o->qty < qmin || o->qty > OQ_QTY_MAX)
        FAIL("qty: must be an integer of %u..%u", qmin, OQ_QTY_MAX);
    if (o->node_id != OQ_NODE_UNKNOWN && o->node_id > CM_ID_NODE_MAX)
        FAIL("node: must be an integer of 0..%u", CM_ID_NODE_MAX);
    if (o->accepted_at_ms < 0 || o->accepted_at_ms > OQ_TIME_MAX_MS)
        FAIL("accepted_at: must be milliseconds since the epoch (0..%lld)",
             (long long)OQ_TIME_MAX_MS);
    if (o->type == OQ_MSG_ORDER && o->accepted_at_ms == 0)
        FAIL("accepted_at: required for an order");
    if (o->at_ms < 0 || o->at_ms > OQ_TIME_MAX_MS)
        FAIL("at: must be milliseconds since the epoch (0..%lld)", (long long)OQ_TIME_MAX_MS);
    if (o->type == OQ_MSG_OUTCOME &&
        (o->status != OQ_STATUS_SETTLED && !oq_status_releases(o->status)))
        FAIL("status: an outcome is settled, failed or cancelled");
    if (o->type == OQ_MSG_RELEASE && !oq_status_releases(o->status))
        FAIL("status: a release is failed or cancelled");
    if (o->giveback && o->type != OQ_MSG_RELEASE)
        FAIL("giveback: only a release is one");
    if (!str_fits(o->reason, sizeof(o->reason)))
        FAIL("reason: at most %d bytes", OQ_REASON_MAX);
    const unsigned char *r = (const unsigned char *)o->reason;
    for (size_t n = strlen(o->reason), k; n > 0; r += k, n -= k)
        if ((k = utf8_len(r, n)) == 0)
            FAIL("reason: must be UTF-8");
    return 0;
}

size_t oq_reason_copy(char *dst, size_t cap, const char *src)
{
    size_t n = 0, left = src ? strlen(src) : 0;
    if (cap == 0)
        return 0;
    if (cap > OQ_REASON_MAX + 1)
        cap = OQ_REASON_MAX + 1;
    while (left > 0) {
        size_t k = utf8_len((const unsigned char *)src, left);
        size_t w = k ? k : 1;
        if (n + w >= cap)
            break; /* a character is kept whole or not at all */
        if (k)
            memcpy(dst + n, src, k);
        else
            dst[n] = '?';
        n += w;
        src += w;
        left -= w;
    }
    dst[n] = '\0';
    return n;
}

/*---- encoder ----*/

typedef struct {
    char *p;
    size_t len, cap;
    bool overflow;
} jbuf_t;

static void jb_raw(jbuf_t *b, const char *s, size_t n)
{
    if (b->len + n >= b->cap) { /* keep room for the NUL */
        b->overflow = true;
        return;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

/* A JSON string. Control characters are escaped; UTF-8 passes as is; a byte
 * that is not UTF-8 (never in a checked record) becomes U+FFFD. */
static void jb_str(jbuf_t *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    jb_raw(b, "\"", 1);
    const char *run = s;
    size_t left = strlen(s);
    while (left > 0) {
        unsigned char c = (unsigned char)*s;
        size_t k = c >= 0x80 ? utf8_len((const unsigned char *)s, left) : 1;
        if (k > 1 || (c >= 0x20 && c < 0x7f && c != '"' && c != '\\')) {
            s += k;
            left -= k;
            continue;
        }
        jb_raw(b, run, (size_t)(s - run));
        if (k == 0) {
            jb_raw(b, "\\ufffd", 6);
        } else if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            jb_raw(b, esc, 2);
        } else {
            char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            jb_raw(b, esc, 6);
        }
        s++;
        left--;
        run = s;
    }
    jb_raw(b, run, (size_t)(s - run));
    jb_raw(b, "\"", 1);
}

/*
 * An id oq_order_check passed: [A-Za-z0-9._-] only (or "" for the user of a
 * cancel), nothing a JSON string escapes, so it is copied whole. jb_str's
 * byte-by-byte walk of the three ids was ~450 instructions of every accepted
 * order (callgrind: python3 bench/profile.py build acc calls).
 */
static void jb_id(jbuf_t *b, const char *s)
{
    jb_raw(b, "\"", 1);
    jb_raw(b, s, strlen(s));
    jb_raw(b, "\"", 1);
}

static void jb_u64(jbuf_t *b, uint64_t v)
{
    char tmp[24];
    size_t n = 0;
    do {
        tmp[sizeof(tmp) - 1 - n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    jb_raw(b, tmp + sizeof(tmp) - n, n);
}

static void jb_i64(jbuf_t *b, int64_t v)
{
    if (v < 0) {
        jb_raw(b, "-", 1);
        jb_u64(b, (uint64_t)0 - (uint64_t)v);
    } else {
        jb_u64(b, (uint64_t)v);
    }
}

int oq_order_encode(const oq_order_t *o, char *buf, size_t len)
{
    /* What is written must read back: a record the decoder refused would make
     * the spool unreadable from there on. ~0.2 us per order. */
    if (oq_order_check(o, NULL, 0) != 0)
        return CM_EINVAL;
    jbuf_t b = {buf, 0, len, len == 0};
#define LIT(s) jb_raw(&b, s, sizeof(s) - 1)
    if (o->type == OQ_MSG_ORDER) {
        LIT("{\"order_id\":");
    } else {
        LIT("{\"type\":\"");
        const char *t = oq_msg_type_name(o->type);
        jb_raw(&b, t, strlen(t));
        LIT("\",\"order_id\":");
    }
    jb_id(&b, o->order_id);
    LIT(",\"sale_id\":");
    jb_id(&b, o->sale_id);
    LIT(",\"user_id\":");
    jb_id(&b, o->user_id);
    if (o->person[0]) { /* oq_order_check: never user_id itself */
        LIT(",\"person\":");
        jb_id(&b, o->person);
    }
    LIT(",\"qty\":");
    jb_u64(&b, o->qty);
    if (o->type == OQ_MSG_ORDER || o->accepted_at_ms != 0) {
        LIT(",\"accepted_at\":");
        jb_i64(&b, o->accepted_at_ms);
    }
    if (o->node_id != OQ_NODE_UNKNOWN) {
        LIT(",\"node\":");
        jb_u64(&b, o->node_id);
    }
    if (o->idem_key[0]) {
        LIT(",\"idem_key\":");
        jb_str(&b, o->idem_key);
    }
    if (o->key_fp && o->type == OQ_MSG_ORDER && o->idem_key[0]) {
        LIT(",\"key_fp\":");
        jb_u64(&b, o->key_fp);
    }
    if (o->type == OQ_MSG_OUTCOME || o->type == OQ_MSG_RELEASE) {
        LIT(",\"status\":\"");
        const char *s = oq_status_name(o->status);
        jb_raw(&b, s, strlen(s));
        LIT("\",\"at\":");
        jb_i64(&b, o->at_ms);
    }
    if (o->giveback)
        LIT(",\"giveback\":true");
    if (o->type != OQ_MSG_ORDER && (o->reason[0] || o->type == OQ_MSG_CANCEL)) {
        LIT(",\"reason\":");
        jb_str(&b, o->reason);
    }
    LIT("}");
#undef LIT
    if (b.overflow)
        return CM_EINVAL;
    buf[b.len] = '\0';
    return (int)b.len;
}

/*---- decoder ----*/

/* A string member into dst (cap bytes with the NUL). Absent leaves dst "". */
static int get_str(json_t *root, const char *key, char *dst, size_t cap, bool required,
                   char *errbuf, size_t errlen)
{
    json_t *v = json_object_get(root, key);
    dst[0] = '\0';
    if (v == NULL) {
        if (required)
            FAIL("%s: missing", key);
        return 0;
    }
    if (!json_is_string(v))
        FAIL("%s: must be a string", key);
    size_t n = json_string_length(v);
    const char *s = json_string_value(v);
    if (n >= cap)
        FAIL("%s: longer than %zu bytes", key, cap - 1);
    if (memchr(s, '\0', n) != NULL)
        FAIL("%s: holds a NUL", key);
    memcpy(dst, s, n);
    dst[n] = '\0';
    return 0;
}

/* An integer member in [min, max] into *out. Absent leaves *out as is. */
static int get_int(json_t *root, const char *key, json_int_t min, json_int_t max, bool required,
                   json_int_t *out, char *errbuf, size_t errlen)
{
    json_t *v = json_object_get(root, key);
    if (v == NULL) {
        if (required)
            FAIL("%s: missing", key);
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max)
        FAIL("%s: must be an integer of %lld..%lld", key, (long long)min, (long long)max);
    *out = json_integer_value(v);
    return 0;
}

int oq_order_decode_json(const char *buf, size_t len, oq_order_t *out, char *errbuf,
                         size_t errlen)
{
    json_error_t jerr;
    json_t *root = buf ? json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr) : NULL;
    if (root == NULL)
        FAIL("not JSON: %s", buf ? jerr.text : "no data");
    int rc = CM_EINVAL;
    oq_order_t o;
    memset(&o, 0, sizeof(o));
    o.node_id = OQ_NODE_UNKNOWN;
    if (!json_is_object(root)) {
        cm_errbuf_set(errbuf, errlen, "not a JSON object");
        goto out;
    }
    json_t *type = json_object_get(root, "type");
    if (type) {
        const char *t = json_string_value(type);
        size_t i = 0;
        while (t && i < NTYPES && strcmp(t, type_names[i]) != 0)
            i++;
        if (!t || i == NTYPES) {
            cm_errbuf_set(errbuf, errlen, "type: must be order, cancel, outcome or release");
            goto out;
        }
        o.type = (oq_msg_type_t)i;
    }
    bool is_order = o.type == OQ_MSG_ORDER;
    bool has_status = o.type == OQ_MSG_OUTCOME || o.type == OQ_MSG_RELEASE;
    json_int_t qty = 0, at = 0, acc = 0, node = -1, kfp = 0;
    if (get_str(root, "order_id", o.order_id, sizeof(o.order_id), true, errbuf, errlen) ||
        get_str(root, "sale_id", o.sale_id, sizeof(o.sale_id), true, errbuf, errlen) ||
        get_str(root, "user_id", o.user_id, sizeof(o.user_id), is_order, errbuf, errlen) ||
        get_str(root, "person", o.person, sizeof(o.person), false, errbuf, errlen) ||
        get_str(root, "idem_key", o.idem_key, sizeof(o.idem_key), false, errbuf, errlen) ||
        get_str(root, "reason", o.reason, sizeof(o.reason), false, errbuf, errlen) ||
        get_int(root, "qty", is_order ? 1 : 0, OQ_QTY_MAX, is_order, &qty, errbuf, errlen) ||
        get_int(root, "accepted_at", is_order ? 1 : 0, OQ_TIME_MAX_MS, is_order, &acc, errbuf,
                errlen) ||
        get_int(root, "node", 0, CM_ID_NODE_MAX, false, &node, errbuf, errlen) ||
        get_int(root, "at", 0, OQ_TIME_MAX_MS, false, &at, errbuf, errlen) ||
        get_int(root, "key_fp", 1, OQ_KEY_FP_MAX, false, &kfp, errbuf, errlen))
        goto out;
    if (is_order && o.reason[0]) {
        /* The encoder writes no reason for an order: one would be dropped on the
         * next encode (found by fuzz_order: decode(encode(x)) != x). */
        cm_errbuf_set(errbuf, errlen, "reason: an order has none");
        goto out;
    }
    if (json_object_get(root, "person") && !o.person[0]) {
        cm_errbuf_set(errbuf, errlen, "person: must be absent or 1..%d characters",
                      INV_USER_ID_MAX);
        goto out;
    }
    if (strcmp(o.person, o.user_id) == 0) /* a writer's spelling of "the account's own" */
        o.person[0] = '\0';
    if (json_object_get(root, "idem_key") && !o.idem_key[0]) {
        cm_errbuf_set(errbuf, errlen, "idem_key: must be absent or 1..%d characters",
                      INV_IDEM_KEY_MAX);
        goto out;
    }
    o.qty = (uint32_t)qty;
    o.accepted_at_ms = acc;
    o.at_ms = at;
    o.key_fp = (uint64_t)kfp;
    if (o.key_fp && (!is_order || !o.idem_key[0])) {
        cm_errbuf_set(errbuf, errlen, "key_fp: only in an order with an idem_key");
        goto out;
    }
    o.node_id = node < 0 ? OQ_NODE_UNKNOWN : (uint32_t)node;
    json_t *gb = json_object_get(root, "giveback");
    if (gb && !json_is_true(gb)) {
        cm_errbuf_set(errbuf, errlen, "giveback: must be true or absent");
        goto out;
    }
    o.giveback = gb != NULL;
    json_t *st = json_object_get(root, "status");
    if (has_status) {
        int s = json_is_string(st) ? oq_status_parse(json_string_value(st), json_string_length(st))
                                   : -1;
        if (s < 0) {
            cm_errbuf_set(errbuf, errlen, "status: %s", st ? "must be settled, failed or cancelled"
                                                           : "missing");
            goto out;
        }
        o.status = (oq_status_t)s;
    }
    if (oq_order_check(&o, errbuf, errlen) != 0)
        goto out;
    *out = o;
    rc = 0;
out:
    json_decref(root);
    return rc;
}

/*---- the encoder's own form, read without jansson ----*/

/*
 * jansson (a json_t per record and per member, then the copies) cost the
 * gateway's outcome consumer 5.5-10 us per order (bench/README.md "Settlement"). Nearly
 * every record read is the encoder's own output, so this reads exactly that
 * form: members in the encoder's order, no whitespace, strings of printable
 * ASCII without escapes, integers without sign, fraction or leading zero. It
 * returns -1 for anything else, which then goes to jansson; it only accepts
 * what oq_order_decode_json accepts, with the same fields (unit.oq_order_fast
 * over generated and mutated records, and fuzz_order, check it), and runs
 * oq_order_check as the decoder does. Every reader goes through it: the relay,
 * spool replay, the audit and flashgate-settle's orders topic.
 */
static const char *f_lit(const char *p, const char *end, const char *lit, size_t n)
{
    return p && (size_t)(end - p) >= n && memcmp(p, lit, n) == 0 ? p + n : NULL;
}

#define F_LIT(p, s) f_lit((p), end, (s), sizeof(s) - 1)

/* A string of printable ASCII other than " and \ (no escapes), shorter than cap. */
static const char *f_str(const char *p, const char *end, char *dst, size_t cap)
{
    if (!p || p >= end || *p != '"')
        return NULL;
    size_t n = 0;
    for (p++; p < end && *p != '"'; p++) {
        unsigned char c = (unsigned char)*p;
        if (c < 0x20 || c > 0x7e || c == '\\' || n + 1 >= cap)
            return NULL;
        dst[n++] = (char)c;
    }
    if (p >= end)
        return NULL;
    dst[n] = '\0';
    return p + 1;
}

/* An integer in [0, max]: digits only, no leading zero (what follows must be
 * the next literal, so "1.5" or "1e3" fail there). */
static const char *f_uint(const char *p, const char *end, int64_t max, int64_t *out)
{
    if (!p || p >= end || *p < '0' || *p > '9' ||
        (*p == '0' && p + 1 < end && p[1] >= '0' && p[1] <= '9'))
        return NULL;
    int64_t v = 0;
    for (int digits = 0; p < end && *p >= '0' && *p <= '9'; p++) {
        if (++digits > 18)
            return NULL;
        v = v * 10 + (*p - '0');
    }
    if (v > max)
        return NULL;
    *out = v;
    return p;
}

/* `{"type":"NAME","order_id":` for a type the encoder names (not "order"). */
static const char *f_type(const char *p, const char *end, oq_msg_type_t *type)
{
    p = F_LIT(p, "{\"type\":\"");
    if (!p)
        return NULL;
    for (size_t i = 1; i < NTYPES; i++) {
        size_t n = strlen(type_names[i]);
        if ((size_t)(end - p) > n && memcmp(p, type_names[i], n) == 0 && p[n] == '"') {
            *type = (oq_msg_type_t)i;
            return F_LIT(p + n, "\",\"order_id\":");
        }
    }
    return NULL;
}

/* `,"status":"NAME","at":N` */
static const char *f_status(const char *p, const char *end, oq_order_t *r)
{
    p = F_LIT(p, ",\"status\":\"");
    const char *q = p ? memchr(p, '"', (size_t)(end - p)) : NULL;
    int s = q ? oq_status_parse(p, (size_t)(q - p)) : -1;
    if (s < 0)
        return NULL;
    r->status = (oq_status_t)s;
    return f_uint(F_LIT(q + 1, ",\"at\":"), end, OQ_TIME_MAX_MS, &r->at_ms);
}

int oq_order_decode_fast(const char *buf, size_t len, oq_order_t *out)
{
    if (!buf)
        return -1;
    const char *p = buf, *end = buf + len, *q;
    oq_order_t r;
    memset(&r, 0, sizeof(r));
    r.node_id = OQ_NODE_UNKNOWN;
    if ((q = F_LIT(p, "{\"order_id\":")) != NULL)
        p = q; /* an order: the encoder writes no type */
    else
        p = f_type(p, end, &r.type);
    bool is_order = r.type == OQ_MSG_ORDER;
    int64_t qty = 0, node = 0;
    p = f_str(p, end, r.order_id, sizeof(r.order_id));
    p = f_str(F_LIT(p, ",\"sale_id\":"), end, r.sale_id, sizeof(r.sale_id));
    p = f_str(F_LIT(p, ",\"user_id\":"), end, r.user_id, sizeof(r.user_id));
    if ((q = F_LIT(p, ",\"person\":")) != NULL) {
        p = f_str(q, end, r.person, sizeof(r.person));
        if (p && !r.person[0]) /* the decoder refuses an empty one */
            return -1;
    }
    p = f_uint(F_LIT(p, ",\"qty\":"), end, OQ_QTY_MAX, &qty);
    if ((q = F_LIT(p, ",\"accepted_at\":")) != NULL)
        p = f_uint(q, end, OQ_TIME_MAX_MS, &r.accepted_at_ms);
    if ((q = F_LIT(p, ",\"node\":")) != NULL) {
        p = f_uint(q, end, CM_ID_NODE_MAX, &node);
        r.node_id = (uint32_t)node;
    }
    if ((q = F_LIT(p, ",\"idem_key\":")) != NULL) {
        p = f_str(q, end, r.idem_key, sizeof(r.idem_key));
        if (p && !r.idem_key[0]) /* the decoder refuses an empty one */
            return -1;
    }
    if ((q = F_LIT(p, ",\"key_fp\":")) != NULL) {
        int64_t kfp = 0;
        p = f_uint(q, end, OQ_KEY_FP_MAX, &kfp);
        if ((p && kfp == 0) || !is_order || !r.idem_key[0]) /* the decoder refuses these */
            return -1;
        r.key_fp = (uint64_t)kfp;
    }
    if (r.type == OQ_MSG_OUTCOME || r.type == OQ_MSG_RELEASE)
        p = f_status(p, end, &r);
    if ((q = F_LIT(p, ",\"giveback\":true")) != NULL) {
        p = q;
        r.giveback = true; /* oq_order_check refuses it on another type */
    }
    if (!is_order && (q = F_LIT(p, ",\"reason\":")) != NULL)
        p = f_str(q, end, r.reason, sizeof(r.reason));
    if (!p || end - p != 1 || *p != '}')
        return -1;
    if (is_order && (qty < 1 || r.accepted_at_ms < 1))
        return -1;
    r.qty = (uint32_t)qty;
    if (oq_order_check(&r, NULL, 0) != 0)
        return -1;
    *out = r;
    return 0;
}

int oq_order_decode(const char *buf, size_t len, oq_order_t *out, char *errbuf, size_t errlen)
{
    if (oq_order_decode_fast(buf, len, out) == 0)
        return 0;
    return oq_order_decode_json(buf, len, out, errbuf, errlen);
}
