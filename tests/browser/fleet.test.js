// Drives Debian's headless chromium (playwright-core) against the first of three gateways
// on one Redis, after a load: the fleet table lists the three with figures, and the charts
// show the load from before the page was opened, again after a reload (the server's ring).
// Started by tests/integration/48-dashboard-fleet.py, which passes FG_ADMIN, FG_TOKEN,
// FG_SHOT, FG_PROFILE, FG_MODULES, FG_LOADED_AT_MS and FG_LISTENS.
"use strict";
const path = require("path");
const { chromium } = require(path.join(process.env.FG_MODULES, "playwright-core"));

const ADMIN = process.env.FG_ADMIN, TOKEN = process.env.FG_TOKEN;
const LISTENS = process.env.FG_LISTENS.split(",");
let failures = 0, passes = 0;
function check(cond, what) {
  if (cond) { passes++; return; }
  failures++;
  console.error("FAIL: " + what);
}

/* The page's history as drawn: samples before the page opened and the largest 202 rate among them. */
const drawnBefore = (page) => page.evaluate(() => {
  const d = window.fgDashboard;
  const u = d.charts["c-answers"].u;
  const xs = u.data[0], acc = u.data[1];
  let before = 0, peak = 0;
  for (let i = 0; i < xs.length; i++) {
    if (xs[i] * 1000 < d.openedAt) { before++; peak = Math.max(peak, acc[i] || 0); }
  }
  const p99 = window.fgDashboard.charts["c-latency"].u.data[2].filter((x) => x > 0).length;
  return { before, peak, p99, openedAt: d.openedAt };
});

(async () => {
  const ctx = await chromium.launchPersistentContext(process.env.FG_PROFILE, {
    executablePath: "/usr/bin/chromium", headless: true, timeout: 60000,
    viewport: { width: 1400, height: 900 },
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const page = ctx.pages()[0] || await ctx.newPage();
  const consoleErrors = [];
  page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
  page.on("pageerror", (e) => consoleErrors.push(String(e.stack || e)));
  page.setDefaultTimeout(20000);
  try {
    await page.goto(ADMIN + "/admin/");
    await page.fill("#token", TOKEN);
    await page.click("#connect");
    await page.waitForFunction(() => Number(document.getElementById("status").dataset.polls || 0) >= 1);

    // The fleet table: three live gateways, each with its own accepted units and readiness.
    await page.waitForFunction(() => document.querySelectorAll("#t-fleet tr.fleet-row").length === 3);
    const rows = await page.evaluate(() => [...document.querySelectorAll("#t-fleet tr.fleet-row")].map((tr) => ({
      member: tr.dataset.member, self: tr.classList.contains("self"),
      ready: tr.querySelector(".ready").textContent, level: tr.querySelector(".level").textContent,
      accepted: Number(tr.querySelector(".accepted-units").textContent),
    })));
    check(rows.length === 3, "fleet lists three gateways: " + JSON.stringify(rows));
    for (const l of LISTENS)
      check(rows.some((r) => r.member.endsWith(":" + l)), "gateway " + l + " in the fleet table");
    check(rows.every((r) => r.ready === "ready" && r.accepted > 0 && /^0/.test(r.level)),
      "each member's figures (ready, level 0, accepted units): " + JSON.stringify(rows));
    check(rows.filter((r) => r.self).length === 1 && rows[0].self, "this gateway first and marked");

    // Charts from the ring: the load ran before the page opened.
    let h = await drawnBefore(page);
    check(h.before >= 4 && h.peak > 5, "history before the page opened, not flat: " + JSON.stringify(h));
    check(h.p99 > 0, "buy p99 drawn from the ring");

    // Reload: the page has no memory of its own (token in sessionStorage), the ring does.
    await page.reload();
    await page.waitForFunction(() => Number(document.getElementById("status").dataset.polls || 0) >= 1);
    h = await drawnBefore(page);
    check(h.before >= 4 && h.peak > 5, "after a reload the charts still show the load: " + JSON.stringify(h));
    const ready = await page.textContent("#n-ready");
    check(ready === "ready", "readiness shown: " + ready);
    check(/%$/.test(await page.textContent("#n-errratio")), "error ratio shown");
    await page.waitForFunction(() => document.querySelectorAll("#t-fleet tr.fleet-row").length === 3);
    await page.screenshot({ path: process.env.FG_SHOT, fullPage: true });
  } catch (e) {
    check(false, "exception: " + (e && e.stack || e));
  } finally {
    check(consoleErrors.length === 0, "no console errors: " + JSON.stringify(consoleErrors));
    await ctx.close();
  }
  console.log(`${passes} passed, ${failures} failed`);
  process.exit(failures ? 1 : 0);
})();
