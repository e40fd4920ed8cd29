// The official Node.js SDK sends an encrypted GetEidToken to `eidkit sim`
// (started by spec/conformance/run with --encryption-key: the RSA and SM2
// test keys of spec/fixtures/crypto standing in for Tencent's). The
// Encryption block is built here as Tencent's faceid-api-crypto-nodejs
// builds it, with code eidkit did not write: Node's crypto (a random
// AES-256-CBC key and IV, RSA PKCS#1 v1.5 to Tencent's public key) and
// gm-crypto (SM2 C1C3C2 with 04, for the SM4-GCM block's key). The
// simulator must decrypt the fields (its control API shows them), echo
// them encrypted under the same key, and refuse a block it cannot open.
"use strict";

const { describe, it, before } = require("node:test");
const assert = require("node:assert/strict");
const crypto = require("node:crypto");
const fs = require("node:fs");
const path = require("node:path");
const { SM2 } = require("gm-crypto");
const { DEMO, ROOT, simPort, faceid, control, sdkError } = require("./lib.js");

const FIX = path.join(ROOT, "spec/fixtures/crypto");
const NAME = "欧阳·韦小宝";
const IDCARD = "11204416541220243X";

let port;
let client;

before(() => {
  port = simPort("plain");
  client = faceid({ port });
});

function aesBlock(fields, publicPem) {
  const key = crypto.randomBytes(32);
  const iv = crypto.randomBytes(16);
  const out = { Encryption: {
    EncryptList: Object.keys(fields),
    CiphertextBlob: crypto.publicEncrypt({ key: publicPem, padding: crypto.constants.RSA_PKCS1_PADDING },
      key).toString("base64"),
    Iv: iv.toString("base64"),
    Algorithm: "AES-256-CBC",
  } };
  for (const [k, v] of Object.entries(fields)) {
    const c = crypto.createCipheriv("aes-256-cbc", key, iv);
    out[k] = Buffer.concat([c.update(v, "utf8"), c.final()]).toString("base64");
  }
  return { key, body: out };
}

function aesDecrypt(key, ivB64, text) {
  const d = crypto.createDecipheriv("aes-256-cbc", key, Buffer.from(ivB64, "base64"));
  return Buffer.concat([d.update(Buffer.from(text, "base64")), d.final()]).toString("utf8");
}

describe("GetEidToken with Encryption (AES-256-CBC) from the official SDK", () => {
  it("is decrypted by the simulator and answered with the fields encrypted under the same key", async () => {
    const pem = fs.readFileSync(path.join(FIX, "rsa1024_pkcs1_pub.pem"));
    const { key, body } = aesBlock({ Name: NAME, IdCard: IDCARD }, pem);
    const t = await client.GetEidToken(Object.assign({ MerchantId: DEMO.merchantId,
      Config: { InputType: "4" } }, body));
    assert.match(t.EidToken, /^[A-Za-z0-9-]{36}$/);
    assert.deepEqual(t.Encryption.EncryptList, ["Response.Name", "Response.IdCard"]);
    assert.equal(t.Encryption.Algorithm, "AES-256-CBC");
    assert.equal(aesDecrypt(key, t.Encryption.Iv, t.Name), NAME);
    assert.equal(aesDecrypt(key, t.Encryption.Iv, t.IdCard), IDCARD);
    const s = await control(port, "GET", `/sim/tokens/${t.EidToken}`);
    assert.equal(s.status, 200);
    assert.deepEqual(JSON.parse(s.body).Identity, { Name: NAME, IdCard: IDCARD });
  });

  it("a key wrapped to another RSA key is FailedOperation.DecryptSystemError", async () => {
    const other = crypto.generateKeyPairSync("rsa", { modulusLength: 1024 }).publicKey;
    const { body } = aesBlock({ Name: NAME, IdCard: IDCARD }, other);
    const e = await sdkError(client.GetEidToken(Object.assign({ MerchantId: DEMO.merchantId }, body)));
    assert.equal(e.code, "FailedOperation.DecryptSystemError");
    assert.ok(!String(e.message).includes(IDCARD));
  });
});

describe("GetEidToken whose SM4-GCM key is wrapped by gm-crypto", () => {
  it("a gm-crypto SM2 CiphertextBlob opens; a wrong tag is DecryptSystemError", async () => {
    // Node has no SM4-GCM: the fields are sent with a tag that cannot be
    // right, so the simulator gets as far as the tag check and refuses.
    const spki = crypto.createPublicKey(fs.readFileSync(path.join(FIX, "sm2_pub.pem")))
      .export({ type: "spki", format: "der" });
    const pub = spki.subarray(spki.length - 65).toString("hex");
    const blob = SM2.encrypt(crypto.randomBytes(16), pub, { mode: SM2.constants.C1C3C2, pc: true,
      outputEncoding: "base64" });
    const body = { MerchantId: DEMO.merchantId, Name: "AAAA", IdCard: "AAAA", Encryption: {
      EncryptList: ["Name", "IdCard"], CiphertextBlob: blob,
      Iv: crypto.randomBytes(12).toString("base64"), Algorithm: "SM4-GCM",
      TagList: [crypto.randomBytes(16).toString("base64"), crypto.randomBytes(16).toString("base64")] } };
    const e = await sdkError(client.GetEidToken(body));
    assert.equal(e.code, "FailedOperation.DecryptSystemError");
    assert.match(e.message, /field Name/);
  });
});
