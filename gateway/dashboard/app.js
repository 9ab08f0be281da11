/*
 * flashgate's dashboard: polls GET /admin/v1/stats once a second with the
 * admin token typed in the page (kept in sessionStorage, sent as a bearer
 * header) and draws the figures with uPlot. The page itself holds no data.
 */
"use strict";
(function () {
  const POINTS = 120;
  const $ = (id) => document.getElementById(id);
  let token = sessionStorage.getItem("flashgate-token") || "";
  let timer = null, last = null, lastT = 0;
  const hist = { t: [], answers: {}, p99: [], level: [], sales: {} };
  const charts = {};

  async function api(method, path, body) {
    const h = { Authorization: "Bearer " + token };
    if (body !== undefined) h["Content-Type"] = "application/json";
    const r = await fetch(path, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body) });
    let j = null;
    try { j = await r.json(); } catch (e) { j = null; }
    return { status: r.status, json: j };
  }

  function push(arr, v) { arr.push(v); if (arr.length > POINTS) arr.shift(); }

  function chart(id, seriesNames, key) {
    const el = $(id);
    const names = seriesNames.join("|");
    if (charts[id] && charts[id].names === names) return charts[id].u;
    if (charts[id]) charts[id].u.destroy();
    const palette = ["#2a9d8f", "#e76f51", "#264653", "#e9c46a", "#8e44ad", "#f4a261", "#1d3557", "#c0392b"];
    const series = [{}].concat(seriesNames.map((n, i) => ({ label: n, stroke: palette[i % palette.length], width: 2 })));
    const u = new uPlot({ width: Math.max(el.clientWidth, 400), height: 200, series, axes: [{}, { size: 70 }],
      scales: { x: { time: true } } }, [[]].concat(seriesNames.map(() => [])), el);
    charts[id] = { u, names, key };
    return u;
  }

  function draw(id, names, xs, cols) {
    const u = chart(id, names);
    u.setData([xs.slice()].concat(cols.map((c) => c.slice())));
  }

  /* p99 of the interval from the buy route's histogram deltas (upper bound of the bucket). */
  function p99ms(cur, prev) {
    const b = cur.latency.bounds_us, c = cur.latency.buy.counts, p = prev ? prev.latency.buy.counts : null;
    const d = c.map((x, i) => x - (p ? p[i] : 0));
    const n = d.reduce((a, x) => a + x, 0);
    if (!n) return null;
    let acc = 0;
    for (let i = 0; i < d.length; i++) {
      acc += d[i];
      if (acc >= 0.99 * n) return i < b.length ? b[i] / 1000 : b[b.length - 1] / 1000 * 2;
    }
    return null;
  }

  function cell(tr, v) { const td = document.createElement("td"); td.textContent = v; tr.appendChild(td); return td; }
  function rows(tbody, list, fn) {
    tbody.textContent = "";
    for (const x of list) { const tr = document.createElement("tr"); fn(tr, x); tbody.appendChild(tr); }
  }

  function render(s) {
    const now = Date.now() / 1000;
    const dt = last ? Math.max(now - lastT, 0.001) : 1;
    $("n-requests").textContent = s.requests;
    $("n-accepted").textContent = s.accepted_units;
    $("n-ratelimited").textContent = Object.values(s.rate_limited).reduce((a, x) => a + x, 0);
    $("n-version").textContent = s.config_version;
    const ol = s.overload || null;
    $("n-level").textContent = ol ? ol.level + " " + ol.level_name + (ol.pinned ? " (pinned)" : "") : "0";

    push(hist.t, now);
    const codes = new Set(Object.keys(s.replies).concat(Object.keys(hist.answers)));
    for (const k of codes) {
      if (!hist.answers[k]) hist.answers[k] = hist.t.slice(0, -1).map(() => null);
      const cur = s.replies[k] || 0, prev = last ? (last.replies[k] || 0) : cur;
      push(hist.answers[k], last ? (cur - prev) / dt : null);
    }
    const keys = Object.keys(hist.answers).sort();
    draw("c-answers", keys, hist.t, keys.map((k) => hist.answers[k]));

    push(hist.p99, p99ms(s, last));
    draw("c-latency", ["buy p99 ms"], hist.t, [hist.p99]);

    for (const sale of s.sales) {
      const id = sale.sale_id;
      if (!hist.sales[id]) hist.sales[id] = { acc: hist.t.slice(0, -1).map(() => null), left: hist.t.slice(0, -1).map(() => null) };
    }
    for (const id of Object.keys(hist.sales)) {
      const sale = s.sales.find((x) => x.sale_id === id);
      push(hist.sales[id].acc, sale ? sale.accepted_units : null);
      push(hist.sales[id].left, sale ? sale.stock_left : null);
    }
    const sids = Object.keys(hist.sales).sort().slice(0, 4);
    draw("c-sales", sids.flatMap((id) => [id + " accepted", id + " left"]), hist.t,
      sids.flatMap((id) => [hist.sales[id].acc, hist.sales[id].left]));
    rows($("t-sales").tBodies[0], s.sales, (tr, x) => {
      tr.dataset.sale = x.sale_id;
      cell(tr, x.sale_id); cell(tr, x.state);
      cell(tr, x.stock_left).className = "stock-left";
      cell(tr, x.stock_total);
      cell(tr, x.accepted_units).className = "accepted-units";
      cell(tr, x.accepted_orders);
    });

    push(hist.level, ol ? ol.level : 0);
    const deps = ol && ol.limits ? Object.keys(ol.limits).sort() : [];
    draw("c-degrade", ["level"].concat(deps.map((d) => d + " limit")), hist.t,
      [hist.level].concat(deps.map((d) => {
        const k = "lim:" + d;
        if (!hist[k]) hist[k] = hist.t.slice(0, -1).map(() => null);
        push(hist[k], ol.limits[d].limit);
        return hist[k];
      })));
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
      b.addEventListener("click", async () => { await api("DELETE", "/admin/v1/rules/" + encodeURIComponent(r.sale_id)); });
      cell(tr, "").appendChild(b);
    });
    last = s;
    lastT = now;
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
    render(r.json);
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
  form("f-restock", (e) => api("POST", "/admin/v1/sales/" + encodeURIComponent(e.sale_id.value) + "/restock", { add: num(e.add.value) }));
  form("f-degrade", (e) => {
    const v = e.level.value;
    return api("PUT", "/admin/v1/degrade", { level: v === "auto" ? "auto" : Number(v) });
  });

  function connect() {
    token = $("token").value.trim();
    sessionStorage.setItem("flashgate-token", token);
    last = null;
    if (timer) clearInterval(timer);
    poll();
    fillLimits();
    timer = setInterval(poll, 1000);
  }
  $("connect").addEventListener("click", connect);
  $("token").addEventListener("keydown", (ev) => { if (ev.key === "Enter") connect(); });
  if (token) { $("token").value = token; connect(); }
})();
