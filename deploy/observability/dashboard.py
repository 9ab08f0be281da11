"""Writes grafana-dashboard.json (the "flashgate fleet" dashboard) to stdout:

    python3 deploy/observability/dashboard.py > deploy/observability/grafana-dashboard.json

The JSON is committed (import it into Grafana as it is); edit this file, not the
JSON, and regenerate: integration.93-observability fails when they differ, and
evaluates every panel's expression against a real Prometheus.
"""
import json
import re
DS = {"type": "prometheus", "uid": "${datasource}"}

# Environments sharing one Prometheus (staging and production, two namespaces)
# must not mix: every selector of the board is scoped by the $job and
# $namespace variables. Gateway series by both; settle workers' (another job)
# by namespace only. A series without a namespace label matches the "All"
# value (.*), so a Prometheus outside Kubernetes needs nothing.
SERIES = re.compile(r'\b((?:flashgate|process)_[a-z0-9_]+)(\{([^}]*)\})?(?![a-z0-9_(])')


def scope(expr):
    def one(m):
        name, body = m.group(1), m.group(3)
        add = ('namespace=~"$namespace"' if name.startswith("flashgate_settle_")
               else 'job=~"$job",namespace=~"$namespace"')
        return "%s{%s}" % (name, add + ("," + body if body else ""))
    return SERIES.sub(one, expr)


# Alert panels link to the runbook's response steps: ${runbook} is a dashboard
# variable (set it to where your copy of docs/runbook.md is served), and each
# anchor is the heading an alert's runbook_url names (flashgate.alerts.yml).
def links(*anchors):
    return [{"title": "Runbook: " + a.replace("-", " "), "url": "${runbook}#" + a,
             "targetBlank": True} for a in anchors]
panels = []
pid = [0]
y = [0]

def nid():
    pid[0] += 1
    return pid[0]

def row(title, collapsed=False, inner=None):
    p = {"type": "row", "id": nid(), "title": title, "collapsed": collapsed,
         "gridPos": {"h": 1, "w": 24, "x": 0, "y": y[0]}, "panels": inner or []}
    y[0] += 1
    panels.append(p)

X = [0]
def ts(title, targets, desc, unit="short", w=12, h=8, overrides=None, minv=None, maxv=None,
       stack=False, thresholds=None, kind="timeseries", decimals=None, runbook=()):
    if X[0] + w > 24:
        X[0] = 0
        y[0] += h
    defaults = {"unit": unit, "custom": {"lineWidth": 1, "fillOpacity": 10 if not stack else 40,
                                         "stacking": {"mode": "normal" if stack else "none"},
                                         "showPoints": "never", "spanNulls": False}}
    if kind == "stat":
        defaults = {"unit": unit}
    if minv is not None:
        defaults["min"] = minv
    if maxv is not None:
        defaults["max"] = maxv
    if decimals is not None:
        defaults["decimals"] = decimals
    if thresholds:
        defaults["thresholds"] = {"mode": "absolute", "steps": thresholds}
        if kind == "timeseries":
            defaults["custom"]["thresholdsStyle"] = {"mode": "line"}
    p = {"type": kind, "id": nid(), "title": title, "description": desc, "datasource": DS,
         "gridPos": {"h": h, "w": w, "x": X[0], "y": y[0]},
         "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
         "options": {"legend": {"displayMode": "table", "placement": "right",
                                "calcs": ["lastNotNull", "max"]},
                     "tooltip": {"mode": "multi", "sort": "desc"}} if kind == "timeseries" else
                    {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                     "colorMode": "value", "graphMode": "area", "textMode": "value_and_name"},
         "targets": [{"datasource": DS, "refId": chr(65 + i), "expr": scope(e), "legendFormat": l}
                     for i, (e, l) in enumerate(targets)]}
    if runbook:
        p["links"] = links(*runbook)
    panels.append(p)
    X[0] += w

def newrow(title, **kw):
    X[0] = 0
    y[0] += 8
    row(title, **kw)

def color(name, c):
    return {"matcher": {"id": "byName", "options": name},
            "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": c}}]}

def colorre(rx, c):
    return {"matcher": {"id": "byRegexp", "options": rx},
            "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": c}}]}

R = "$__rate_interval"
I = 'instance=~"$instance"'
status_colors = [color("202", "green"), color("410", "blue"), color("429", "orange"),
                 colorre("^5..$", "red"), colorre("^4(0[0-9]|1[1-9]|[2-9].)$", "yellow"),
                 color("200", "green"), color("404", "purple")]

row("Fleet: what the buyers get")
ts("Answers/s by status (fleet)",
   [('sum by (status) (rate(flashgate_responses_total[%s]))' % R, "{{status}}")],
   "Every answer of the public listener, all gateways, by HTTP status. Fixed colours: "
   "202 accepted green, 410 sold out blue, 429 rate limited orange, 5xx red.",
   unit="reqps", stack=True, overrides=status_colors)
ts("Server error ratio (5xx / all answers)",
   [('(sum(rate(flashgate_responses_total{status=~"5..",code!="not_ready"}[%s])) or vector(0)) / '
     'sum(rate(flashgate_responses_total[%s]))' % (R, R), "5xx share")],
   "Share of public answers that are 5xx (503 overloaded or unavailable, proxied 5xx, 502, 504). "
   "410 and 429 are the design working, and so is /readyz's 503 not_ready while a gateway "
   "starts or drains (left out). Runbook: 503 unavailable is Redis or the spool.",
   unit="percentunit", minv=0, overrides=[color("5xx share", "red")],
   thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 0.01}], runbook=('server-errors',))
ts("Buy latency p50 / p99 (fleet, from the histogram)",
   [('histogram_quantile(0.5, sum by (le) (rate(flashgate_request_duration_seconds_bucket{route="buy"}[%s])))' % R, "p50"),
    ('histogram_quantile(0.99, sum by (le) (rate(flashgate_request_duration_seconds_bucket{route="buy"}[%s])))' % R, "p99")],
   "Time in the gateway per buy (buckets 50 us .. 1 s; a quantile is interpolated inside its "
   "bucket). Not the client's latency: nginx and the network add theirs.",
   unit="s", minv=0, overrides=[color("p50", "green"), color("p99", "orange")])
ts("Buy answers/s by code",
   [('sum by (code) (rate(flashgate_responses_total{route="buy"}[%s]))' % R, "{{code}}")],
   "queued (202), sold_out (410), rate_limited (429), overloaded and unavailable (503), ...",
   unit="reqps", stack=True,
   overrides=[color("queued", "green"), color("sold_out", "blue"), color("rate_limited", "orange"),
              color("overloaded", "red"), color("unavailable", "dark-red")], runbook=('buys-answered-503-unavailable', 'degrade-level-rising'))
ts("Units accepted/s per sale",
   [('sum by (sale) (rate(flashgate_sale_accepted_units_total[%s]))' % R, "{{sale}}")],
   "Units accepted per second, all gateways. The stock is sold when this drops to 0 with "
   "stock left at 0.", unit="short", minv=0)
ts("Stock left per sale",
   [('min by (sale) (flashgate_sale_stock_left)', "{{sale}}")],
   "In a fleet (Redis) each gateway reports the shared stock: the lowest view is the most "
   "recent. With the memory inventory every gateway sells its own: see 'Stock left per "
   "gateway' below. Worry: above 0 while buys are refused.", unit="short", minv=0, runbook=('stock-left-while-every-buy-is-refused', 'stock-differing-between-gateways'))
ts("429s/s by scope",
   [('sum by (scope) (rate(flashgate_rate_limited_total[%s]))' % R, "{{scope}}")],
   "Rate-limit refusals by the limit that refused. Mostly user and ip is normal; a global "
   "share means the global limit is the bottleneck.", unit="reqps", stack=True, runbook=('global-limit-the-bottleneck',))
ts("Scrape targets up",
   [('up{job=~"flashgate|flashgate-settle",namespace=~"$namespace"}', "{{job}} {{instance}}")],
   "1 while Prometheus can scrape the gateway's admin listener or the settle worker.",
   unit="short", minv=0, maxv=1, decimals=0, runbook=('a-gateway-or-worker-is-down', 'gateways-missing'))

newrow("Per gateway: overload control")
ts("Answers/s per gateway",
   [('sum by (instance) (rate(flashgate_responses_total{%s}[%s]))' % (I, R), "{{instance}}")],
   "Public answers per gateway: an uneven spread points at the load balancer.", unit="reqps")
ts("Degrade level (0-3)",
   [('flashgate_degrade_level{%s}' % I, "{{instance}}")],
   "0 normal; 1 sale info from the local view; 2 sheds all but buy, order status and sale "
   "info; 3 only what fits the concurrency limit. Worry: >= 1 for more than a few seconds.",
   unit="short", minv=0, maxv=3, decimals=0,
   thresholds=[{"color": "green", "value": None}, {"color": "orange", "value": 1},
               {"color": "red", "value": 3}], runbook=('degrade-level-rising',))
ts("Concurrency limit per dependency",
   [('flashgate_dependency_concurrency_limit{%s}' % I, "{{instance}} {{dependency}} limit"),
    ('flashgate_dependency_inflight{%s}' % I, "{{instance}} {{dependency}} in flight")],
   "The adaptive limit of each dependency (redis, spool_fsync, upstream:...) and what is in "
   "flight. Worry: a falling limit.", unit="short", minv=0, runbook=('redis-slow',))
ts("Dependency latency p99 and average (from the histogram)",
   [('histogram_quantile(0.99, sum by (instance, dependency, le) '
     '(rate(flashgate_dependency_latency_seconds_bucket{%s}[%s])))' % (I, R),
     "{{instance}} {{dependency}} p99"),
    ('sum by (instance, dependency) (rate(flashgate_dependency_latency_seconds_sum{%s}[%s])) / '
     'sum by (instance, dependency) (rate(flashgate_dependency_latency_seconds_count{%s}[%s]))'
     % (I, R, I, R), "{{instance}} {{dependency}} average")],
   "Round trip of each dependency's answered calls (redis, spool_fsync, upstream:...; buckets "
   "50 us .. 5 s, a quantile is interpolated inside its bucket). Timeouts and errors are "
   "drops, not here. Worry: Redis p99 above 5 ms (FlashgateRedisSlow). No point while a "
   "dependency has no call.",
   unit="s", minv=0, runbook=('redis-slow',))
ts("Queue delay",
   [('flashgate_queue_delay_seconds{%s}' % I, "{{instance}}"),
    ('max(flashgate_queue_delay_target_seconds{%s})' % I, "target")],
   "How long requests wait in the gateway's own queue. Worry: above 20 ms (out of CPU).",
   unit="s", minv=0, overrides=[color("target", "red")], runbook=('degrade-level-rising',))
ts("Dependency refusals/s",
   [('rate(flashgate_dependency_rejected_total{%s}[%s])' % (I, R), "{{instance}} {{dependency}}")],
   "Requests refused because a dependency's concurrency limit was full.", unit="reqps", minv=0, runbook=('redis-slow',))
ts("Stock left per gateway",
   [('flashgate_sale_stock_left{%s}' % I, "{{instance}} {{sale}}")],
   "Each gateway's view of each sale's stock.", unit="short", minv=0)
ts("503 overloaded/s by reason",
   [('sum by (reason) (rate(flashgate_overload_rejected_total{%s}[%s]))' % (I, R), "{{reason}}")],
   "Which limit or level refused (docs/api.md, Overload).", unit="reqps", stack=True)

newrow("Per gateway: saturation, shedding, breakers")
ts("Process CPU (cores)",
   [('rate(process_cpu_seconds_total{%s}[%s])' % (I, R), "{{instance}}")],
   "CPU seconds per second of each gateway process, every thread (workers, relay, admin). "
   "Against its cores or CPU quota: at the quota the admin listener waits whole quota periods "
   "(docs/runbook.md section 1, 7).", unit="short", minv=0, runbook=("degrade-level-rising",))
ts("Resident memory",
   [('process_resident_memory_bytes{%s}' % I, "{{instance}}")],
   "Resident set of each gateway: the limiter table (limits.max_keys), the order status table, "
   "the fair logs. Against the container's memory limit.", unit="bytes", minv=0)
ts("File descriptors (share of the limit)",
   [('process_open_fds{%s} / process_max_fds{%s}' % (I, I), "{{instance}}")],
   "Open descriptors over RLIMIT_NOFILE: one per connection, plus the spool's. Near 1, "
   "accepts fail and spool syncs wait (FlashgateSpoolFdWaits).", unit="percentunit", minv=0,
   maxv=1, thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 0.8}],
   runbook=("spool-out-of-file-descriptors",))
ts("Shed and degraded/s",
   [('sum by (instance, criticality) (rate(flashgate_overload_shed_total{%s}[%s]))' % (I, R),
     "{{instance}} shed {{criticality}}"),
    ('sum by (instance, reason) (rate(flashgate_overload_degraded_total{%s}[%s]))' % (I, R),
     "{{instance}} degraded {{reason}}")],
   "Proxied requests shed (503 overloaded or their fallback) by criticality, and answered with "
   "their route's fallback by cause.", unit="reqps", minv=0,
   runbook=("proxied-routes-failing", "degrade-level-rising"))
ts("Breaker state per dependency (0 closed, 1 open, 2 half-open)",
   [('max by (instance, dependency) (flashgate_dependency_breaker_state{%s})' % I,
     "{{instance}} {{dependency}}")],
   "The breaker of each Redis master and proxied upstream. Open: buys on that master answered "
   "503 unavailable, the route served its fallback. No series for a dependency without a "
   "breaker (the memory inventory, the spool).", unit="short", minv=0, maxv=2, decimals=0,
   thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 1}],
   runbook=("redis-breaker-open-or-node-id-lost", "proxied-routes-failing"))
ts("Disk under the spool",
   [('flashgate_spool_filesystem_avail_bytes{%s}' % I, "{{instance}} free"),
    ('flashgate_spool_max_bytes{%s} - flashgate_spool_unreleased_bytes{%s}' % (I, I),
     "{{instance}} the spool may still take")],
   "Free bytes on the data dir's filesystem beside what the spool may still grow by before "
   "spool.max_bytes. Worry: free below it (FlashgateSpoolDiskNearlyFull).", unit="bytes",
   minv=0, runbook=("disk-filling",))

newrow("Spool, relay to Kafka, settlement")
ts("Spool unreleased bytes",
   [('flashgate_spool_unreleased_bytes{%s}' % I, "{{instance}}")],
   "Accepted orders not yet released (acknowledged by Kafka; with the embedded broker, "
   "settled). Worry: growing.", unit="bytes", minv=0, runbook=('spool-growing', 'broker-down'))
ts("Relay backlog",
   [('flashgate_relay_unreleased_records{%s}' % I, "{{instance}} unreleased"),
    ('flashgate_relay_inflight{%s}' % I, "{{instance}} in flight")],
   "Records the relay has not released, and those sent and awaiting Kafka's ack.",
   unit="short", minv=0)
ts("Oldest unacknowledged order",
   [('flashgate_relay_oldest_unacked_age_seconds{%s}' % I, "{{instance}}")],
   "Age of the oldest record Kafka has not acknowledged. Normal < 1 s.", unit="s", minv=0,
   thresholds=[{"color": "green", "value": None}, {"color": "red", "value": 5}], runbook=('broker-down',))
ts("Kafka ack p99",
   [('histogram_quantile(0.99, sum by (le) (rate(flashgate_kafka_ack_duration_seconds_bucket[%s])))' % R, "p99")],
   "Produce to delivery report, all gateways (ms resolution).", unit="s", minv=0)
ts("Settle lag (messages behind)",
   [('sum(flashgate_settle_consumer_lag)', "all workers"),
    ('flashgate_settle_consumer_lag', "{{instance}}")],
   "Messages behind the high watermark after each worker's last batch. Worry: growing after "
   "the sale (the database is too slow).", unit="short", minv=0, runbook=('settlement-behind-or-stalled',))
ts("Settled messages/s",
   [('sum(rate(flashgate_settle_messages_total[%s]))' % R, "all workers"),
    ('sum(rate(flashgate_settle_db_errors_total[%s]))' % R, "batches rolled back")],
   "Messages committed per second, and database batches rolled back and retried.",
   unit="short", minv=0, overrides=[color("batches rolled back", "red")])
ts("Since the last settle commit",
   [('time() - (flashgate_settle_last_commit_timestamp_seconds > 0)', "{{instance}}")],
   "Seconds since each worker last committed a batch (no series before its first). Long "
   "with a lag above 0: the worker is stuck.", unit="s", minv=0)
ts("Settle workers ready",
   [('flashgate_settle_ready', "{{instance}} ready"),
    ('flashgate_settle_kafka_up', "{{instance}} kafka"),
    ('flashgate_settle_db_up', "{{instance}} database"),
    ('flashgate_settle_stalled', "{{instance}} stalled")],
   "What GET /readyz answers (Kafka and the database up), and a stalled batch.",
   unit="short", minv=0, maxv=1, decimals=0, runbook=('settlement-behind-or-stalled',))

newrow("Buyer identity and builds")
ts("Identity verifications/s by result",
   [('sum by (result) (rate(flashgate_identity_verifications_total{%s}[%s]))' % (I, R),
     "{{result}}")],
   "Buyer identities checked on the sale routes (identity.mode jwt or header), by outcome "
   "(docs/identity.md). Worry: a rising share of expired or bad_signature (a key rotation the "
   "gateways have not fetched), or missing (the front end stopped sending the token).",
   unit="reqps", stack=True, overrides=[color("ok", "green")])
ts("Identity cache hits and refusals/s",
   [('sum by (instance) (rate(flashgate_identity_cache_hits_total{%s}[%s]))' % (I, R),
     "{{instance}} cache hits"),
    ('sum by (reason) (rate(flashgate_identity_refused_total{%s}[%s]))' % (I, R),
     "refused: {{reason}}")],
   "Tokens answered from a worker's cache (no signature check); refusals that are no token "
   "outcome: identity.header from an untrusted peer, a body user_id other than the verified "
   "buyer.", unit="reqps", minv=0)
ts("JWKS keys and refreshes",
   [('flashgate_identity_jwks_keys{%s}' % I, "{{instance}} keys"),
    ('sum by (instance, result) (increase(flashgate_identity_jwks_refreshes_total{%s}[%s]))'
     % (I, R), "{{instance}} refreshes {{result}}")],
   "Usable verification keys per gateway (jwt mode), and fetches of identity.jwks_url by "
   "result. Worry: 0 keys in jwt mode (buys answered 503 no_keys), failed refreshes.",
   unit="short", minv=0, decimals=0, runbook=('buyer-keys-jwks',))
ts("Builds running",
   [('count by (version, commit) (flashgate_build_info{%s})' % I, "{{version}} {{commit}}"),
    ('flashgate_build_info{%s}' % I, "{{instance}}: {{version}} {{commit}}")],
   "Which build (version and git commit) each gateway runs, and how many gateways run each: "
   "two builds at once is a rolling upgrade in progress.", unit="short", minv=0, decimals=0)

dash = {
    "uid": "flashgate-fleet",
    "title": "flashgate fleet",
    "description": "Sale day over every gateway and settle worker (deploy/observability/README.md).",
    "tags": ["flashgate"],
    "timezone": "utc",
    "schemaVersion": 38,
    "version": 1,
    "editable": True,
    "graphTooltip": 1,
    "refresh": "5s",
    "time": {"from": "now-30m", "to": "now"},
    "annotations": {"list": [{
        "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True,
        "hide": True, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts",
        "type": "dashboard"}]},
    "templating": {"list": [
        {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
         "current": {}, "hide": 0, "refresh": 1},
        {"name": "namespace", "label": "Namespace", "type": "query", "datasource": DS,
         "query": {"query": "label_values(flashgate_up, namespace)", "refId": "namespace"},
         "definition": "label_values(flashgate_up, namespace)", "refresh": 2,
         "multi": True, "includeAll": True, "allValue": ".*",
         "current": {"text": "All", "value": "$__all"}, "hide": 0, "sort": 1},
        {"name": "job", "label": "Gateway job", "type": "query", "datasource": DS,
         "query": {"query": 'label_values(flashgate_up{namespace=~"$namespace"}, job)',
                   "refId": "job"},
         "definition": 'label_values(flashgate_up{namespace=~"$namespace"}, job)', "refresh": 2,
         "multi": True, "includeAll": True, "allValue": ".*",
         "current": {"text": "All", "value": "$__all"}, "hide": 0, "sort": 1},
        {"name": "instance", "label": "Gateway", "type": "query", "datasource": DS,
         "query": {"query": 'label_values(flashgate_up{job=~"$job",namespace=~"$namespace"}, instance)',
                   "refId": "instance"},
         "definition": 'label_values(flashgate_up{job=~"$job",namespace=~"$namespace"}, instance)',
         "refresh": 2, "multi": True, "includeAll": True, "allValue": ".*",
         "current": {"text": "All", "value": "$__all"}, "hide": 0, "sort": 1},
        {"name": "runbook", "label": "Runbook URL", "type": "textbox",
         "query": "https://github.com/YOUR-ORG/flashgate/blob/main/docs/runbook.md",
         "current": {"text": "https://github.com/YOUR-ORG/flashgate/blob/main/docs/runbook.md",
                     "value": "https://github.com/YOUR-ORG/flashgate/blob/main/docs/runbook.md"},
         "hide": 0},
    ]},
    "panels": panels,
}
print(json.dumps(dash, indent=1))
