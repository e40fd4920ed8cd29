// bench/serve/run's token maker: N pending tokens through a server's own
// POST /eid/token, each for its own subject (X-Eidkit-Demo-User:
// PREFIX-<i>), CONC requests at a time on keep-alive connections. Writes
// "EidToken<TAB>subject" lines, in order, to stdout. A 429 is waited out
// (Retry-After) and retried, so a server with its default limits still gets
// there, slowly; any other answer fails the run.
//
//   node tokens.js URL N CONC PREFIX > tokens.tsv
"use strict";

const http = require("node:http");

const [url, nArg, concArg, prefix] = process.argv.slice(2);
const n = Number(nArg);
const conc = Number(concArg);
if (!url || !(n > 0) || !(conc > 0) || !prefix) {
  process.stderr.write("usage: node tokens.js URL N CONC PREFIX\n");
  process.exit(2);
}
const base = new URL(url);
const agent = new http.Agent({ keepAlive: true, maxSockets: conc });

function post(subject) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: base.hostname, port: base.port, method: "POST", path: "/eid/token", agent,
      headers: { "Content-Type": "application/json", "Content-Length": 2, "X-Eidkit-Demo-User": subject } },
    (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode, headers: res.headers,
        body: Buffer.concat(chunks).toString("utf8") }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.setTimeout(30000, () => req.destroy(new Error("timeout")));
    req.end("{}");
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function one(i) {
  const subject = `${prefix}-${i}`;
  for (let tries = 0; tries < 600; tries++) {
    const r = await post(subject);
    if (r.status === 429) {
      await sleep(1000 * Math.max(1, Number(r.headers["retry-after"]) || 1));
      continue;
    }
    let tok = null;
    try { tok = JSON.parse(r.body).EidToken; } catch { /* below */ }
    if (r.status !== 200 || typeof tok !== "string") {
      throw new Error(`POST /eid/token for ${subject}: HTTP ${r.status} ${r.body.slice(0, 200)}`);
    }
    return `${tok}\t${subject}`;
  }
  throw new Error(`POST /eid/token for ${subject}: still 429 after 600 tries`);
}

async function main() {
  const lines = new Array(n);
  let next = 0;
  const worker = async () => {
    while (next < n) {
      const i = next++;
      lines[i] = await one(i + 1);
    }
  };
  await Promise.all(Array.from({ length: Math.min(conc, n) }, worker));
  process.stdout.write(lines.join("\n") + "\n");
  agent.destroy();
}

main().catch((e) => {
  process.stderr.write(`tokens.js: ${e.message}\n`);
  process.exit(1);
});
