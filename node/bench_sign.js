// Time the official Node.js SDK's TC3 signer (Sign.sign3 from
// tencentcloud-sdk-nodejs) on one TC3 vector, as the baseline for bench/run:
//   node bench_sign.js VECTORS.json VECTOR_NAME REPS TARGET_MS
// Prints the same "result" lines as bench_sign.c. Not part of the test suite.
//
// sign3 has no key cache: every call derives the signing key, like eidkit's
// fresh-key case. Two payload forms are timed:
//   buffer - the exact body bytes, which sign3 hashes as they are; the same
//            input eidkit gets, so this is the row ratios are taken against;
//   object - the parsed body, which is what the SDK's own client passes
//            (sign3 then serialises it with json-bigint before hashing).
"use strict";

const fs = require("fs");
const Sign = require("tencentcloud-sdk-nodejs/tencentcloud/common/sign.js").default;
const sdkVersion = require("tencentcloud-sdk-nodejs/package.json").version;

const [vectorsPath, vectorName, repsArg, targetArg] = process.argv.slice(2);
const reps = Number.parseInt(repsArg, 10);
const targetMs = Number.parseFloat(targetArg);
if (!vectorsPath || !vectorName || !(reps >= 1) || !(targetMs > 0)) {
  console.error("usage: node bench_sign.js VECTORS.json VECTOR_NAME REPS TARGET_MS");
  process.exit(2);
}

const v = JSON.parse(fs.readFileSync(vectorsPath, "utf8")).vectors.find((x) => x.name === vectorName);
if (!v) throw new Error(`no vector named ${vectorName}`);
// sign3 always signs exactly content-type;host, so only such vectors fit.
if (v.signed_headers.join(";") !== "content-type;host") {
  throw new Error(`${vectorName}: sign3 cannot sign ${v.signed_headers.join(";")}`);
}

const date = new Date(v.timestamp * 1000).toISOString().slice(0, 10);
const wantAuth =
  `TC3-HMAC-SHA256 Credential=${v.secret_id}/${date}/${v.service}/tc3_request, ` +
  `SignedHeaders=content-type;host, Signature=${v.signature}`;

function args(payload) {
  return {
    method: "POST",
    url: `https://${v.host}/`,
    payload,
    timestamp: v.timestamp,
    service: v.service,
    secretId: v.secret_id,
    secretKey: v.secret_key,
    headers: { "Content-Type": v.content_type },
  };
}

const cases = [
  { id: "node_buffer", label: `Node SDK ${sdkVersion} sign3, body as Buffer (fresh key)`, a: args(Buffer.from(v.body, "utf8")) },
  { id: "node_object", label: `Node SDK ${sdkVersion} sign3, body as object (fresh key)`, a: args(JSON.parse(v.body)) },
];

function check(auth, label) {
  if (auth !== wantAuth) {
    console.error(`${label} signs wrongly\n  got  ${auth}\n  want ${wantAuth}`);
    process.exit(1);
  }
}

// The argument object is built inside the loop: the SDK builds one per request.
function run(a, n) {
  let auth;
  for (let i = 0; i < n; i++) {
    auth = Sign.sign3({
      method: a.method, url: a.url, payload: a.payload, timestamp: a.timestamp,
      service: a.service, secretId: a.secretId, secretKey: a.secretKey, headers: a.headers,
    });
  }
  return auth;
}

function timeRun(a, n) {
  const t0 = process.hrtime.bigint();
  const auth = run(a, n);
  return [Number(process.hrtime.bigint() - t0) / 1e9, auth];
}

// Doubling n until one run lasts TARGET_MS is also the warm-up, long enough
// for V8 to have optimised run() and sign3 before the timed reps.
function measure(c) {
  let n = 256;
  for (;;) {
    const [t, auth] = timeRun(c.a, n);
    check(auth, c.label);
    if (t * 1000 >= targetMs) break;
    n *= 2;
  }
  const us = [];
  for (let i = 0; i < reps; i++) {
    const [t, auth] = timeRun(c.a, n);
    check(auth, c.label);
    us.push((t * 1e6) / n);
  }
  us.sort((x, y) => x - y);
  const mid = reps >> 1;
  const median = reps % 2 ? us[mid] : (us[mid - 1] + us[mid]) / 2;
  const f = (x) => x.toFixed(4);
  process.stdout.write(`result\t${c.id}\t${c.label}\t${f(median)}\t${f(us[0])}\t${f(us[reps - 1])}\t${n}\t${reps}\n`);
}

console.error(`Node ${process.version} (OpenSSL ${process.versions.openssl}), SDK ${sdkVersion}, ` +
  `${vectorName}, body ${Buffer.byteLength(v.body)} bytes`);
for (const c of cases) {
  check(Sign.sign3(c.a), c.label);
  measure(c);
}
