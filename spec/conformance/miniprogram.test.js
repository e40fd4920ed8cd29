// examples/miniprogram against a real server. WeChat cannot run here: the
// files are loaded in Node, each as WeChat loads a mini-program module (its
// own require/module/exports, with the globals wx, App, Page and getApp),
// under a fake WeChat runtime and a fake E证通 SDK (mp_ecard_sdk, Tencent's,
// not in the repository). The fake SDK does what the integration guide says
// the real one does: initEid registers a wx.onAppShow listener; startEid
// leaves for the eID mini-program (here: plays the user through the
// simulator's control API) and WeChat brings the app back with scene 1038
// and the eID appId, which fires App.onShow and the SDK's listener, which
// calls verifyDoneCallback. wx.request is real HTTP, to `eidkit serve --sim`
// which the flow tests start here (on a port of its own, with a temporary
// sqlite ledger) and stop at the end: its first stdout line is the server's
// URL, its second the simulator's. EIDKIT_SERVE_URL with EIDKIT_SIM_URL
// point them at a server already running instead. The onShow rule and the
// files are checked without a server, the rule against
// lua/eidkit/policy.lua's own when build/eidkit exists. Run by
// spec/conformance/run.
"use strict";

const { describe, it, before, after } = require("node:test");
const assert = require("node:assert/strict");
const { execFileSync } = require("node:child_process");
const fs = require("node:fs");
const http = require("node:http");
const os = require("node:os");
const https = require("node:https");
const path = require("node:path");
const vm = require("node:vm");
const { ROOT, EIDKIT_BIN, request, start } = require("./lib.js");

const MP = path.join(ROOT, "examples", "miniprogram");
const EID_APPID = "wx0e2cb0b052a91c92";

// ------------------------------------------------------------ the fakes

// A fake WeChat runtime running the mini-program in MP. opts: serverUrl (in
// place of config.js), simUrl, user (a stored demo user, else the app makes
// one), errCode (what the user's verification ends with; null: the user
// backs out before finishing).
function miniProgram(opts) {
  const storage = new Map();
  if (opts.user) storage.set("eidkit_demo_user", opts.user);
  const appShow = [];
  const requests = [];
  const errors = [];
  const waiters = new Set();
  let app = null;
  let pageDef = null;
  let pending = null; // the SDK's startEid in progress

  const notify = () => { for (const w of waiters) w(); };
  const fail = (e) => { errors.push(e); notify(); };

  const wx = {
    request(o) {
      const u = new URL(o.url);
      const header = Object.assign({}, o.header);
      const body = o.data === undefined ? "" : typeof o.data === "string" ? o.data : JSON.stringify(o.data);
      requests.push({ url: o.url, method: o.method || "GET", header, data: o.data });
      const req = (u.protocol === "https:" ? https : http).request({ host: u.hostname, port: u.port,
        path: u.pathname + u.search, method: o.method || "GET", agent: false,
        headers: Object.assign({ "Content-Length": Buffer.byteLength(body) }, header) }, (res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          let data = text;
          if (o.dataType !== "text") { try { data = JSON.parse(text); } catch { /* stays text */ } }
          try {
            if (o.success) o.success({ statusCode: res.statusCode, data, header: res.headers, errMsg: "request:ok" });
            if (o.complete) o.complete();
          } catch (e) { fail(e); }
        });
      });
      req.on("error", (e) => {
        try {
          if (o.fail) o.fail({ errMsg: `request:fail ${e.message}` });
          if (o.complete) o.complete();
        } catch (e2) { fail(e2); }
      });
      req.end(body);
    },
    getStorageSync: (k) => (storage.has(k) ? storage.get(k) : ""),
    setStorageSync: (k, v) => { storage.set(k, v); },
    onAppShow: (fn) => { appShow.push(fn); },
  };

  // WeChat brings the app to the foreground: App.onShow, then wx.onAppShow.
  const show = (options) => {
    app.onShow(options);
    for (const fn of appShow) fn(options);
  };

  // The E证通 SDK as the guide describes it (3.3, 注意事项 1).
  const sdk = {
    initEid() {
      sdk.initialised = (sdk.initialised || 0) + 1;
      wx.onAppShow((o) => {
        if (!pending || o.scene !== 1038 || !o.referrerInfo || o.referrerInfo.appId !== EID_APPID) return;
        const p = pending;
        pending = null;
        p.verifyDoneCallback({ token: p.token, verifyDone: o.referrerInfo.extraData.verifyDone });
      });
    },
    startEid(o) {
      assert.equal(sdk.initialised, 1, "startEid before initEid");
      assert.equal(typeof o.data.token, "string");
      assert.equal(typeof o.verifyDoneCallback, "function");
      pending = { token: o.data.token, verifyDoneCallback: o.verifyDoneCallback };
      sdk.started = o.data.token;
      (async () => {
        const done = opts.errCode !== null;
        if (done) {
          const s = await request(`${opts.simUrl}/sim/tokens/${o.data.token}/start`, { method: "POST" });
          assert.equal(s.status, 200, s.body);
          const f = await request(`${opts.simUrl}/sim/tokens/${o.data.token}/finish`,
            { method: "POST", body: { ErrCode: opts.errCode } });
          assert.equal(f.status, 200, f.body);
        }
        show({ scene: 1038, path: "pages/verify/verify", query: {},
          referrerInfo: { appId: EID_APPID, extraData: { token: o.data.token, verifyDone: done } } });
      })().catch(fail);
    },
  };

  const cache = new Map();
  const globals = {
    wx,
    App: (def) => { assert.equal(app, null, "App() called twice"); app = def; },
    Page: (def) => { pageDef = def; },
    getApp: () => app,
  };
  function load(file) {
    if (file === path.join(MP, "mp_ecard_sdk", "main.js")) return sdk;
    if (file === path.join(MP, "config.js")) return { serverUrl: opts.serverUrl };
    if (cache.has(file)) return cache.get(file).exports;
    const module = { exports: {} };
    cache.set(file, module);
    const names = ["require", "module", "exports", ...Object.keys(globals)];
    const fn = vm.compileFunction(fs.readFileSync(file, "utf8"), names, { filename: file });
    const req = (spec) => {
      assert.ok(spec.startsWith("."), `${file}: require("${spec}"): a mini-program requires its own files only`);
      const f = path.resolve(path.dirname(file), spec);
      return load(f.endsWith(".js") ? f : `${f}.js`);
    };
    fn(req, module, module.exports, ...Object.values(globals));
    return module.exports;
  }

  return {
    wx, sdk, requests, storage,
    get app() { return app; },
    launch(options) {
      load(path.join(MP, "app.js"));
      app.onLaunch(options);
      show(options);
    },
    openPage(route) {
      pageDef = null;
      load(path.join(MP, `${route}.js`));
      assert.ok(pageDef, `${route}.js did not call Page()`);
      const page = Object.assign({}, pageDef, { data: JSON.parse(JSON.stringify(pageDef.data)) });
      page.setData = (patch, cb) => {
        Object.assign(page.data, patch);
        notify();
        if (cb) cb();
      };
      if (page.onLoad) page.onLoad({});
      return page;
    },
    // Resolves once pred(page.data) holds; rejects on an error in a callback.
    waitFor(page, pred, ms = 15000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => { waiters.delete(check); reject(new Error(
          `timed out; page data ${JSON.stringify(page.data)}`)); }, ms);
        function check() {
          if (errors.length) { clearTimeout(timer); waiters.delete(check); reject(errors[0]); return; }
          if (pred(page.data)) { clearTimeout(timer); waiters.delete(check); resolve(page.data); }
        }
        waiters.add(check);
        check();
      });
    },
  };
}

// ------------------------------------------------------------ the onShow rule

const EID = EID_APPID;
const SHOW_CASES = [
  [{ scene: 1038, referrerInfo: { appId: EID } }, true],
  [{ scene: 1038, path: "pages/verify/verify", referrerInfo: { appId: EID, extraData: { verifyDone: true } } }, true],
  [{ scene: "1038", referrerInfo: { appId: EID } }, true],
  [{ scene: " 1038\n", referrerInfo: { appId: EID } }, true],
  [{ scene: "+1038", referrerInfo: { appId: EID } }, true],
  [{ scene: "1038.0", referrerInfo: { appId: EID } }, true],
  [{ scene: "1.038e3", referrerInfo: { appId: EID } }, true],
  [{ scene: "0x40E", referrerInfo: { appId: EID } }, true],
  [{ scene: "0x40e.0p0", referrerInfo: { appId: EID } }, true],
  [{ scene: 1037, referrerInfo: { appId: EID } }, false],
  [{ scene: 1038.5, referrerInfo: { appId: EID } }, false],
  [{ scene: "-1038", referrerInfo: { appId: EID } }, false],
  [{ scene: "1038abc", referrerInfo: { appId: EID } }, false],
  [{ scene: "0b10000001110", referrerInfo: { appId: EID } }, false],
  [{ scene: "", referrerInfo: { appId: EID } }, false],
  [{ scene: true, referrerInfo: { appId: EID } }, false],
  [{ referrerInfo: { appId: EID } }, false],
  [{ scene: 1038, referrerInfo: { appId: "wx0000000000000000" } }, false],
  [{ scene: 1038, referrerInfo: { appId: EID.toUpperCase() } }, false],
  [{ scene: 1038 }, false],
  [{ scene: 1038, referrerInfo: {} }, false],
  [{ scene: 1038, referrerInfo: null }, false],
  [{ scene: 1038, referrerInfo: EID }, false],
  [{ scene: 1038, referrerInfo: [EID] }, false],
  [{ scene: 1001 }, false],
  [{}, false],
  [null, false],
  ["1038", false],
  [1038, false],
];

describe("examples/miniprogram without a server", () => {
  const { isEidReturn, EID_APPID: appId, EID_SCENE } = require(path.join(MP, "utils", "eid_return.js"));

  it("isEidReturn: scene 1038 and the eID appId, as the guide's 注意事项 2 says", () => {
    assert.equal(appId, EID_APPID);
    assert.equal(EID_SCENE, 1038);
    for (const [options, want] of SHOW_CASES) {
      assert.equal(isEidReturn(options), want, JSON.stringify(options));
    }
  });

  const haveEidkit = fs.existsSync(EIDKIT_BIN);
  it("isEidReturn agrees with eidkit.policy.is_eid_return case for case", {
    skip: haveEidkit ? false : `no eidkit program at ${EIDKIT_BIN} (build it) to compare with`,
  }, () => {
    const script = `local cjson = require "cjson"
      local policy = require "eidkit.policy"
      local out = {}
      for i, c in ipairs(cjson.decode(arg[1])) do out[i] = policy.is_eid_return(c) end
      io.write(cjson.encode(out))`;
    const options = SHOW_CASES.map(([o]) => o);
    const lua = JSON.parse(execFileSync(EIDKIT_BIN, ["run", "-", JSON.stringify(options)],
      { input: script, encoding: "utf8" }));
    assert.equal(lua.length, SHOW_CASES.length);
    SHOW_CASES.forEach(([o, want], i) => {
      assert.equal(lua[i], want, `Lua, ${JSON.stringify(o)}`);
      assert.equal(isEidReturn(o), lua[i], `JS against Lua, ${JSON.stringify(o)}`);
    });
  });

  it("app.json lists the page and the SDK's pages (guide 3.3 step 1); the page has its .js, .wxml and .json", () => {
    const appJson = JSON.parse(fs.readFileSync(path.join(MP, "app.json"), "utf8"));
    assert.deepEqual(appJson.pages, ["pages/verify/verify", "mp_ecard_sdk/index/index",
      "mp_ecard_sdk/protocol/service/index", "mp_ecard_sdk/protocol/privacy/index",
      "mp_ecard_sdk/protocol/userAccredit/index", "mp_ecard_sdk/protocol/eid/index"]);
    for (const ext of [".js", ".wxml", ".json"]) {
      assert.ok(fs.existsSync(path.join(MP, `pages/verify/verify${ext}`)), ext);
    }
    JSON.parse(fs.readFileSync(path.join(MP, "pages/verify/verify.json"), "utf8"));
    const project = JSON.parse(fs.readFileSync(path.join(MP, "project.config.json"), "utf8"));
    assert.equal(project.compileType, "miniprogram");
    assert.equal(typeof require(path.join(MP, "config.js")).serverUrl, "string");
  });

  it("the page's WXML names only the page's handlers and data", () => {
    const mp = miniProgram({ serverUrl: "http://127.0.0.1:9", simUrl: "", errCode: 0 });
    mp.launch({ scene: 1001 });
    const page = mp.openPage("pages/verify/verify");
    const wxml = fs.readFileSync(path.join(MP, "pages/verify/verify.wxml"), "utf8");
    for (const [, handler] of wxml.matchAll(/\bbind\w+="(\w+)"/g)) {
      assert.equal(typeof page[handler], "function", handler);
    }
    for (const [, expr] of wxml.matchAll(/\{\{(.*?)\}\}/g)) {
      for (const [name] of expr.replace(/'[^']*'/g, "").matchAll(/[A-Za-z_]\w*/g)) {
        assert.ok(name in page.data, `{{${expr}}}: ${name} is not in the page's data`);
      }
    }
  });
});

// ------------------------------------------------------------ against a server

describe("examples/miniprogram against eidkit serve", () => {
  let serveUrl, simUrl, serve, tmp;
  before(async () => {
    if (process.env.EIDKIT_SERVE_URL) {
      serveUrl = process.env.EIDKIT_SERVE_URL;
      simUrl = process.env.EIDKIT_SIM_URL;
      assert.ok(simUrl, "EIDKIT_SIM_URL (the simulator of `eidkit serve --sim`) must be set with EIDKIT_SERVE_URL");
      return;
    }
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "eidkit-miniprogram-"));
    serve = await start(EIDKIT_BIN, ["serve", "--sim", "--listen", "127.0.0.1:0",
      "--ledger", `sqlite:${path.join(tmp, "eidkit.db")}`], { lines: 2 });
    [serveUrl, simUrl] = serve.urls;
  });

  after(async () => {
    const code = serve ? await serve.stop() : 0;
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
    assert.equal(code, 0, `eidkit serve exited ${code}: ${serve && serve.stderr()}`);
  });

  // Launch, open the page, press the button; resolves with the finished page.
  async function verify(errCode, user) {
    const mp = miniProgram({ serverUrl: serveUrl, simUrl, errCode, user });
    mp.launch({ scene: 1001, path: "pages/verify/verify", query: {} });
    assert.equal(mp.app.globalData.foregrounds, 1);
    const page = mp.openPage("pages/verify/verify");
    page.onVerify();
    await mp.waitFor(page, (d) => d.state === "done" || d.state === "error");
    return { mp, page };
  }

  it("the user passes: token, startEid, back from eID (onShow skipped), verifyDoneCallback, passed", async () => {
    const { mp, page } = await verify(0);
    assert.equal(page.data.state, "done", `error: ${page.data.error}`);
    assert.equal(page.data.status, "passed");
    assert.equal(page.data.retryWithNewToken, false);
    // The return from eID did not count as a foreground of the app's own.
    assert.equal(mp.app.globalData.foregrounds, 1);

    const user = mp.app.globalData.demoUser;
    assert.match(user, /^demo-/);
    assert.equal(mp.storage.get("eidkit_demo_user"), user);
    assert.deepEqual(mp.requests.map((r) => [r.method, r.url, r.header["X-Eidkit-Demo-User"]]), [
      ["POST", `${serveUrl}/eid/token`, user],
      ["POST", `${serveUrl}/eid/result`, user],
    ]);
    assert.deepEqual(mp.requests[1].data, { EidToken: mp.sdk.started });
    // The simulator saw this token finished.
    const st = await request(`${simUrl}/sim/tokens/${mp.sdk.started}`);
    assert.equal(st.status, 200, st.body);
    assert.equal(st.json.Status, "finished");
  });

  it("the user fails (ErrCode 2016): failed", async () => {
    const { page } = await verify(2016);
    assert.equal(page.data.state, "done", `error: ${page.data.error}`);
    assert.equal(page.data.status, "failed");
  });

  it("the user backs out (verifyDone false): the server says pending", async () => {
    const { page } = await verify(null);
    assert.equal(page.data.state, "done", `error: ${page.data.error}`);
    assert.equal(page.data.status, "pending");
  });

  it("another user's token is refused by the server: the page shows wrong_subject", async () => {
    const { mp } = await verify(0);
    const other = miniProgram({ serverUrl: serveUrl, simUrl, errCode: 0 });
    other.launch({ scene: 1001 });
    assert.notEqual(other.app.globalData.demoUser, mp.app.globalData.demoUser);
    const page = other.openPage("pages/verify/verify");
    page.eidToken = mp.sdk.started;
    page.onVerifyDone({ token: mp.sdk.started, verifyDone: true });
    await other.waitFor(page, (d) => d.state === "done" || d.state === "error");
    assert.deepEqual([page.data.state, page.data.error], ["error", "wrong_subject"]);
  });
});
