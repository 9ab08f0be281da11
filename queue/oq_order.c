/*
 * Order <-> JSON, the one form shared by the spool, the Kafka value and
 * `flashgate-spool dump`:
 *
 *   {"order_id":"0A1B2C3D4E5F6","sale_id":"s1","user_id":"u1","qty":1,
 *    "accepted_at":1732269600123,"node":7,"idem_key":"k"}
 *
 * accepted_at is milliseconds since the Unix epoch (an integer: exact, cheap
 * to write and to compare); oq_order_from_json also takes an RFC 3339 string.
 * idem_key is left out when empty.
 *
 * oq_order_to_json is on the HTTP hot path (every accepted order is encoded
 * into the spool before its 202), so it is written by hand into the caller's
 * buffer: no malloc, no json_t. jansson's json_dumpb would build a json_t
 * (five allocations) for every order. The unit test parses every output with
 * jansson, so the hand-written encoder cannot drift from real JSON.
 * oq_order_from_json is off the hot path (replay, settle) and uses jansson.
 */
#include "queue/oq_spool.h"

#include "common/cm_err.h"
#include "common/cm_time.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

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

static void jb_str(jbuf_t *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    jb_raw(b, "\"", 1);
    const char *run = s;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\')
            continue;
        jb_raw(b, run, (size_t)(s - run));
        run = s + 1;
        char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
        if (c == '"' || c == '\\') {
            esc[1] = (char)c;
            jb_raw(b, esc, 2);
        } else {
            jb_raw(b, esc, 6);
        }
    }
    jb_raw(b, run, (size_t)(s - run));
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

int oq_order_to_json(const oq_order_t *o, char *buf, size_t len)
{
    jbuf_t b = {buf, 0, len, len == 0};
#define LIT(s) jb_raw(&b, s, sizeof(s) - 1)
    LIT("{\"order_id\":");
    jb_str(&b, o->order_id);
    LIT(",\"sale_id\":");
    jb_str(&b, o->sale_id);
    LIT(",\"user_id\":");
    jb_str(&b, o->user_id);
    LIT(",\"qty\":");
    jb_u64(&b, o->qty);
    LIT(",\"accepted_at\":");
    if (o->accepted_at_ms < 0) {
        LIT("-");
        jb_u64(&b, (uint64_t)0 - (uint64_t)o->accepted_at_ms);
    } else {
        jb_u64(&b, (uint64_t)o->accepted_at_ms);
    }
    LIT(",\"node\":");
    jb_u64(&b, o->node_id);
    if (o->idem_key[0]) {
        LIT(",\"idem_key\":");
        jb_str(&b, o->idem_key);
    }
    LIT("}");
#undef LIT
    if (b.overflow)
        return CM_EINVAL;
    buf[b.len] = '\0';
    return (int)b.len;
}

/* Copies a string member into dst (cap bytes with NUL). Missing is "" when optional. */
static int get_str(json_t *root, const char *key, char *dst, size_t cap, bool required)
{
    json_t *v = json_object_get(root, key);
    if (v == NULL) {
        dst[0] = '\0';
        return required ? CM_EINVAL : 0;
    }
    if (!json_is_string(v))
        return CM_EINVAL;
    size_t n = json_string_length(v);
    const char *s = json_string_value(v);
    if (n >= cap || memchr(s, '\0', n) != NULL || (required && n == 0))
        return CM_EINVAL;
    memcpy(dst, s, n);
    dst[n] = '\0';
    return 0;
}

int oq_order_from_json(const char *json, size_t len, oq_order_t *out)
{
    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL)
        return CM_EINVAL;
    int rc = CM_EINVAL;
    oq_order_t o;
    memset(&o, 0, sizeof(o));
    if (!json_is_object(root))
        goto out;
    if (get_str(root, "order_id", o.order_id, sizeof(o.order_id), true) ||
        get_str(root, "sale_id", o.sale_id, sizeof(o.sale_id), true) ||
        get_str(root, "user_id", o.user_id, sizeof(o.user_id), true) ||
        get_str(root, "idem_key", o.idem_key, sizeof(o.idem_key), false))
        goto out;
    json_t *qty = json_object_get(root, "qty");
    if (!json_is_integer(qty) || json_integer_value(qty) < 1 ||
        json_integer_value(qty) > UINT32_MAX)
        goto out;
    o.qty = (uint32_t)json_integer_value(qty);
    json_t *at = json_object_get(root, "accepted_at");
    if (json_is_integer(at)) {
        o.accepted_at_ms = (int64_t)json_integer_value(at);
    } else if (json_is_string(at)) {
        if (cm_time_parse_rfc3339(json_string_value(at), &o.accepted_at_ms) != 0)
            goto out;
    } else {
        goto out;
    }
    json_t *node = json_object_get(root, "node");
    if (node != NULL) {
        if (!json_is_integer(node) || json_integer_value(node) < 0 ||
            json_integer_value(node) > UINT32_MAX)
            goto out;
        o.node_id = (uint32_t)json_integer_value(node);
    }
    *out = o;
    rc = 0;
out:
    json_decref(root);
    return rc;
}

int oq_pos_cmp(oq_pos_t a, oq_pos_t b)
{
    if (a.seg != b.seg)
        return a.seg < b.seg ? -1 : 1;
    if (a.off != b.off)
        return a.off < b.off ? -1 : 1;
    return 0;
}
