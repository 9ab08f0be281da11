// Drives Debian's headless chromium (playwright-core, executablePath /usr/bin/chromium)
// against a running flashgate: the dashboard loads without console errors, its numbers
// match /admin/v1/stats during a small load, a limit changed in the form takes effect on
// the public API, restock and level pins ask first (declined: no change), the charts draw
// the server's history with fixed colours, and a screenshot is written. Started by tests/integration/20-dashboard.py,
// which passes FG_ADMIN, FG_PUBLIC, FG_TOKEN, FG_SALE, FG_SHOT, FG_PROFILE, FG_MODULES.
"use strict";
const path = require("path");
const { chromium } = require(path.join(process.env.FG_MODULES, "playwright-core"));

const ADMIN = process.env.FG_ADMIN, PUB = process.env.FG_PUBLIC, TOKEN = process.env.FG_TOKEN;
const SALE = process.env.FG_SALE;
let failures = 0, passes = 0;
function check(cond, what) {
  if (cond) { passes++; return; }
  failures++;
  console.error("FAIL: " + what);
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function stats() {
  const r = await fetch(ADMIN + "/admin/v1/stats", { headers: { Authorization: "Bearer " + TOKEN } });
  return r.json();
}
async function buy(user) {
  const r = await fetch(PUB + "/v1/sales/" + SALE + "/orders", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ user_id: user }) });
  return { status: r.status, json: await r.json() };
}

(async () => {
  const ctx = await chromium.launchPersistentContext(process.env.FG_PROFILE, {
    executablePath: "/usr/bin/chromium", headless: true, timeout: 60000,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const page = ctx.pages()[0] || await ctx.newPage();
  const consoleErrors = [];
  page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
  page.on("pageerror", (e) => consoleErrors.push(String(e.stack || e)));
  page.setDefaultTimeout(30000);
  // Restock and level pins ask for confirmation (window.confirm): answered as `dialogAnswer` says.
  const dialogs = [];
  let dialogAnswer = true;
  page.on("dialog", async (d) => { dialogs.push(d.message()); await (dialogAnswer ? d.accept() : d.dismiss()); });
  try {
    const resp = await page.goto(ADMIN + "/admin/");
    check(resp.status() === 200, "dashboard page 200 without a token");
    check(await page.evaluate(() => typeof uPlot === "function"), "uPlot loaded from the binary");
    await page.fill("#token", TOKEN);
    await page.click("#connect");
    await page.waitForFunction(() => Number(document.getElementById("status").dataset.polls || 0) >= 2);
    check(await page.textContent("#status") === "live", "page polls the stats");

    // During the load: the page's counters lie between two stats taken around its poll.
    const pollStarted = () => page.evaluate(() => Number(document.getElementById("status").dataset.started || 0));
    for (let round = 0; round < 3; round++) {
      const s1 = await stats();
      const t1 = Date.now();
      await page.waitForFunction((t) => Number(document.getElementById("status").dataset.started || 0) > t, t1);
      const shown = await page.evaluate((sale) => ({
        requests: Number(document.getElementById("n-requests").textContent),
        accepted: Number(document.getElementById("n-accepted").textContent),
        left: Number(document.querySelector('#t-sales tr[data-sale="' + sale + '"] .stock-left').textContent),
      }), SALE);
      const s2 = await stats();
      const l1 = s1.sales.find((x) => x.sale_id === SALE).stock_left;
      const l2 = s2.sales.find((x) => x.sale_id === SALE).stock_left;
      check(s1.requests <= shown.requests && shown.requests <= s2.requests,
        `round ${round}: requests ${s1.requests} <= ${shown.requests} <= ${s2.requests}`);
      check(s1.accepted_units <= shown.accepted && shown.accepted <= s2.accepted_units,
        `round ${round}: accepted ${s1.accepted_units} <= ${shown.accepted} <= ${s2.accepted_units}`);
      check(l2 <= shown.left && shown.left <= l1, `round ${round}: stock left ${l2} <= ${shown.left} <= ${l1}`);
      await sleep(300);
    }
    // Wait for the load to end (FG_LOAD_DONE file), then the numbers match exactly.
    const fs = require("fs");
    for (let i = 0; i < 300 && !fs.existsSync(process.env.FG_LOAD_DONE); i++) await sleep(100);
    check(fs.existsSync(process.env.FG_LOAD_DONE), "load finished");
    const s = await stats();
    const t = Date.now();
    await page.waitForFunction((x) => Number(document.getElementById("status").dataset.started || 0) > x, t);
    const s3 = await stats();
    check(s.requests === s3.requests, "no traffic after the load");
    check(Number(await page.textContent("#n-requests")) === s3.requests, "requests match exactly after the load");
    check(Number(await page.textContent("#n-accepted")) === s3.accepted_units, "accepted units match");
    const sale = s3.sales.find((x) => x.sale_id === SALE);
    check(Number(await page.textContent(`#t-sales tr[data-sale="${SALE}"] .stock-left`)) === sale.stock_left, "stock left matches");
    check(Number(await page.textContent(`#t-sales tr[data-sale="${SALE}"] .accepted-units`)) === sale.accepted_units, "sale accepted units match");
    check(await page.evaluate(() => document.querySelectorAll("#c-answers .u-series").length) >= 2, "answers chart has series");

    // A limit changed in the form takes effect on the public API.
    check((await buy("form-user")).status === 202, "buy before the limit");
    await page.fill("#f-limits [name=user_rps]", "0.001");
    await page.fill("#f-limits [name=user_burst]", "1");
    await page.click("#f-limits button");
    await page.waitForFunction(() => /^200/.test(document.querySelector("#f-limits .msg").textContent));
    // The limit was off, so the user's bucket starts full now: burst 1, then refused.
    check((await buy("form-user")).status === 202, "first buy within the form's burst of 1");
    const refused = await buy("form-user");
    check(refused.status === 429 && refused.json.scope === "user", "the form's user limit refuses: " + JSON.stringify(refused));
    check((await buy("form-user-2")).status === 202, "another user still buys (burst 1)");
    check((await buy("form-user-2")).status === 429, "and is then limited");

    // A dry-run rule from the form shows up with its would-reject count.
    await page.fill("#f-rule [name=sale_id]", SALE);
    await page.fill("#f-rule [name=sale_rps]", "0.001");
    await page.fill("#f-rule [name=sale_burst]", "1");
    await page.check("#f-rule [name=dry_run]");
    await page.click("#f-rule button");
    await page.waitForFunction(() => /^20[01]/.test(document.querySelector("#f-rule .msg").textContent));
    const statuses = [];
    for (let i = 0; i < 3; i++) statuses.push((await buy("dry-" + i)).status);
    check(statuses.every((x) => x === 202), "dry-run rule from the form refuses nothing: " + statuses);
    await page.waitForFunction((sale) => {
      const c = document.querySelector(`#t-rules tr[data-sale="${sale}"] .dry-run-rejected`);
      return c && Number(c.textContent) === 2;
    }, SALE);
    check(true, "rules table shows 2 would-be rejections");

    // Restock from the form: asked first; declined, nothing changes.
    const before = (await stats()).sales.find((x) => x.sale_id === SALE).stock_total;
    await page.fill("#f-restock [name=sale_id]", SALE);
    await page.fill("#f-restock [name=add]", "5");
    dialogAnswer = false;
    await page.click("#f-restock button");
    await page.waitForFunction(() => document.querySelector("#f-restock .msg").textContent === "cancelled");
    check(dialogs.length === 1 && /5 units to sale/.test(dialogs[0]), "restock asks first: " + JSON.stringify(dialogs));
    check((await stats()).sales.find((x) => x.sale_id === SALE).stock_total === before, "a declined restock changes nothing");
    dialogAnswer = true;
    await page.click("#f-restock button");
    await page.waitForFunction(() => /^200/.test(document.querySelector("#f-restock .msg").textContent));
    check((await stats()).sales.find((x) => x.sale_id === SALE).stock_total === before + 5, "restock from the form");

    // Pin the degrade level from the form; the page shows it, the API agrees.
    await page.selectOption("#f-degrade [name=level]", "1");
    const asked = dialogs.length;
    await page.click("#f-degrade button");
    // The gateway starts pinned at level 0 ("0 normal (pinned)"): wait for the form's answer
    // and for level 1 on the page, not for "pinned" alone, which is there before the PUT lands.
    await page.waitForFunction(() => /^200/.test(document.querySelector("#f-degrade .msg").textContent));
    await page.waitForFunction(() => /^1 .*pinned/.test(document.getElementById("n-level").textContent));
    const dg = await (await fetch(ADMIN + "/admin/v1/degrade", { headers: { Authorization: "Bearer " + TOKEN } })).json();
    check(dg.level === 1 && dg.mode === "pinned", "degrade pinned from the form: " + JSON.stringify(dg));
    check(dialogs.length === asked + 1 && /Pin the degrade level at 1/.test(dialogs[asked]), "the pin asked first: " + JSON.stringify(dialogs));

    // The charts draw the server's ring: the load's accepted answers are in it, in green.
    const hist = await page.evaluate(() => {
      const r = window.fgDashboard.ring();
      const u = window.fgDashboard.charts["c-answers"].u;
      return { n: r.t_ms.length, accepted: Math.max(...r.answers_per_s["202"].map((x) => x || 0)),
        green: u.series[1].label === "202 accepted" && u.series[1].stroke(u, 1) === "#2ca02c",
        red: u.series[6].label === "5xx errors" && u.series[6].stroke(u, 6) === "#d62728",
        level: window.fgDashboard.charts["c-degrade"].u.scales.level };
    });
    check(hist.n >= 5 && hist.accepted > 10, "history from the ring: " + JSON.stringify(hist));
    check(hist.green && hist.red, "fixed colours: 202 green, 5xx red");
    check(hist.level && hist.level.min === 0 && hist.level.max === 3, "degrade level on its own 0-3 axis: " + JSON.stringify(hist.level));

    await sleep(1200);
    await page.screenshot({ path: process.env.FG_SHOT, fullPage: true });
    check(fs.statSync(process.env.FG_SHOT).size > 10000, "screenshot written");
  } catch (e) {
    check(false, "exception: " + (e && e.stack || e));
  } finally {
    check(consoleErrors.length === 0, "no console errors: " + JSON.stringify(consoleErrors));
    await ctx.close();
  }
  console.log(`${passes} passed, ${failures} failed`);
  process.exit(failures ? 1 : 0);
})();
