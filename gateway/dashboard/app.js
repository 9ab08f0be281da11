/*
 * flashgate's dashboard. The history comes from the gateway, not the page:
 * GET /admin/v1/history holds the last 15 minutes of 1 s samples (a ring on
 * the server), loaded whole when the page opens and then polled for the new
 * samples, so a page opened after a sale shows the sale. GET /admin/v1/stats
 * feeds the tables and counters, GET /admin/v1/fleet the fleet table (every
 * live gateway on the same Redis). The admin token typed in the page is kept
 * in sessionStorage and sent as a bearer header.
 *
 * Colours have a meaning and never move with the order of the series:
 * accepted 202 green, other 2xx pale green, sold out 410 purple, rate limited
 * 429 blue, other 4xx grey, 5xx red.
 */
"use strict";
(function () {
  const POINTS = 900; /* the server's ring: GW_RING_SLOTS */
  const CLASS_COLOURS = { "202": "#2ca02c", "2xx": "#98df8a", "410": "#9467bd", "429": "#1f77b4", "4xx": "#8c8c8c", "5xx": "#d62728" };
  const CLASS_LABELS = { "202": "202 accepted", "2xx": "other 2xx/3xx", "410": "410 sold out", "429": "429 rate limited", "4xx": "other 4xx", "5xx": "5xx errors" };
  const CLASSES = ["202", "2xx", "410", "429", "4xx", "5xx"];
  const PALETTE = ["#264653", "#e76f51", "#2a9d8f", "#8e44ad", "#f4a261", "#1d3557", "#b5838d", "#6d597a"];
  const $ = (id) => document.getElementById(id);
  let token = sessionStorage.getItem("flashgate-token") || "";
  let timer = null, polls = 0;
  let ring = null; /* the server's history, columns as GET /admin/v1/history gives them */
  const charts = {};
  window.fgDashboard = { charts, ring: () => ring, openedAt: Date.now() };

  async function api(method, path, body) {
    const h = { Authorization: "Bearer " + token };
    if (body !== undefined) h["Content-Type"] = "application/json";
    const r = await fetch(path, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body) });
    let j = null;
    try { j = await r.json(); } catch (e) { j = null; }
    return { status: r.status, json: j };
  }

  /* A chart whose series (and so colours) are rebuilt only when their names change. */
  function chart(id, series, opts) {
    const el = $(id);
    const names = series.map((x) => x.label).join("|");
    if (charts[id] && charts[id].names === names) return charts[id].u;
    if (charts[id]) charts[id].u.destroy();
    const u = new uPlot(Object.assign({ width: Math.max(el.clientWidth, 400), height: 200,
      series: [{}].concat(series.map((x) => Object.assign({ width: 2 }, x))),
      axes: [{}, { size: 60 }], scales: { x: { time: true } } }, opts || {}),
      [[]].concat(series.map(() => [])), el);
    charts[id] = { u, names };
    return u;
  }

  function draw(id, series, cols, opts) {
    const u = chart(id, series, opts);
    u.setData([ring.t_ms.map((t) => t / 1000)].concat(cols));
  }

  /* Appends the samples of h (a later GET /admin/v1/history?since=) to ring, keeping POINTS. */
  function merge(h) {
    if (!ring) { ring = h; return; }
    const n = h.t_ms.length;
    if (!n) return;
    const old = ring.t_ms.length;
    const cat = (a, b, pad) => (a || new Array(old).fill(pad)).concat(b || new Array(n).fill(pad));
    const catObj = (a, b) => {
      const out = {};
      for (const k of new Set(Object.keys(a).concat(Object.keys(b)))) out[k] = cat(a[k], b[k], null);
      return out;
    };
    for (const k of Object.keys(h)) {
      if (k === "t_ms" || Array.isArray(h[k]) && k !== "classes") ring[k] = cat(ring[k], h[k], null);
      else if (h[k] && typeof h[k] === "object" && !Array.isArray(h[k])) ring[k] = catObj(ring[k] || {}, h[k]);
    }
    const drop = ring.t_ms.length - POINTS;
    if (drop > 0) {
      for (const k of Object.keys(ring)) {
        if (k === "classes") continue;
        if (Array.isArray(ring[k])) ring[k] = ring[k].slice(drop);
        else if (ring[k] && typeof ring[k] === "object") for (const j of Object.keys(ring[k])) ring[k][j] = ring[k][j].slice(drop);
      }
    }
  }

  async function loadHistory() {
    const since = ring && ring.t_ms.length ? ring.t_ms[ring.t_ms.length - 1] : 0;
    const r = await api("GET", "/admin/v1/history" + (since ? "?since=" + since : ""));
    if (r.status !== 200 || !r.json) return false;
    merge(r.json);
    return true;
  }

  const fmt = (v, d) => v === null || v === undefined ? "-" : Number(v).toFixed(d);
  function bytes(n) {
    if (n === null || n === undefined) return "-";
    return n >= 1048576 ? (n / 1048576).toFixed(1) + " MiB" : n >= 1024 ? (n / 1024).toFixed(1) + " KiB" : n + " B";
  }

  function drawHistory() {
    if (!ring || !ring.t_ms.length) return;
    const n = ring.t_ms.length;
    $("history-info").textContent = "history: " + n + " samples, from " +
      new Date(ring.t_ms[0]).toLocaleTimeString() + " (kept by the gateway: the last " + (ring.capacity * ring.period_ms / 60000) + " minutes)";
    draw("c-answers", CLASSES.map((c) => ({ label: CLASS_LABELS[c], stroke: CLASS_COLOURS[c] })),
      CLASSES.map((c) => ring.answers_per_s[c]));
    draw("c-errors", [{ label: "error ratio %", stroke: "#d62728", scale: "pct" },
      { label: "ready (1 = yes)", stroke: "#2ca02c", scale: "ready", paths: uPlot.paths.stepped({ align: 1 }) }],
      [ring.error_ratio.map((x) => x === null ? null : x * 100), ring.ready],
      { scales: { x: { time: true }, pct: { range: (u, lo, hi) => [0, Math.max(1, hi)] }, ready: { range: [0, 1.2] } },
        axes: [{}, { scale: "pct", size: 60 }, { scale: "ready", side: 1, values: (u, v) => v.map((x) => x === 1 ? "ready" : x === 0 ? "not" : ""), size: 50 }] });
    draw("c-latency", [{ label: "buy p50 ms", stroke: "#1f77b4" }, { label: "buy p99 ms", stroke: "#ff7f0e" }],
      [ring.buy_p50_ms, ring.buy_p99_ms]);
    const sids = Object.keys(ring.stock_left).sort().slice(0, 4);
    draw("c-sales", sids.flatMap((id, i) => [{ label: id + " accepted", stroke: PALETTE[i % PALETTE.length] },
      { label: id + " left", stroke: PALETTE[i % PALETTE.length], dash: [6, 4] }]),
      sids.flatMap((id) => [ring.accepted_units[id], ring.stock_left[id]]));
    const deps = Object.keys(ring.limits).sort();
    draw("c-degrade", [{ label: "degrade level", stroke: "#d62728", scale: "level", width: 3, paths: uPlot.paths.stepped({ align: 1 }) }]
      .concat(deps.map((d, i) => ({ label: d + " limit", stroke: PALETTE[i % PALETTE.length], scale: "limit" }))),
      [ring.level].concat(deps.map((d) => ring.limits[d])),
      { scales: { x: { time: true }, level: { range: [0, 3] }, limit: { range: (u, lo, hi) => [0, Math.max(1, hi * 1.1)] } },
        axes: [{}, { scale: "limit", size: 60 }, { scale: "level", side: 1, size: 40, splits: () => [0, 1, 2, 3], grid: { show: false } }] });
    draw("c-backlog", [{ label: "spool unreleased KiB", stroke: "#264653", scale: "n" },
      { label: "relay in flight", stroke: "#2a9d8f", scale: "n" },
      { label: "awaiting settle", stroke: "#8e44ad", scale: "n" },
      { label: "relay lag ms", stroke: "#e76f51", scale: "ms" }],
      [ring.spool_bytes.map((x) => x === null ? null : x / 1024), ring.relay_inflight, ring.awaiting_outcome, ring.relay_lag_ms],
      { scales: { x: { time: true }, n: { range: (u, lo, hi) => [0, Math.max(1, hi * 1.1)] }, ms: { range: (u, lo, hi) => [0, Math.max(10, hi * 1.1)] } },
        axes: [{}, { scale: "n", size: 60 }, { scale: "ms", side: 1, size: 60 }] });
    const outs = Object.keys(ring.identity_per_s).sort((a, b) => (a === "ok" ? -1 : b === "ok" ? 1 : a < b ? -1 : 1));
    $("identity-info").textContent = outs.length ? "" : "no identity verifications in the history (identity.mode off, or no buys)";
    draw("c-identity", outs.map((o, i) => ({ label: o, stroke: o === "ok" ? "#2ca02c" : o === "no_keys" ? "#d62728" : PALETTE[i % PALETTE.length] })),
      outs.map((o) => ring.identity_per_s[o]));
  }

  function fleetRow(tr, m, now) {
    const f = m.figures || {};
    const a = f.answers_per_s || {};
    tr.dataset.member = m.member;
    tr.className = "fleet-row" + (m.self ? " self" : "");
    cell(tr, (f.listen || m.member) + (m.self ? " (this one)" : "")).title = m.member;
    const rd = cell(tr, f.ready ? "ready" : "NOT READY");
    rd.className = "ready" + (f.ready ? "" : " bad");
    cell(tr, f.level === undefined ? "-" : f.level + (f.pinned ? " pinned" : "")).className = "level";
    cell(tr, fmt(a["202"], 1)).className = "accepted-rate";
    cell(tr, fmt(a["410"], 1));
    cell(tr, fmt((a["429"] || 0) + (a["4xx"] || 0), 1));
    const e5 = cell(tr, fmt(a["5xx"], 1));
    if (a["5xx"] > 0) e5.className = "bad";
    const er = cell(tr, f.error_ratio === undefined ? "-" : (f.error_ratio * 100).toFixed(2) + " %");
    if (f.error_ratio > 0.01) er.className = "bad";
    cell(tr, fmt(f.buy_p50_ms, 2) + " / " + fmt(f.buy_p99_ms, 2));
    cell(tr, f.accepted_units === undefined ? "-" : f.accepted_units).className = "accepted-units";
    cell(tr, bytes(f.spool_bytes));
    cell(tr, f.relay_lag_ms === undefined ? "-" : f.relay_lag_ms);
    cell(tr, f.awaiting_outcome === undefined ? "-" : f.awaiting_outcome);
    cell(tr, f.t_ms ? ((now - f.t_ms) / 1000).toFixed(1) : "-");
  }

  async function loadFleet() {
    const r = await api("GET", "/admin/v1/fleet");
    if (r.status !== 200 || !r.json) return;
    const fl = r.json;
    const ms = fl.members.slice().sort((x, y) => (x.self ? -1 : y.self ? 1 : x.member < y.member ? -1 : 1));
    $("fleet-info").textContent = fl.fleet ? "(" + ms.length + " live gateways on the Redis inventory; figures published each second)" : "(no fleet: a memory inventory)";
    rows($("t-fleet").tBodies[0], ms, (tr, m) => fleetRow(tr, m, fl.now_ms));
  }

  /* The newest sample's figures over the last k samples (answers and errors). */
  function recent(k) {
    if (!ring || !ring.t_ms.length) return null;
    const n = ring.t_ms.length, from = Math.max(0, n - k);
    let all = 0, err = 0;
    for (let i = from; i < n; i++) for (const c of CLASSES) { const v = ring.answers_per_s[c][i] || 0; all += v; if (c === "5xx") err += v; }
    let p = n - 1; /* the newest second with a buy */
    while (p > from && ring.buy_p99_ms[p] === null) p--;
    return { ratio: all ? err / all : 0, p50: ring.buy_p50_ms[p], p99: ring.buy_p99_ms[p],
      ready: ring.ready[n - 1], spool: ring.spool_bytes[n - 1], lag: ring.relay_lag_ms[n - 1] };
  }

  function cell(tr, v) { const td = document.createElement("td"); td.textContent = v; tr.appendChild(td); return td; }
  function rows(tbody, list, fn) {
    tbody.textContent = "";
    for (const x of list) { const tr = document.createElement("tr"); fn(tr, x); tbody.appendChild(tr); }
  }

  function render(s) {
    $("n-requests").textContent = s.requests;
    $("n-accepted").textContent = s.accepted_units;
    $("n-ratelimited").textContent = Object.values(s.rate_limited).reduce((a, x) => a + x, 0);
    $("n-version").textContent = s.config_version;
    const ol = s.overload || null;
    $("n-level").textContent = ol ? ol.level + " " + ol.level_name + (ol.pinned ? " (pinned)" : "") : "0";
    const rc = recent(5);
    if (rc) {
      $("n-ready").textContent = rc.ready ? "ready" : "NOT READY";
      $("n-ready").className = "num " + (rc.ready ? "ok" : "err");
      $("n-errratio").textContent = (rc.ratio * 100).toFixed(2) + " %";
      $("n-errratio").className = "num" + (rc.ratio > 0.01 ? " err" : "");
      $("n-p99").textContent = fmt(rc.p50, 2) + " / " + fmt(rc.p99, 2);
      $("n-spool").textContent = bytes(rc.spool);
      $("n-relaylag").textContent = rc.lag + " ms";
    }
    rows($("t-sales").tBodies[0], s.sales, (tr, x) => {
      tr.dataset.sale = x.sale_id;
      cell(tr, x.sale_id); cell(tr, x.state);
      cell(tr, x.stock_left).className = "stock-left";
      cell(tr, x.stock_total);
      cell(tr, x.accepted_units).className = "accepted-units";
      cell(tr, x.accepted_orders);
    });
    const deps = ol && ol.limits ? Object.keys(ol.limits).sort() : [];
    rows($("t-deps").tBodies[0], deps, (tr, d) => {
      const x = ol.limits[d];
      cell(tr, d); cell(tr, x.limit); cell(tr, x.inflight); cell(tr, x.rejected); cell(tr, x.rtt_us); cell(tr, x.rtt_target_us || ""); cell(tr, x.breaker || "");
    });

    const hh = s.heavy_hitters;
    rows($("t-hitters").tBodies[0],
      hh.users.map((x) => ["user", x]).concat(hh.ips.map((x) => ["ip", x])),
      (tr, [kind, x]) => { cell(tr, kind); cell(tr, x.key); cell(tr, x.lower_bound); cell(tr, x.count); });

    rows($("t-rules").tBodies[0], s.rules, (tr, r) => {
      tr.dataset.sale = r.sale_id;
      cell(tr, r.sale_id);
      cell(tr, r.user_rps + " / " + r.user_burst);
      cell(tr, r.sale_rps + " / " + r.sale_burst);
      cell(tr, r.dry_run ? "yes" : "no");
      cell(tr, r.rejected.user + r.rejected.sale).className = "rejected";
      cell(tr, r.dry_run_rejected.user + r.dry_run_rejected.sale).className = "dry-run-rejected";
      const b = document.createElement("button");
      b.textContent = "delete";
      b.addEventListener("click", async () => {
        if (!window.confirm("Delete the rule of sale " + r.sale_id + "?")) return;
        await api("DELETE", "/admin/v1/rules/" + encodeURIComponent(r.sale_id));
      });
      cell(tr, "").appendChild(b);
    });
  }

  async function poll() {
    const started = Date.now();
    const r = await api("GET", "/admin/v1/stats").catch(() => null);
    if (!r || r.status !== 200) {
      $("status").textContent = r ? "error " + r.status + (r.json ? " " + r.json.error : "") : "unreachable";
      $("status").className = "err";
      return;
    }
    $("status").textContent = "live";
    $("status").className = "ok";
    await loadHistory().catch(() => false);
    if (polls++ % 2 === 0) await loadFleet().catch(() => null);
    render(r.json);
    drawHistory();
    $("status").dataset.started = String(started);
    $("status").dataset.polls = String(Number($("status").dataset.polls || 0) + 1);
  }

  async function fillLimits() {
    const r = await api("GET", "/admin/v1/limits");
    if (r.status !== 200) return;
    const f = $("f-limits");
    for (const [k, v] of Object.entries(r.json)) if (f.elements[k]) f.elements[k].value = v;
  }

  function num(v) { return v === "" ? undefined : Number(v); }

  function form(id, fn) {
    $(id).addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const msg = $(id).querySelector(".msg");
      msg.textContent = "...";
      const r = await fn($(id).elements);
      if (!r) { msg.textContent = "cancelled"; msg.className = "msg"; return; }
      msg.textContent = r.status + " " + (r.status < 300 ? "ok" : (r.json && r.json.message) || "");
      msg.className = "msg " + (r.status < 300 ? "ok" : "err");
      poll();
    });
  }

  form("f-limits", (e) => {
    const body = {};
    for (const k of ["global_rps", "global_burst", "sale_rps", "sale_burst", "user_rps", "user_burst", "ip_rps", "ip_burst", "subnet_rps", "subnet_burst"]) {
      const v = e[k] ? num(e[k].value) : undefined;
      if (v !== undefined) body[k] = v;
    }
    return api("PATCH", "/admin/v1/limits", body);
  });
  form("f-rule", (e) => {
    const body = { dry_run: e.dry_run.checked };
    for (const k of ["user_rps", "user_burst", "sale_rps", "sale_burst"]) {
      const v = num(e[k].value);
      if (v !== undefined) body[k] = v;
    }
    return api("PUT", "/admin/v1/rules/" + encodeURIComponent(e.sale_id.value), body);
  });
  /* Restock and level pins change what buyers get at once: asked for again. */
  form("f-restock", (e) => {
    if (!window.confirm("Add " + e.add.value + " units to sale " + e.sale_id.value + "? Buyers can take them at once.")) return null;
    return api("POST", "/admin/v1/sales/" + encodeURIComponent(e.sale_id.value) + "/restock", { add: num(e.add.value) });
  });
  form("f-degrade", (e) => {
    const v = e.level.value;
    const q = v === "auto" ? "Return the degrade level to automatic?" :
      "Pin the degrade level at " + v + "? It stays there until changed again" + (v === "0" ? "." : ": level " + v + " sheds traffic.");
    if (!window.confirm(q)) return null;
    return api("PUT", "/admin/v1/degrade", { level: v === "auto" ? "auto" : Number(v) });
  });

  function connect() {
    token = $("token").value.trim();
    sessionStorage.setItem("flashgate-token", token);
    ring = null;
    if (timer) clearInterval(timer);
    poll();
    fillLimits();
    timer = setInterval(poll, 1000);
  }
  $("connect").addEventListener("click", connect);
  $("token").addEventListener("keydown", (ev) => { if (ev.key === "Enter") connect(); });
  if (token) { $("token").value = token; connect(); }
})();
