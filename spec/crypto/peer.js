// The independent side of spec/crypto/interop_spec.lua: npm sm-crypto and
// gm-crypto (SM2 C1C3C2, SM4-ECB) and Node's own crypto (AES-256-CBC, RSA
// PKCS#1 v1.5), none of them written here. Reads a JSON array of jobs on
// stdin, writes a JSON array of results (bytes as hex) on stdout; a job
// that throws gives {error: message}.
// Node 20 refuses PKCS#1 v1.5 private decryption unless started with
// --security-revert=CVE-2023-46809 (the spec does that: FaceID's
// CiphertextBlob for AES-256-CBC is PKCS#1 v1.5).
"use strict";

const crypto = require("node:crypto");
const fs = require("node:fs");
const smCrypto = require("sm-crypto");
const { SM2, SM4 } = require("gm-crypto");

const hex = (b) => Buffer.from(b).toString("hex");
const bytes = (h) => Buffer.from(h, "hex");

// The SM2 key of a PEM file as sm-crypto and gm-crypto want it: the private
// scalar and the uncompressed public point, hex.
function sm2Keys(file) {
  const pem = fs.readFileSync(file);
  const spki = crypto.createPublicKey(pem).export({ type: "spki", format: "der" });
  const out = { pub: hex(spki.subarray(spki.length - 65)) };
  try {
    const p8 = crypto.createPrivateKey(pem).export({ type: "pkcs8", format: "der" });
    // PKCS#8 { ..., OCTET STRING { ECPrivateKey { 1, OCTET STRING d, ... } } }
    const at = p8.indexOf(Buffer.from("0201010420", "hex"));
    out.priv = hex(p8.subarray(at + 5, at + 37));
  } catch (e) {
    // a public key file
  }
  return out;
}

const ops = {
  sm2_keys: (j) => sm2Keys(j.file),
  sm2_encrypt(j) {
    if (j.lib === "sm-crypto") return smCrypto.sm2.doEncrypt([...bytes(j.data)], j.pub, 1);
    return SM2.encrypt(bytes(j.data), j.pub, { mode: SM2.constants.C1C3C2, pc: true,
      outputEncoding: "hex" });
  },
  sm2_decrypt(j) {
    if (j.lib === "sm-crypto") {
      const out = smCrypto.sm2.doDecrypt(j.data, j.priv, 1, { output: "array" });
      if (!out || (Array.isArray(out) && out.length === 0 && j.data.length > 192)) {
        throw new Error("sm-crypto could not decrypt");
      }
      return hex(out);
    }
    return SM2.decrypt(j.data, j.priv, { mode: SM2.constants.C1C3C2, pc: true,
      inputEncoding: "hex", outputEncoding: "hex" });
  },
  sm4_ecb_encrypt(j) {
    if (j.lib === "sm-crypto") {
      return smCrypto.sm4.encrypt([...bytes(j.data)], j.key, { padding: j.padding || "none" });
    }
    return SM4.encrypt(bytes(j.data), j.key, { mode: SM4.constants.ECB, outputEncoding: "hex" });
  },
  sm4_ecb_decrypt(j) {
    if (j.lib === "sm-crypto") {
      return hex(smCrypto.sm4.decrypt(j.data, j.key, { padding: j.padding || "none",
        output: "array" }));
    }
    return SM4.decrypt(j.data, j.key, { mode: SM4.constants.ECB, inputEncoding: "hex",
      outputEncoding: "hex" });
  },
  aes_cbc_encrypt(j) {
    const c = crypto.createCipheriv("aes-256-cbc", bytes(j.key), bytes(j.iv));
    return hex(Buffer.concat([c.update(bytes(j.data)), c.final()]));
  },
  aes_cbc_decrypt(j) {
    const d = crypto.createDecipheriv("aes-256-cbc", bytes(j.key), bytes(j.iv));
    return hex(Buffer.concat([d.update(bytes(j.data)), d.final()]));
  },
  rsa_encrypt(j) {
    return hex(crypto.publicEncrypt({ key: fs.readFileSync(j.file),
      padding: crypto.constants.RSA_PKCS1_PADDING }, bytes(j.data)));
  },
  rsa_decrypt(j) {
    return hex(crypto.privateDecrypt({ key: fs.readFileSync(j.file),
      padding: crypto.constants.RSA_PKCS1_PADDING }, bytes(j.data)));
  },
};

const jobs = JSON.parse(fs.readFileSync(0, "utf8"));
const results = jobs.map((j) => {
  try {
    return { ok: ops[j.op](j) };
  } catch (e) {
    return { error: String(e && e.message) };
  }
});
process.stdout.write(JSON.stringify(results));
