/*
 * Fuzz target: the buy body (gw_buy_parse_body): {"user_id","qty"}.
 * Promises: accepted bodies give a valid user id and 1 <= qty <= 1000;
 * refused ones a 400 whose body is a JSON object {"error","message"}; the
 * in-place reading of the usual body (gw_buy_body_fast) accepts only what
 * jansson's reading accepts, with the same user id and qty, with user_id
 * required and optional (identity on) alike.
 */
#include "gateway/base/gw_base.h"
#include "gateway/buy/gw_buy.h"
#include "gateway/ctl/gw_ctl.h"
#include "gateway/edge/gw_edge.h"
#include "gateway/edge/gw_upcall.h"
#include "gateway/http/gw_http.h"
#include "gateway/overload/gw_ol.h"
#include "gateway/proxy/gw_proxy.h"
#include "tests/fuzz/fuzz.h"

#include <jansson.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    gw_req_t *r = calloc(1, sizeof(gw_req_with_buy_t)); /* the buy path's part after it */
    r->body = malloc(size + 1);
    memcpy(r->body, data, size);
    r->body[size] = '\0';
    r->body_len = size;
    if (gw_buy_parse_body(r)) {
        const char *user = gw_req_buy(r)->res.user_id;
        FZ_CHECK(inv_id_valid(user, strlen(user), INV_USER_ID_MAX));
        FZ_CHECK(gw_req_buy(r)->res.qty >= 1 && gw_req_buy(r)->res.qty <= 1000);
    } else {
        FZ_CHECK(r->resp.status == 400);
        json_t *j = json_loadb(r->resp.body, r->resp.body_len, 0, NULL);
        if (!j)
            fprintf(stderr, "not JSON: %.*s\n", (int)r->resp.body_len, r->resp.body);
        FZ_CHECK(j && json_is_object(j) && json_is_string(json_object_get(j, "error")));
        json_decref(j);
    }
    for (int opt = 0; opt < 2; opt++) {
        char user[INV_USER_ID_MAX + 1] = "";
        uint32_t qty = 0;
        if (gw_buy_body_fast(r->body, r->body_len, opt, user, &qty)) {
            FZ_CHECK(gw_buy_parse_body_json(r, opt));
            FZ_CHECK(strcmp(user, gw_req_buy(r)->res.user_id) == 0 &&
                     qty == gw_req_buy(r)->res.qty);
        }
    }
    free(r->body);
    free(r);
    return 0;
}
