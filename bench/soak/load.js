// bench/soak's load: USERS concurrent users, each looping one verification
// through eidkit serve for SECONDS: POST /eid/token, the user finishing on
// the simulator (pass, fail with 2016, or walking away), then POST
// /eid/result until the answer is not pending (at most 5 polls, 0.5 s
// apart). Writes one JSON line per token to TOKENS_FILE ({tok, subject,
// finished: "pass"|"fail"|"none", status}) and, at the end, a JSON summary
// on stdout: requests by route, answers by status and error code, latency
// percentiles.
//
//   node load.js SERVE_URL SIM_URL USERS SECONDS TOKENS_FILE
"use strict";

const http = require("node:http");
const fs = require("node:fs");

const [serveUrl, simUrl, usersArg, secondsArg, tokensFile] = process.argv.slice(2);
const users = Number(usersArg);
const seconds = Number(secondsArg);
if (!serveUrl || !simUrl || !(users > 0) || !(seconds > 0) || !tokensFile) {
  process.stderr.write("usage: node load.js SERVE_URL SIM_URL USERS SECONDS TOKENS_FILE\n");
  process.exit(2);
}
const agent = new http.Agent({ keepAlive: true, maxSockets: users * 2 });
const out = fs.createWriteStream(tokensFile);

function request(base, method, path, body, headers) {
  const u = new URL(base);
  const data = body === undefined ? "" : JSON.stringify(body);
  return new Promise((resolve) => {
    const t0 = process.hrtime.bigint();
    const req = http.request({ host: u.hostname, port: u.port, method, path, agent,
      headers: { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(data), ...headers } },
    (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString("utf8"),
        ms: Number(process.hrtime.bigint() - t0) / 1e6 }));
      res.on("error", (e) => resolve({ status: 0, body: String(e), ms: 0 }));
    });
    req.on("error", (e) => resolve({ status: 0, body: String(e.code || e), ms: 0 }));
    req.setTimeout(30000, () => req.destroy(new Error("client_timeout")));
    req.end(data);
  });
}

const stats = { requests: {}, answers: {}, latencies: [] };
function count(route, r) {
  stats.requests[route] = (stats.requests[route] || 0) + 1;
  let code = "";
  if (r.status !== 200) {
    try { code = JSON.parse(r.body).error.code; } catch (e) { code = r.status === 0 ? r.body : "?"; }
  }
  const key = `${route} ${r.status}${code ? " " + code : ""}`;
  stats.answers[key] = (stats.answers[key] || 0) + 1;
  if (r.status !== 0) stats.latencies.push(r.ms);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const deadline = Date.now() + seconds * 1000;

async function user(i) {
  let n = 0;
  while (Date.now() < deadline) {
    n += 1;
    const subject = `soak-${i}-${n}`;
    const hdr = { "X-Eidkit-Demo-User": subject };
    const t = await request(serveUrl, "POST", "/eid/token", {}, hdr);
    count("token", t);
    if (t.status !== 200) { await sleep(t.status === 429 ? 1000 : 200); continue; }
    const tok = JSON.parse(t.body).EidToken;
    const roll = Math.random();
    const finished = roll < 0.6 ? "pass" : roll < 0.8 ? "fail" : "none";
    if (finished !== "none") {
      await request(simUrl, "POST", `/sim/tokens/${tok}/finish`, { ErrCode: finished === "pass" ? 0 : 2016 });
    }
    let status = "none";
    for (let k = 0; k < 5; k++) {
      const r = await request(serveUrl, "POST", "/eid/result", { EidToken: tok }, hdr);
      count("result", r);
      if (r.status === 200) {
        status = JSON.parse(r.body).status;
        if (status !== "pending") break;
      }
      await sleep(500);
    }
    out.write(JSON.stringify({ tok, subject, finished, status }) + "\n");
  }
}

(async () => {
  await Promise.all(Array.from({ length: users }, (_, i) => user(i)));
  out.end();
  const l = stats.latencies.sort((a, b) => a - b);
  const pct = (p) => (l.length ? l[Math.min(l.length - 1, Math.floor(p * l.length))] : null);
  process.stdout.write(JSON.stringify({ requests: stats.requests, answers: stats.answers,
    p50_ms: pct(0.5), p99_ms: pct(0.99), max_ms: l.length ? l[l.length - 1] : null }) + "\n");
  agent.destroy();
})();
