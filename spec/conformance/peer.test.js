// bench/serve/peer.js, the Node.js backend bench/serve/run measures `eidkit
// serve` against, does what it claims: its two routes through the official
// SDK against a real `eidkit sim` (its own, so the faults set here touch no
// other spec), the demo-header subject binding, and the gateway's status
// codes for the same failures. A benchmark against a broken peer would
// compare nothing. Run by spec/conformance/run (or `node --test` with
// NODE_PATH=node/node_modules).
"use strict";

const { describe, it, before, after } = require("node:test");
const assert = require("node:assert/strict");
const path = require("node:path");
const { DEMO, ROOT, EIDKIT_BIN, start, request } = require("./lib.js");

describe("bench/serve/peer.js against eidkit sim", () => {
  let sim, peer, simUrl, url;

  before(async () => {
    sim = await start(EIDKIT_BIN, ["sim", "--listen", "127.0.0.1:0", "--seed", "3"]);
    simUrl = sim.urls[0];
    const env = Object.assign({}, process.env, {
      TENCENTCLOUD_SECRET_ID: DEMO.secretId, TENCENTCLOUD_SECRET_KEY: DEMO.secretKey });
    peer = await start(process.execPath, [path.join(ROOT, "bench", "serve", "peer.js"),
      "--listen", "127.0.0.1:0", "--endpoint", simUrl, "--merchant-id", DEMO.merchantId,
      "--timeout", "2"], { env });
    url = peer.urls[0];
  });

  after(async () => {
    const codes = await Promise.all([peer && peer.stop(), sim && sim.stop()]);
    assert.deepEqual(codes, [0, 0], `peer stderr: ${peer && peer.stderr()}`);
  });

  const post = (route, body, user) => request(url + route, { method: "POST", body,
    headers: user ? { "X-Eidkit-Demo-User": user } : {} });
  const simRequests = async () => (await request(`${simUrl}/sim/health`)).json.Requests;
  const finish = (tok, ErrCode) => request(`${simUrl}/sim/tokens/${tok}/finish`,
    { method: "POST", body: { ErrCode } });

  it("token -> pending -> the user passes -> passed, then replays without calling upstream", async () => {
    const t = await post("/eid/token", {}, "alice");
    assert.equal(t.status, 200, t.body);
    assert.match(t.json.EidToken, /^[0-9A-F-]{36}$/i);
    assert.equal(t.json.Url, `${simUrl}/sim/h5?token=${t.json.EidToken}`);
    assert.ok(t.json.expires_at > Date.now() / 1000 + 7000);
    assert.equal(t.headers["content-type"], "application/json");

    const p = await post("/eid/result", { EidToken: t.json.EidToken }, "alice");
    assert.equal(p.status, 200, p.body);
    assert.deepEqual(p.json, { status: "pending", code: null, reason: "no_result", retry_with_new_token: false });

    assert.equal((await finish(t.json.EidToken, 0)).status, 200);
    const r = await post("/eid/result", { EidToken: t.json.EidToken }, "alice");
    assert.deepEqual(r.json, { status: "passed", code: 0, reason: "passed", retry_with_new_token: false });

    const before = await simRequests();
    const again = await post("/eid/result", { EidToken: t.json.EidToken }, "alice");
    assert.deepEqual(again.json, r.json);
    assert.equal(await simRequests(), before + 1); // the health call itself only
  });

  it("every /eid/result on a pending token is one GetEidResult upstream", async () => {
    const t = await post("/eid/token", {}, "bob");
    const before = await simRequests();
    for (let i = 0; i < 5; i++) {
      assert.equal((await post("/eid/result", { EidToken: t.json.EidToken }, "bob")).json.status, "pending");
    }
    assert.equal(await simRequests(), before + 1 + 5);
  });

  it("a failed verification is failed with its ErrCode", async () => {
    const t = await post("/eid/token", {}, "carol");
    await finish(t.json.EidToken, 2016);
    const r = await post("/eid/result", { EidToken: t.json.EidToken }, "carol");
    assert.deepEqual(r.json, { status: "failed", code: 2016, reason: "failed", retry_with_new_token: true });
  });

  it("refuses as the gateway does: 401, 403, 404, 405, 400, 413", async () => {
    const t = await post("/eid/token", {}, "dave");
    const cases = [
      [await post("/eid/token", {}), 401, "unauthorized"],
      [await post("/eid/result", { EidToken: t.json.EidToken }, "eve"), 403, "wrong_subject"],
      [await post("/eid/result", { EidToken: "00000000-0000-0000-0000-000000000000" }, "dave"), 404, "unknown_token"],
      [await post("/nowhere", {}, "dave"), 404, "not_found"],
      [await request(`${url}/eid/result`, { headers: { "X-Eidkit-Demo-User": "dave" } }), 405, "method_not_allowed"],
      [await post("/eid/result", "{not json", "dave"), 400, "bad_request"],
      [await post("/eid/result", "[1]", "dave"), 400, "bad_request"],
      [await post("/eid/result", { EidToken: 1 }, "dave"), 400, "bad_request"],
      [await post("/eid/result", { EidToken: t.json.EidToken, Name: "x" }, "dave"), 400, "bad_request"],
      [await post("/eid/token", { Name: "x" }, "dave"), 400, "bad_request"],
      [await post("/eid/token", { pad: "x".repeat(17000) }, "dave"), 413, "too_large"],
    ];
    for (const [res, status, code] of cases) {
      assert.equal(res.status, status, res.body);
      assert.equal(res.json.error.code, code, res.body);
    }
    assert.equal(cases[4][0].headers.allow, "POST");
  });

  it("upstream failures: Tencent's code 502, throttling 429, a timeout 504", async () => {
    const t = await post("/eid/token", {}, "frank");
    const faults = (rules) => request(`${simUrl}/sim/faults`, { method: "PUT", body: rules });
    try {
      await faults([{ Action: "GetEidResult", Kind: "error", Code: "InternalError" }]);
      let r = await post("/eid/result", { EidToken: t.json.EidToken }, "frank");
      assert.deepEqual([r.status, r.json.error.code], [502, "InternalError"]);

      await faults([{ Action: "GetEidResult", Kind: "throttle" }]);
      r = await post("/eid/result", { EidToken: t.json.EidToken }, "frank");
      assert.deepEqual([r.status, r.json.error.code, r.headers["retry-after"]], [429, "RequestLimitExceeded", "1"]);

      await faults([{ Action: "GetEidResult", Kind: "latency", Ms: 3000 }]); // the peer waits 2 s
      r = await post("/eid/result", { EidToken: t.json.EidToken }, "frank");
      assert.deepEqual([r.status, r.json.error.code], [504, "timeout"]);
    } finally {
      await request(`${simUrl}/sim/faults`, { method: "DELETE" });
    }
  });
});
