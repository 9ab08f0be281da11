/*
 * Fuzz target: the one order codec (queue/oq_order.h: the spool records, the
 * Kafka values of both topics, `flashgate-spool dump`). Promises: never
 * crashes; whatever the decoder accepts passes oq_order_check, encodes, and
 * decodes again to the same record (the codec is its own inverse); the
 * decoder names the field it refuses; its fast half (oq_order_decode_fast,
 * the reader of the encoder's form) takes nothing the jansson half refuses and
 * reads what it takes as that does; flashgate-settle's orders-topic reader
 * (st_order_parse) takes only orders and cancels of what the codec takes.
 */
#include "queue/oq_order.h"
#include "settle/st_settle.h"
#include "tests/fuzz/fuzz.h"

#include <stdbool.h>
#include <string.h>

static bool same(const oq_order_t *f, const oq_order_t *a)
{
    return f->type == a->type && strcmp(f->order_id, a->order_id) == 0 &&
           strcmp(f->sale_id, a->sale_id) == 0 && strcmp(f->user_id, a->user_id) == 0 &&
           strcmp(f->idem_key, a->idem_key) == 0 && strcmp(f->reason, a->reason) == 0 &&
           f->qty == a->qty && f->accepted_at_ms == a->accepted_at_ms &&
           f->node_id == a->node_id && f->status == a->status && f->at_ms == a->at_ms &&
           f->giveback == a->giveback;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 8192)
        return 0;
    oq_order_t a, b, f, g;
    char why[160] = "";
    int topic = st_order_parse((const char *)data, size, &f, NULL, 0);
    int gen = oq_order_decode_fast((const char *)data, size, &g);
    if (oq_order_decode_json((const char *)data, size, &a, why, sizeof(why)) != 0) {
        FZ_CHECK(why[0] != '\0');
        FZ_CHECK(topic != 0);
        FZ_CHECK(gen != 0);
        return 0;
    }
    FZ_CHECK((topic == 0) == (a.type == OQ_MSG_ORDER || a.type == OQ_MSG_CANCEL));
    if (topic == 0)
        FZ_CHECK(same(&f, &a));
    if (gen == 0)
        FZ_CHECK(same(&g, &a));
    FZ_CHECK(oq_order_decode((const char *)data, size, &b, why, sizeof(why)) == 0 && same(&b, &a));
    FZ_CHECK(oq_order_check(&a, NULL, 0) == 0);
    char buf[OQ_ORDER_JSON_MAX];
    int n = oq_order_encode(&a, buf, sizeof(buf));
    FZ_CHECK(n > 0);
    FZ_CHECK(oq_order_decode(buf, (size_t)n, &b, why, sizeof(why)) == 0);
    FZ_CHECK(a.type == b.type && strcmp(a.order_id, b.order_id) == 0 &&
             strcmp(a.sale_id, b.sale_id) == 0 && strcmp(a.user_id, b.user_id) == 0 &&
             strcmp(a.idem_key, b.idem_key) == 0 && strcmp(a.reason, b.reason) == 0);
    FZ_CHECK(a.qty == b.qty && a.accepted_at_ms == b.accepted_at_ms && a.node_id == b.node_id &&
             a.giveback == b.giveback);
    if (a.type == OQ_MSG_OUTCOME || a.type == OQ_MSG_RELEASE)
        FZ_CHECK(a.status == b.status && a.at_ms == b.at_ms);
    return 0;
}
