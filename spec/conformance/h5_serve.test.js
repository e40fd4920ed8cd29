// examples/h5 end to end in a real browser: Debian's chromium, headless,
// through puppeteer-core, against `eidkit serve --sim` (started here, with
// --h5-return-url pointing at examples/h5/done.html).
//
// The pages are served by examples/h5/front.js, the merchant's own web
// server in the example: it serves the static files and proxies /eid/* to
// eidkit serve, so the page calls its own origin (no CORS), and it hands its
// session cookie to serve as the demo subject header, which the browser's
// return from the simulator's H5 page (a plain navigation) could not carry.
//
// index.html -> POST /eid/token {RedirectUrl: <front>/eid/h5/return} -> the
// simulator's H5 page (Url) -> Pass or Fail -> <front>/eid/h5/return?token=
// (proxied) -> 303 to done.html?status=... -> done.html shows the status.
//
// serve accepts no body field on /eid/token unless told to, so it runs with
// --token-fields RedirectUrl for the page's RedirectUrl. Never skipped: an
// eidkit without serve fails here. Run by spec/conformance/run.
"use strict";

const { describe, it, before, after } = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const { ROOT, EIDKIT_BIN, findChromium, start, request } = require("./lib.js");
const { createFront } = require(path.join(ROOT, "examples", "h5", "front.js"));

const CHROMIUM = findChromium() || "/usr/bin/chromium"; // missing: launch fails, loudly

describe("examples/h5 with eidkit serve --sim in chromium", () => {
  let tmp, front, frontUrl, serve, serveUrl, simUrl, browser;
  const proxied = []; // the /eid/ paths the front passed on

  before(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "eidkit-h5-serve-"));
    front = createFront();
    front.on("request", (req) => { if (req.url.startsWith("/eid/")) proxied.push(req.url); });
    await new Promise((resolve) => front.listen(0, "127.0.0.1", resolve));
    frontUrl = `http://127.0.0.1:${front.address().port}`;
    serve = await start(EIDKIT_BIN, ["serve", "--sim", "--listen", "127.0.0.1:0",
      "--ledger", `sqlite:${path.join(tmp, "eidkit.db")}`, "--h5-return-url", `${frontUrl}/done.html`,
      "--token-fields", "RedirectUrl"], { lines: 2 });
    [serveUrl, simUrl] = serve.urls;
    front.setServe(serveUrl);
    const puppeteer = require("puppeteer-core");
    browser = await puppeteer.launch({
      executablePath: CHROMIUM,
      headless: true,
      userDataDir: path.join(tmp, "chromium"),
      args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage"],
    });
  });

  after(async () => {
    if (browser) await browser.close();
    if (front) await new Promise((resolve) => front.close(resolve));
    const code = serve ? await serve.stop() : 0;
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
    assert.equal(code, 0, `eidkit serve exited ${code}: ${serve && serve.stderr()}`);
  });

  // One user (a fresh browser context: its own cookie, so its own subject)
  // from index.html to done.html; `choose` acts on the simulator's H5 page.
  async function verify(choose) {
    const context = await browser.createBrowserContext();
    try {
      const page = await context.newPage();
      const first = await page.goto(`${frontUrl}/`, { waitUntil: "load" });
      assert.equal(first.status(), 200);
      await Promise.all([page.waitForNavigation({ waitUntil: "load" }), page.click("#verify")]);
      const h5 = new URL(page.url());
      assert.equal(`${h5.origin}${h5.pathname}`, `${simUrl}/sim/h5`, `the page went to ${page.url()}`);
      const token = h5.searchParams.get("token");
      assert.equal(await page.$eval("#token", (el) => el.textContent), token);
      await choose(page);
      await page.waitForFunction(() => {
        const el = document.getElementById("status");
        return el && el.textContent !== "";
      }, { timeout: 15000 });
      const done = new URL(page.url());
      return { token, done, status: await page.$eval("#status", (el) => el.textContent),
        message: await page.$eval("#message", (el) => el.textContent) };
    } finally {
      await context.close();
    }
  }

  const submit = (page, button) =>
    Promise.all([page.waitForNavigation({ waitUntil: "load" }), page.click(button)]);

  it("#pass lands on done.html showing passed", async () => {
    const r = await verify((page) => submit(page, "#pass"));
    assert.equal(`${r.done.origin}${r.done.pathname}`, `${frontUrl}/done.html`);
    assert.equal(r.done.searchParams.get("status"), "passed");
    assert.equal(r.status, "passed");
    assert.equal(r.message, "核验通过");
    // The simulator sent the browser to RedirectUrl with the token, through the front.
    assert.ok(proxied.includes(`/eid/h5/return?token=${r.token}`), proxied.join(" "));
  });

  it("#fail with ErrCode 2016 lands on done.html showing failed", async () => {
    const r = await verify(async (page) => {
      await page.select("#code", "2016");
      await submit(page, "#fail");
    });
    assert.equal(`${r.done.origin}${r.done.pathname}`, `${frontUrl}/done.html`);
    assert.equal(r.status, "failed");
    assert.equal(r.message, "核验未通过");
  });

  it("the front drops a subject header the browser sends: no session cookie, no subject", async () => {
    const r = await request(`${frontUrl}/eid/token`, { method: "POST", body: {},
      headers: { "X-Eidkit-Demo-User": "someone-else" } });
    assert.equal(r.status, 401, r.body);
  });
});
