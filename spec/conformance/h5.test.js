// The simulator's H5 page in a real browser: Debian's chromium, headless,
// driven by puppeteer-core. A small HTTP server on loopback is the
// merchant's RedirectUrl; the browser must land there with token= added to
// the query and the fragment kept, as Tencent does (doc 1007/58171). Run by
// spec/conformance/run.
"use strict";

const { describe, it, before, after } = require("node:test");
const assert = require("node:assert/strict");
const http = require("node:http");
const { simPort, faceid, tokenRequest, findChromium } = require("./lib.js");

const chromium = findChromium();
const skip = chromium ? false : "chromium is not installed (scripts/setup-deps installs it)";

describe("the H5 page in chromium", { skip }, () => {
  let puppeteer, browser, page, merchant, merchantPort, port, client;
  const returns = []; // request URLs the merchant's server saw

  before(async () => {
    puppeteer = require("puppeteer-core");
    port = simPort("plain");
    client = faceid({ port });
    merchant = http.createServer((req, res) => {
      if (req.url.startsWith("/eid/")) returns.push(req.url); // not /favicon.ico
      res.writeHead(200, { "Content-Type": "text/html; charset=utf-8" });
      res.end("<!DOCTYPE html><title>merchant</title><p id=\"back\">back at the merchant</p>");
    });
    await new Promise((resolve) => merchant.listen(0, "127.0.0.1", resolve));
    merchantPort = merchant.address().port;
    const args = ["--disable-dev-shm-usage", "--disable-gpu", "--no-first-run"];
    if (process.getuid && process.getuid() === 0) args.push("--no-sandbox");
    browser = await puppeteer.launch({ executablePath: chromium, headless: true, args });
    page = await browser.newPage();
  });

  after(async () => {
    if (browser) await browser.close();
    if (merchant) await new Promise((resolve) => merchant.close(resolve));
  });

  // GetEidToken with RedirectUrl, then open the returned Url in the browser.
  async function openFlow() {
    const redirect = `http://127.0.0.1:${merchantPort}/eid/return?o=1#top`;
    const t = await client.GetEidToken(tokenRequest({ RedirectUrl: redirect }));
    const res = await page.goto(t.Url, { waitUntil: "load" });
    assert.equal(res.status(), 200);
    assert.equal(await page.$eval("#token", (el) => el.textContent), t.EidToken);
    return t.EidToken;
  }

  async function submit(button) {
    const [res] = await Promise.all([page.waitForNavigation({ waitUntil: "load" }), page.click(button)]);
    return res;
  }

  it("#pass sends the browser to RedirectUrl with token= and the fragment, and the result passes", async () => {
    const EidToken = await openFlow();
    assert.equal((await client.CheckEidTokenStatus({ EidToken })).Status, "doing");

    const res = await submit("#pass");
    assert.equal(res.status(), 200);
    assert.equal(page.url(), `http://127.0.0.1:${merchantPort}/eid/return?o=1&token=${EidToken}#top`);
    assert.equal(await page.$eval("#back", (el) => el.textContent), "back at the merchant");
    assert.equal(returns.at(-1), `/eid/return?o=1&token=${EidToken}`);

    assert.equal((await client.CheckEidTokenStatus({ EidToken })).Status, "finished");
    const r = await client.GetEidResult({ EidToken, InfoType: "1" });
    assert.equal(r.Text.ErrCode, 0);
  });

  it("choosing 2016 in #code and pressing #fail gives ErrCode 2016", async () => {
    const EidToken = await openFlow();
    await page.select("#code", "2016");
    await submit("#fail");
    assert.equal(page.url(), `http://127.0.0.1:${merchantPort}/eid/return?o=1&token=${EidToken}#top`);
    assert.equal(returns.at(-1), `/eid/return?o=1&token=${EidToken}`);
    const r = await client.GetEidResult({ EidToken, InfoType: "1" });
    assert.equal(r.Text.ErrCode, 2016);
    assert.deepEqual(r.Text.LivenessDetail.map((d) => [d.Errcode, d.IsNeedCharge]), [[2016, true]]);
  });
});
