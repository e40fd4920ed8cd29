// Conformance with a client we did not write: the official Node.js SDK
// (tencentcloud-sdk-nodejs, pinned in node/package-lock.json) against
// `eidkit sim`, over HTTP and over HTTPS with a test CA. Run by
// spec/conformance/run, which starts the simulators.
"use strict";

const { describe, it, before } = require("node:test");
const assert = require("node:assert/strict");
const https = require("node:https");
const { DEMO, FaceidClient, simPort, tempCredential, faceid, control, playUser, tokenRequest,
  sdkError } = require("./lib.js");

const SDKException =
  require("tencentcloud-sdk-nodejs/tencentcloud/common/exception/tencent_cloud_sdk_exception.js").default;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

let port;
let client;

before(() => {
  port = simPort("plain");
  client = faceid({ port });
});

describe("the SDK itself", () => {
  it("is the pinned tencentcloud-sdk-nodejs with the faceid 2018-03-01 client", () => {
    assert.equal(require("tencentcloud-sdk-nodejs/package.json").version, "4.1.313");
    assert.equal(typeof FaceidClient, "function");
    assert.equal(client.apiVersion, "2018-03-01");
  });
});

describe("GetEidToken -> the user passes -> GetEidResult", () => {
  it("returns ErrCode 0 with one billable LivenessDetail and Extra echoed", async () => {
    const t = await client.GetEidToken(tokenRequest({ Extra: "order-0001 备注" }));
    assert.match(t.EidToken, /^[A-Za-z0-9-]{36}$/);
    assert.match(t.RequestId, UUID);
    assert.equal(t.Url, `http://127.0.0.1:${port}/sim/h5?token=${t.EidToken}`);

    // Before the user finishes, the result fields are null.
    const early = await client.GetEidResult({ EidToken: t.EidToken, InfoType: "0" });
    assert.equal(early.Text, null);

    await playUser(port, t.EidToken, 0);
    const r = await client.GetEidResult({ EidToken: t.EidToken, InfoType: "0" });
    assert.match(r.RequestId, UUID);
    assert.equal(r.Text.ErrCode, 0);
    assert.equal(r.Text.Extra, "order-0001 备注");
    assert.equal(r.Text.LiveStatus, 0);
    assert.equal(r.Text.Comparestatus, 0);
    assert.equal(typeof r.Text.Sim, "string");
    assert.ok(Number(r.Text.Sim) >= 70, `Sim ${r.Text.Sim} is a pass`);
    assert.equal(r.Text.LivenessDetail.length, 1);
    assert.equal(r.Text.LivenessDetail[0].IsNeedCharge, true);
    assert.equal(r.Text.LivenessDetail[0].Errcode, 0);
    assert.equal(r.IsVerifyIntention, false);
  });
});

describe("CheckEidTokenStatus", () => {
  it("walks init -> doing -> finished as the user plays", async () => {
    const { EidToken } = await client.GetEidToken(tokenRequest());
    const status = async () => (await client.CheckEidTokenStatus({ EidToken })).Status;
    assert.equal(await status(), "init");
    const s = await control(port, "POST", `/sim/tokens/${EidToken}/start`);
    assert.equal(s.status, 200);
    assert.equal(await status(), "doing");
    const f = await control(port, "POST", `/sim/tokens/${EidToken}/finish`, { ErrCode: 0 });
    assert.equal(f.status, 200);
    assert.equal(await status(), "finished");
  });
});

describe("several attempts on one token", () => {
  it("a 2016 then a pass gives two LivenessDetail entries, both billable", async () => {
    const { EidToken } = await client.GetEidToken(tokenRequest());
    await playUser(port, EidToken, 2016);
    const mid = await client.GetEidResult({ EidToken, InfoType: "1" });
    assert.equal(mid.Text.ErrCode, 2016);
    assert.equal(mid.Text.LivenessDetail.length, 1);

    const f = await control(port, "POST", `/sim/tokens/${EidToken}/finish`, { ErrCode: 0 });
    assert.equal(f.status, 200);
    const r = await client.GetEidResult({ EidToken, InfoType: "1" });
    assert.equal(r.Text.ErrCode, 0);
    const d = r.Text.LivenessDetail;
    assert.equal(d.length, 2);
    assert.deepEqual(d.map((x) => [x.Errcode, x.IsNeedCharge]), [[2016, true], [0, true]]);
  });

  it("a non-billable failure (1001) is not charged", async () => {
    const { EidToken } = await client.GetEidToken(tokenRequest());
    await playUser(port, EidToken, 1001);
    const r = await client.GetEidResult({ EidToken, InfoType: "1" });
    assert.equal(r.Text.ErrCode, 1001);
    assert.deepEqual(r.Text.LivenessDetail.map((x) => x.IsNeedCharge), [false]);
  });
});

describe("authentication errors through the SDK's exception", () => {
  it("a wrong SecretKey is AuthFailure.SignatureFailure", async () => {
    const bad = faceid({ port, credential: { secretId: DEMO.secretId, secretKey: "not-the-key" } });
    const e = await sdkError(bad.GetEidToken(tokenRequest()));
    assert.equal(e.code, "AuthFailure.SignatureFailure");
    assert.match(e.requestId, UUID);
    assert.ok(e instanceof SDKException, "the SDK's own exception class");
  });

  it("an unknown SecretId is AuthFailure.SecretIdNotFound", async () => {
    const bad = faceid({ port, credential: { secretId: "AKIDnotRegisteredWithTheSim000000000", secretKey: "x" } });
    const e = await sdkError(bad.CheckEidTokenStatus({ EidToken: "00000000-0000-0000-0000-000000000000" }));
    assert.equal(e.code, "AuthFailure.SecretIdNotFound");
  });

  it("temporary credentials with their token are accepted", async () => {
    const tmp = faceid({ port, credential: tempCredential() });
    const { EidToken } = await tmp.GetEidToken(tokenRequest());
    assert.equal((await tmp.CheckEidTokenStatus({ EidToken })).Status, "init");
  });

  it("temporary credentials with a wrong token are AuthFailure.TokenFailure", async () => {
    const cred = Object.assign(tempCredential(), { token: "not-the-session-token" });
    const e = await sdkError(faceid({ port, credential: cred }).GetEidToken(tokenRequest()));
    assert.equal(e.code, "AuthFailure.TokenFailure");
  });
});

describe("business errors", () => {
  it("an unknown EidToken is InvalidParameterValue.BizTokenIllegal", async () => {
    const EidToken = "CE661F1A-0F1E-45BD-BE13-34C05CEA7681";
    let e = await sdkError(client.GetEidResult({ EidToken }));
    assert.equal(e.code, "InvalidParameterValue.BizTokenIllegal");
    e = await sdkError(client.CheckEidTokenStatus({ EidToken }));
    assert.equal(e.code, "InvalidParameterValue.BizTokenIllegal");
  });

  for (const [what, change] of [
    ["an IdCard with '-'", { IdCard: "112044-16541220243" }],
    ["a Name of 33 characters", { Name: "韦".repeat(33) }],
    ["Config.InputType \"9\"", { Config: { InputType: "9" } }],
  ]) {
    it(`GetEidToken with ${what} is InvalidParameterValue`, async () => {
      const e = await sdkError(client.GetEidToken(tokenRequest(change)));
      assert.equal(e.code, "InvalidParameterValue");
    });
  }

  it("GetEidToken accepts a Name of exactly 32 characters", async () => {
    const t = await client.GetEidToken(tokenRequest({ Name: "韦".repeat(32) }));
    assert.match(t.EidToken, /^[A-Za-z0-9-]{36}$/);
  });
});

describe("over HTTPS with the driver's test CA", () => {
  it("serves the whole flow to the SDK", async () => {
    const tport = simPort("tls");
    const tls = faceid({ port: tport, protocol: "https://" });
    const t = await tls.GetEidToken(tokenRequest({ Extra: "tls" }));
    assert.equal(t.Url, `https://127.0.0.1:${tport}/sim/h5?token=${t.EidToken}`);
    await playUser({ port: tport, tls: true }, t.EidToken, 0);
    const r = await tls.GetEidResult({ EidToken: t.EidToken, InfoType: "1" });
    assert.equal(r.Text.ErrCode, 0);
    assert.equal(r.Text.Extra, "tls");
  });

  it("presents a certificate issued by the test CA (NODE_EXTRA_CA_CERTS)", async () => {
    const tport = simPort("tls");
    const issuer = await new Promise((resolve, reject) => {
      const req = https.get({ host: "127.0.0.1", port: tport, path: "/sim/health", agent: false }, (res) => {
        const cert = res.socket.getPeerCertificate();
        res.resume();
        res.on("end", () => resolve(cert.issuer.CN));
      });
      req.on("error", reject);
    });
    assert.equal(issuer, "eidkit conformance test CA");
  });
});
