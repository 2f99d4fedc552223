// Browser test of the Tessera security console: Playwright (playwright-core) driving the
// system Chromium against a real Tessera started by tests/console.rs, which passes URLs,
// tokens and fixtures through the environment and asserts on this script's exit code and
// output. Every step prints "ok - <step>"; the first failure prints "not ok - <step>: <why>"
// and exits 1. Full-page screenshots go to $SCREENSHOT_DIR.
"use strict";

const fs = require("fs");
const https = require("https");
const path = require("path");
const { chromium } = require("playwright-core");

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`environment variable ${k} is required (tests/console.rs sets it)`);
  return v;
};
const BASE = env("CONSOLE_URL").replace(/\/$/, ""); // http://127.0.0.1:<admin>/console
const OPERATOR_TOKEN = env("OPERATOR_TOKEN");
const TENANT_TOKEN = env("TENANT_TOKEN"); // scoped to OWN_TENANT
const TENANT = env("TENANT"); // the tenant the operator works on
const OWN_TENANT = env("OWN_TENANT"); // the scoped token's tenant
const VICTIM_ID = env("VICTIM_ID");
const VICTIM_LABEL = env("VICTIM_LABEL");
const VICTIM_PART_A = env("VICTIM_PART_A");
const LIVE_PART_A = env("LIVE_PART_A");
const HOST = env("HTTPS_HOST");
const HTTPS_PORT = Number(env("HTTPS_PORT"));
const CA = fs.readFileSync(env("CA_FILE"));
const SHOTS = env("SCREENSHOT_DIR");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

let passed = 0;
function ok(step) {
  passed += 1;
  console.log(`ok - ${step}`);
}
function check(cond, step, why) {
  if (!cond) throw new Error(`${step}: ${why}`);
  ok(step);
}

/** A real HTTPS request through Tessera with a Part A; resolves to the status code. */
function proxied(partA, p) {
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: "127.0.0.1",
        port: HTTPS_PORT,
        servername: HOST,
        ca: CA,
        path: p,
        method: "GET",
        headers: { host: HOST, authorization: `Bearer ${partA}` },
        timeout: 10000,
      },
      (res) => {
        res.resume();
        res.on("end", () => resolve(res.statusCode));
      }
    );
    req.on("error", reject);
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.end();
  });
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

/** Run `act` (a click or key press that submits or follows a link) and wait for the new page. */
async function navigating(page, act) {
  await Promise.all([page.waitForNavigation({ waitUntil: "domcontentloaded" }), act()]);
}

async function login(page, token) {
  await page.goto(`${BASE}/login`);
  // Keyboard only: the token field has focus (autofocus); Enter submits.
  await page.waitForFunction(() => document.activeElement && document.activeElement.id === "token");
  await page.keyboard.type(token);
  await navigating(page, () => page.keyboard.press("Enter"));
}

async function main() {
  fs.mkdirSync(SHOTS, { recursive: true });
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--no-sandbox", "--disable-dev-shm-usage"],
  });
  const cspViolations = [];
  const watch = (page) => {
    page.on("console", (m) => {
      if (/Content Security Policy|Refused to/i.test(m.text())) cspViolations.push(m.text());
    });
    page.on("pageerror", (e) => cspViolations.push(`page error: ${e.message}`));
  };
  try {
    // --- operator: login, overview, find the token, revoke it from its page ---
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const page = await ctx.newPage();
    watch(page);
    await page.goto(`${BASE}/`);
    check(page.url().endsWith("/console/login"), "no session redirects to the login page", page.url());
    await shot(page, "01-login");
    const label = await page.getAttribute("#token", "type");
    check(label === "password" && (await page.locator("label[for=token]").count()) === 1, "login field is a labelled password field", label);

    await login(page, "tsa_" + "0".repeat(64));
    const refused = await page.textContent("main");
    check(refused.includes("not a configured admin token"), "a wrong admin token is refused", refused);

    await login(page, OPERATOR_TOKEN);
    check(new URL(page.url()).pathname === "/console/", "operator login lands on the overview", page.url());
    const cookies = await ctx.cookies();
    const sess = cookies.find((c) => c.name === "tessera_console");
    check(
      sess && sess.httpOnly && sess.secure && sess.sameSite === "Strict" && sess.path === "/console" &&
        /^[0-9a-f]{64}$/.test(sess.value) && !sess.value.includes(OPERATOR_TOKEN.slice(4, 20)),
      "session cookie: opaque id, HttpOnly, Secure, SameSite=Strict, Path=/console",
      JSON.stringify(sess)
    );
    check((await page.locator(`table.data a[href="/console/t/${TENANT}"]`).count()) === 1, "overview lists the tenant", TENANT);
    check((await page.locator("svg.spark").count()) >= 2, "overview draws a sparkline per tenant", "no svg.spark");
    await shot(page, "02-overview");

    await navigating(page, () => page.click(`a[href="/console/t/${TENANT}"]`));
    await page.fill("#q", VICTIM_LABEL);
    await navigating(page, () => page.click("form.filters button[type=submit]"));
    const rows = page.locator("#tokens tbody tr");
    check((await rows.count()) === 1, "the label filter finds exactly the token", String(await rows.count()));
    check((await rows.first().getAttribute("data-token")) === VICTIM_ID, "the filtered row is the token", VICTIM_ID);
    await page.goto(`${BASE}/t/${TENANT}?sort=label&dir=asc`);
    await shot(page, "03-tenant-tokens");

    await page.goto(`${BASE}/t/${TENANT}?q=${encodeURIComponent(VICTIM_LABEL)}`);
    await navigating(page, () => page.click(`#tokens a[href="/console/t/${TENANT}/tokens/${VICTIM_ID}"]`));
    check((await page.textContent("#token-id")) === VICTIM_ID, "token page shows its id", VICTIM_ID);
    const prefix = (await page.textContent("#part-a-prefix")).replace("…", "");
    check(
      VICTIM_PART_A.startsWith(prefix) && prefix.length === 16 && !(await page.content()).includes(VICTIM_PART_A.slice(20)),
      "token page shows the Part A prefix, never Part A",
      prefix
    );
    check((await page.locator("table.records tbody tr").count()) >= 1, "token page shows its session timeline", "no records");
    await page.fill("#f-status", "599");
    await navigating(page, () => page.click("form.filters button[type=submit]"));
    check((await page.locator("table.records tbody tr").count()) === 0, "timeline status filter applies", page.url());
    await page.goto(`${BASE}/t/${TENANT}/tokens/${VICTIM_ID}`);
    await shot(page, "04-token");

    check((await proxied(VICTIM_PART_A, "/before-revoke")) === 200, "before revocation the Part A works over HTTPS", "not 200");
    await navigating(page, () => page.click("text=Revoke…"));
    check(page.url().endsWith(`/tokens/${VICTIM_ID}/revoke`), "revoke asks for confirmation first", page.url());
    await shot(page, "05-revoke-confirm");
    await navigating(page, () => page.click("#confirm-action"));
    check((await page.textContent("#result")).includes("is revoked"), "revoke confirmed in the console", await page.textContent("main"));
    await shot(page, "06-revoked");
    const after = await proxied(VICTIM_PART_A, "/after-revoke");
    check(after === 401, "after revocation its Part A gets 401 over HTTPS", String(after));
    console.log(`REVOKED ${VICTIM_ID}`);

    // --- live tail: a request made now shows up ---
    await page.goto(`${BASE}/t/${TENANT}/tail`);
    await page.waitForSelector("#tail[data-live='1']", { timeout: 10000 });
    const probe = `/tail-probe-${Date.now()}`;
    check((await proxied(LIVE_PART_A, probe)) === 200, "live-tail probe request answered 200", probe);
    await page.waitForSelector(`#tail-body td.path:text-is("${probe}")`, { timeout: 15000 });
    ok("the live tail shows a request made during the test");
    await shot(page, "07-live-tail");

    await page.goto(`${BASE}/audit`);
    const audit = await page.textContent("#audit");
    check(audit.includes(VICTIM_ID) && audit.includes("console") && audit.includes("revoke"), "audit log shows the console revoke", "missing");
    await shot(page, "08-audit");

    // Incident button: disabled until the tenant id is typed (the server checks it too).
    await page.goto(`${BASE}/t/${TENANT}/revoke-all`);
    check(await page.isDisabled("#revoke-all"), "incident button waits for the typed tenant id", "enabled");
    await page.fill("#confirm", TENANT);
    check(!(await page.isDisabled("#revoke-all")), "typing the tenant id enables it", "disabled");
    await shot(page, "09-revoke-all-confirm");

    // Phone width.
    await page.setViewportSize({ width: 390, height: 844 });
    await page.goto(`${BASE}/`);
    await shot(page, "10-overview-phone");
    await page.goto(`${BASE}/t/${TENANT}/tokens/${VICTIM_ID}`);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    check(overflow <= 1, "token page fits a phone width (tables scroll inside their box)", `overflow ${overflow}px`);
    await shot(page, "11-token-phone");

    // Logout ends the session server-side.
    await page.setViewportSize({ width: 1280, height: 800 });
    await navigating(page, () => page.click("text=Log out"));
    await ctx.addCookies([sess]);
    const r = await page.goto(`${BASE}/audit`);
    check(new URL(page.url()).pathname === "/console/login", "after logout the old session id is dead", `${r.status()} ${page.url()}`);
    await ctx.close();

    // --- tenant scope: its own tenant only, checked on every request ---
    const tctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const tp = await tctx.newPage();
    watch(tp);
    await login(tp, TENANT_TOKEN);
    check(new URL(tp.url()).pathname === `/console/t/${OWN_TENANT}`, "tenant-scoped login lands on its tenant", tp.url());
    check((await tp.locator(`a[href="/console/t/${TENANT}"]`).count()) === 0, "tenant-scoped pages do not link the other tenant", "link found");
    await shot(tp, "12-tenant-scoped");
    let resp = await tp.goto(`${BASE}/t/${TENANT}`);
    check(resp.status() === 403, "other tenant's token page is refused (403)", String(resp.status()));
    await shot(tp, "13-tenant-refused");
    resp = await tp.goto(`${BASE}/t/${TENANT}/tokens/${VICTIM_ID}`);
    check(resp.status() === 403, "other tenant's token detail is refused (403)", String(resp.status()));
    resp = await tp.goto(`${BASE}/t/${TENANT}/tail/events`);
    check(resp.status() === 403, "other tenant's live tail is refused (403)", String(resp.status()));
    resp = await tp.goto(`${BASE}/`);
    const ownCsrf = await tp.getAttribute("input[name=csrf]", "value");
    // A crafted form post with this session's valid CSRF token, against the other tenant.
    const crafted = await tp.evaluate(
      async ([url, csrf]) => {
        const r = await fetch(url, {
          method: "POST",
          headers: { "content-type": "application/x-www-form-urlencoded" },
          body: `csrf=${csrf}&confirm=x`,
        });
        return r.status;
      },
      [`${BASE}/t/${TENANT}/revoke-all`, ownCsrf]
    );
    check(crafted === 403, "crafted cross-tenant form post is refused (403)", String(crafted));
    const noCsrf = await tp.evaluate(async (url) => {
      const r = await fetch(url, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body: "" });
      return r.status;
    }, `${BASE}/t/${OWN_TENANT}/revoke-all`);
    check(noCsrf === 403, "form post without CSRF token is refused (403)", String(noCsrf));
    check((await proxied(LIVE_PART_A, "/still-alive")) === 200, "the other tenant's tokens still work", "not 200");
    await tctx.close();

    // --- JavaScript off: read-only pages still work ---
    const nctx = await browser.newContext({ javaScriptEnabled: false, viewport: { width: 1280, height: 800 } });
    const np = await nctx.newPage();
    await np.goto(`${BASE}/login`);
    await np.fill("#token", OPERATOR_TOKEN);
    await navigating(np, () => np.click("button[type=submit]"));
    await np.goto(`${BASE}/t/${TENANT}/tail`);
    check((await np.locator("table.records tbody tr").count()) >= 1, "without JavaScript the tail page lists recent records", "empty");
    await np.goto(`${BASE}/t/${TENANT}/tokens/${VICTIM_ID}`);
    check((await np.textContent("#token-status")) === "revoked", "without JavaScript the token page renders (status revoked)", "");
    await nctx.close();

    check(cspViolations.length === 0, "no CSP violation or script error on any page", cspViolations.join(" | "));
  } finally {
    await browser.close();
  }
}

main().then(
  () => {
    console.log(`console browser test: ${passed} passed, 0 failed`);
  },
  (e) => {
    console.log(`not ok - ${e.message}`);
    console.log(`console browser test: ${passed} passed, 1 failed`);
    process.exit(1);
  }
);
