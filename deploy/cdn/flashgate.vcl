# A stand-in CDN edge in front of flashgate: Varnish 7 (Debian 12: varnish 7.1).
#
# What a CDN must do for a flash sale (docs/cdn.md), in VCL:
#   - GET/HEAD /v1/sales/{id}: cached for as long as flashgate's Cache-Control
#     says (1 s live, 10 s sold out, 60 s ended); concurrent misses wait for
#     one origin fetch (Varnish's request coalescing), so during a crowd the
#     origin sees about one request per second per sale per edge.
#   - GET/HEAD /v1/sales/{id}/queue without a query: the waiting room's queue
#     page, the same bytes for every waiting client (max-age=1), likewise.
#     With a query (user_id, ticket) it is one user's place: passed.
#   - everything else (buy, order status, health): passed to the origin,
#     never cached, never coalesced.
#   - the origin not answering (down, refused, past first_byte_timeout): a
#     JSON 503 in flashgate's error format with Retry-After, never cached,
#     not Varnish's HTML page (vcl_backend_error).
#   - the client address goes to the origin in X-Forwarded-For (Varnish
#     appends client.ip itself); nginx trusts this edge's address
#     (set_real_ip_from) and flashgate trusts nginx.
#
# Tested by tests/integration/71-cdn.py, which runs this very file (backend
# rewritten to a loopback gateway). Lines marked EDIT are the deployment's.
#
# Run varnishd with -p backend_idle_timeout=20 (its default is 60 s): an idle
# connection to the origin must be closed by Varnish before the origin closes
# it (nginx's keepalive_timeout and flashgate's server.connection_timeout are
# 30 s), or a buy may be sent on a connection the origin is closing, and
# Varnish does not send a POST's body twice: the buyer gets a 503. VCL 4.1 has
# no per-backend idle timeout.
vcl 4.1;

backend origin {
    .host = "127.0.0.1";        # EDIT: the load balancer (nginx) in front of the fleet
    .port = "8080";             # EDIT
    .connect_timeout = 1s;
    .first_byte_timeout = 5s;   # the buy path answers in milliseconds
    .between_bytes_timeout = 5s;
    .max_connections = 2000;
}

sub vcl_recv {
    # Sale info is the only cacheable route. A query string is not part of
    # flashgate's routing, so it must not be part of the cache key either:
    # "?cb=random" would otherwise send every refresh to the origin.
    if (req.url ~ "^/v1/sales/[^/?]+(\?.*)?$" && (req.method == "GET" || req.method == "HEAD")) {
        set req.url = regsub(req.url, "\?.*$", "");
        unset req.http.Cookie;
        unset req.http.Authorization;
        return (hash);
    }
    # The waiting room's queue page: cacheable only as the same bytes for all,
    # without a query. Its query is never stripped: ?user_id= takes a place and
    # ?ticket= keeps one, each answer one user's (no-store).
    if (req.url ~ "^/v1/sales/[^/?]+/queue$" && (req.method == "GET" || req.method == "HEAD")) {
        unset req.http.Cookie;
        unset req.http.Authorization;
        return (hash);
    }
    # Buy, order status, health, anything else: straight to the origin.
    return (pass);
}

sub vcl_hash {
    # The path only: flashgate's sale info is the same for every host and client.
    hash_data(req.url);
    return (lookup);
}

sub vcl_backend_response {
    if (bereq.uncacheable) {
        return (deliver);
    }
    # Keep only what flashgate marked cacheable (public, max-age), and never an
    # error other than 404 (a 503 while Redis is down must not outlive it).
    if (beresp.http.Cache-Control !~ "public" || (beresp.status != 200 && beresp.status != 404)) {
        set beresp.uncacheable = true;
        set beresp.ttl = 1s;    # hit-for-miss: the next request goes to the origin
        return (deliver);
    }
    # Serve a just-expired copy for 1 s while one background fetch refreshes it:
    # the crowd never waits for the origin, and stock_left is at most ~2 s old.
    set beresp.grace = 1s;
    return (deliver);
}

sub vcl_backend_error {
    # The origin did not answer: flashgate's error format (clients parse JSON,
    # and nginx's own 502/504 answer the same), a retry hint, and never a
    # cached error (a 503 must not outlive the outage). A buy was not retried
    # here: the client retries it with its Idempotency-Key.
    set beresp.status = 503;
    set beresp.http.Content-Type = "application/json";
    set beresp.http.Cache-Control = "no-store";
    set beresp.http.Retry-After = "1";
    set beresp.ttl = 0s;
    set beresp.grace = 0s;
    set beresp.uncacheable = true;
    synthetic("""{"error":"unavailable","message":"the origin did not answer; retry (a buy with the same Idempotency-Key)"}
""");
    return (deliver);
}

sub vcl_pass {
    set req.http.X-Fg-Pass = "1";
}

sub vcl_deliver {
    # For operators and the test: was this answered at the edge?
    if (req.http.X-Fg-Pass) {
        set resp.http.X-Cache = "PASS";
    } else if (obj.hits > 0) {
        set resp.http.X-Cache = "HIT";
    } else {
        set resp.http.X-Cache = "MISS";
    }
    unset resp.http.Via;
    unset resp.http.X-Varnish;
}
