// The independent side of bench/crypto/run: npm sm-crypto (and gm-crypto)
// doing what eidkit's crypto_bench.lua does, on the same input: decrypt the
// EidInfo (SM2 then SM4-ECB then JSON), and the extra work of an encrypted
// GetEidToken. Neither npm library has SM4-GCM, so the SM4-GCM case times
// the SM2 wrap of the 16-byte key only (the fields' SM4-GCM is left out:
// eidkit's figure includes it); the AES-256-CBC case is Node's crypto (RSA
// PKCS#1 v1.5 + AES), as Tencent's faceid-api-crypto-nodejs does it.
"use strict";

const crypto = require("node:crypto");
const fs = require("node:fs");
const smCrypto = require("sm-crypto");
const { SM2 } = require("gm-crypto");

const input = JSON.parse(fs.readFileSync(process.env.BENCH_INPUT, "utf8"));
const reps = Number(process.env.REPS || 11);
const target = Number(process.env.TARGET_MS || 100);
const F = input.fixtures;

function sm2Keys(file) {
  const pem = fs.readFileSync(file);
  const spki = crypto.createPublicKey(pem).export({ type: "spki", format: "der" });
  const p8 = crypto.createPrivateKey(pem).export({ type: "pkcs8", format: "der" });
  const at = p8.indexOf(Buffer.from("0201010420", "hex"));
  return { pub: spki.subarray(spki.length - 65).toString("hex"), priv: p8.subarray(at + 5, at + 37).toString("hex") };
}

function time(f) {
  let n = 1;
  let t0;
  do {
    n *= 2;
    t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) f();
  } while (Number(process.hrtime.bigint() - t0) / 1e6 < target / 4 && n < 1e7);
  n = Math.max(1, Math.floor(n * target / Math.max(Number(process.hrtime.bigint() - t0) / 1e6, 1e-3)));
  const runs = [];
  for (let r = 0; r < reps; r++) {
    const s = process.hrtime.bigint();
    for (let i = 0; i < n; i++) f();
    runs.push(Number(process.hrtime.bigint() - s) / 1e3 / n);
  }
  runs.sort((a, b) => a - b);
  return runs[(runs.length - 1) / 2];
}

const k = sm2Keys(F + "sm2_pkcs8.pem");
const desKey = Buffer.from(input.eidinfo.DesKey, "base64");
const userInfo = Buffer.from(input.eidinfo.UserInfo, "base64").toString("hex");

function smDecrypt() {
  const session = smCrypto.sm2.doDecrypt(desKey.subarray(1).toString("hex"), k.priv, 1, { output: "array" });
  const plain = smCrypto.sm4.decrypt(userInfo, Buffer.from(session).toString("hex"), { padding: "none", output: "array" });
  const text = Buffer.from(plain).toString("utf8");
  return JSON.parse(text.slice(0, text.lastIndexOf("}") + 1));
}
function gmDecrypt() {
  // gm-crypto's SM4 always strips PKCS#7 padding, which the zero-filled
  // UserInfo does not have: only its SM2 step is timed.
  return SM2.decrypt(desKey, k.priv, { mode: SM2.constants.C1C3C2, pc: true, outputEncoding: "hex" });
}
const id = smDecrypt();
if (id.name !== input.identity.name || id.idnum !== input.identity.idnum) throw new Error("sm-crypto decrypted something else");

const out = [];
out.push(["decrypt_eidinfo (loaded key)", time(smDecrypt)]);
out.push(["decrypt_eidinfo, SM2 step only (gm-crypto)", time(gmDecrypt)]);
const rsaPem = fs.readFileSync(F + "rsa1024_pub.pem");
const fields = [input.identity.name, input.identity.idnum];
out.push(["GetEidToken extra, SM4-GCM, fresh key (key_ttl 0)", time(() => {
  const key = crypto.randomBytes(16);
  return smCrypto.sm2.doEncrypt([...key], k.pub, 1);
})]);
out.push(["GetEidToken extra, AES-256-CBC, fresh key (key_ttl 0)", time(() => {
  const key = crypto.randomBytes(32);
  const iv = crypto.randomBytes(16);
  const blob = crypto.publicEncrypt({ key: rsaPem, padding: crypto.constants.RSA_PKCS1_PADDING }, key).toString("base64");
  const enc = fields.map((v) => {
    const c = crypto.createCipheriv("aes-256-cbc", key, iv);
    return Buffer.concat([c.update(v, "utf8"), c.final()]).toString("base64");
  });
  return [blob, iv.toString("base64"), enc];
})]);
for (const [name, us] of out) process.stdout.write(`${name}\t${us.toFixed(2)}\n`);
