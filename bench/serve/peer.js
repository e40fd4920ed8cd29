#!/usr/bin/env node
// The peer for bench/serve/run: the merchant backend a competent Node.js
// developer writes in an afternoon instead of running `eidkit serve`. The
// same two routes, on Node's http module and the official SDK
// (tencentcloud-sdk-nodejs, faceid v20180301, pinned in node/):
//
//   POST /eid/token   {}           -> 200 {EidToken, Url, expires_at}      (GetEidToken)
//   POST /eid/result  {"EidToken"} -> 200 {status, code, reason, retry_with_new_token}
//                                                                           (GetEidResult)
//
// The subject is the X-Eidkit-Demo-User header, as `eidkit serve --sim`
// takes it with no policy; the token -> subject binding lives in a Map
// (nothing is persisted: a restart forgets every token). Errors answer
// {"error": {"code", "message"}} with the status eidkit.gateway uses for the
// same failure (docs/internals/gateway.md), as far as the routes overlap.
// Nothing is slowed down on purpose: one keep-alive agent for the upstream,
// no logging per request.
//
//   TENCENTCLOUD_SECRET_ID=... TENCENTCLOUD_SECRET_KEY=... \
//     node bench/serve/peer.js --endpoint http://127.0.0.1:PORT --merchant-id ID \
//       [--listen 127.0.0.1:8080] [--info-type 156] [--timeout 10]
//
// First stdout line: "listening on http://HOST:PORT" (port 0 picks one).
"use strict";

const http = require("node:http");
const https = require("node:https");
const path = require("node:path");
const { createRequire } = require("node:module");

// The SDK as pinned by node/package-lock.json (npm ci in node/).
const tencentcloud = createRequire(path.join(__dirname, "..", "..", "node", "package.json"))(
  "tencentcloud-sdk-nodejs");

const MAX_BODY = 16384;
const TOKEN_TTL = 7200; // seconds: the integration guide's EidToken lifetime

function usage(msg) {
  if (msg) process.stderr.write(`peer.js: ${msg}\n`);
  process.stderr.write("usage: node peer.js --endpoint URL --merchant-id ID [--listen HOST:PORT] "
    + "[--info-type DIGITS] [--timeout SECONDS]\n");
  process.exit(2);
}

function parseArgs(argv) {
  const o = { listen: "127.0.0.1:8080", infoType: "156", timeout: 10 };
  const names = { "--listen": "listen", "--endpoint": "endpoint", "--merchant-id": "merchantId",
    "--info-type": "infoType", "--timeout": "timeout" };
  for (let i = 0; i < argv.length; i += 2) {
    const key = names[argv[i]];
    if (!key) usage(`unknown option ${argv[i]}`);
    if (argv[i + 1] === undefined) usage(`${argv[i]} needs a value`);
    o[key] = argv[i + 1];
  }
  if (!o.endpoint) usage("--endpoint is required");
  if (!o.merchantId) usage("--merchant-id is required");
  o.timeout = Number(o.timeout);
  if (!(o.timeout > 0)) usage("--timeout must be a positive number of seconds");
  return o;
}

const opts = parseArgs(process.argv.slice(2));
const secretId = process.env.TENCENTCLOUD_SECRET_ID;
const secretKey = process.env.TENCENTCLOUD_SECRET_KEY;
if (!secretId || !secretKey) usage("set TENCENTCLOUD_SECRET_ID and TENCENTCLOUD_SECRET_KEY");

const endpoint = new URL(opts.endpoint);
const agent = new (endpoint.protocol === "https:" ? https : http).Agent({ keepAlive: true });
const client = new tencentcloud.faceid.v20180301.Client({
  credential: { secretId, secretKey },
  profile: { httpProfile: { endpoint: endpoint.host, protocol: `${endpoint.protocol}//`,
    reqTimeout: opts.timeout, agent } },
});

// EidToken -> { subject, outcome }: outcome is kept once it is final, so a
// second /eid/result replays it without calling Tencent again.
const tokens = new Map();

const JSON_HEADERS = { "Content-Type": "application/json", "Cache-Control": "no-store" };

function send(res, status, obj, extra) {
  const body = JSON.stringify(obj);
  res.writeHead(status, Object.assign({ "Content-Length": Buffer.byteLength(body) }, JSON_HEADERS, extra));
  res.end(body);
}

function fail(res, status, code, message, extra) {
  send(res, status, { error: { code, message } }, extra);
}

// An SDK exception as the gateway's status table maps the same failure.
function upstreamFailure(res, e) {
  if (e && e.code) {
    if (String(e.code).startsWith("RequestLimitExceeded")) {
      return fail(res, 429, e.code, "the verification service is busy; retry later", { "Retry-After": "1" });
    }
    return fail(res, 502, e.code, "the verification service refused the request");
  }
  if (e && e.httpCode) return fail(res, 502, `http_${e.httpCode}`, "the verification service could not be reached");
  if (e && /timeout/i.test(e.message || "")) {
    return fail(res, 504, "timeout", "the verification service did not answer in time");
  }
  return fail(res, 502, "connect", "the verification service could not be reached");
}

// Text.ErrCode -> the outcome (eid-api.md §4.3-4.4, coarsely).
function classify(result) {
  const text = result && result.Text;
  const code = text && typeof text.ErrCode === "number" ? text.ErrCode : null;
  if (code === null) return { status: "pending", code: null, reason: "no_result", retry_with_new_token: false };
  if (code === 0) return { status: "passed", code, reason: "passed", retry_with_new_token: false };
  if (code === 17) return { status: "pending", code, reason: "unfinished", retry_with_new_token: false };
  if (code === 15) return { status: "expired", code, reason: "token_expired", retry_with_new_token: true };
  return { status: "failed", code, reason: "failed", retry_with_new_token: true };
}

async function tokenRoute(subject, body, res) {
  const keys = Object.keys(body);
  if (keys.length) return fail(res, 400, "bad_request", `${keys[0]}: not accepted by this server`);
  let r;
  try {
    r = await client.GetEidToken({ MerchantId: opts.merchantId });
  } catch (e) {
    return upstreamFailure(res, e);
  }
  tokens.set(r.EidToken, { subject, outcome: null });
  send(res, 200, { EidToken: r.EidToken, Url: r.Url, expires_at: Math.floor(Date.now() / 1000) + TOKEN_TTL });
}

async function resultRoute(subject, body, res) {
  const tok = body.EidToken;
  const extra = Object.keys(body).find((k) => k !== "EidToken");
  if (extra) return fail(res, 400, "bad_request", `${extra}: unknown field`);
  if (typeof tok !== "string") return fail(res, 400, "bad_request", "EidToken: expected a string");
  const entry = tokens.get(tok);
  if (!entry) return fail(res, 404, "unknown_token", "no such token");
  if (entry.subject !== subject) return fail(res, 403, "wrong_subject", "the token was issued to another user");
  if (entry.outcome) return send(res, 200, entry.outcome);
  let r;
  try {
    r = await client.GetEidResult({ EidToken: tok, InfoType: opts.infoType });
  } catch (e) {
    return upstreamFailure(res, e);
  }
  const outcome = classify(r);
  if (outcome.status !== "pending") entry.outcome = outcome;
  send(res, 200, outcome);
}

const ROUTES = { "/eid/token": tokenRoute, "/eid/result": resultRoute };

const server = http.createServer((req, res) => {
  const route = ROUTES[req.url.split("?")[0]];
  if (!route) return fail(res, 404, "not_found", "no such route");
  if (req.method !== "POST") return fail(res, 405, "method_not_allowed", "method not allowed", { Allow: "POST" });
  const chunks = [];
  let size = 0;
  let refused = false;
  req.on("data", (c) => {
    size += c.length;
    if (size > MAX_BODY) {
      if (!refused) fail(res, 413, "too_large", "the request body is too large", { Connection: "close" });
      refused = true;
      return;
    }
    chunks.push(c);
  });
  req.on("end", () => {
    if (refused) return;
    const subject = req.headers["x-eidkit-demo-user"];
    if (!subject) return fail(res, 401, "unauthorized", "the request is not authorized");
    let body = {};
    const text = Buffer.concat(chunks).toString("utf8");
    if (text !== "") {
      try { body = JSON.parse(text); } catch { body = null; }
      if (body === null || typeof body !== "object" || Array.isArray(body)) {
        return fail(res, 400, "bad_request", "body: expected a JSON object");
      }
    }
    route(subject, body, res).catch((e) => {
      process.stderr.write(`peer.js: ${e && e.stack ? e.stack : e}\n`);
      if (!res.headersSent) fail(res, 500, "internal", "internal error");
    });
  });
});

const m = /^(.*):(\d+)$/.exec(opts.listen);
if (!m) usage("--listen must be HOST:PORT");
server.listen(Number(m[2]), m[1].replace(/^\[(.*)\]$/, "$1"), () => {
  const a = server.address();
  const host = a.family === "IPv6" ? `[${a.address}]` : a.address;
  process.stdout.write(`listening on http://${host}:${a.port}\n`);
});
server.on("error", (e) => {
  process.stderr.write(`peer.js: ${e.message}\n`);
  process.exit(1);
});
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => process.exit(0));
