#!/usr/bin/env node
// The merchant's web server for examples/h5, as small as it gets: it serves
// this folder's pages and passes /eid/* to `eidkit serve` (a reverse proxy,
// as nginx would in production), so the page and the API share one origin:
// no CORS, and cookies go with every call, including the browser's return
// from Tencent's page to /eid/h5/return, which is a plain navigation that
// can carry no header of the page's choosing.
//
// DEMO ONLY: who the user is. Each browser gets a random session cookie,
// and the proxy hands it to eidkit serve as X-Eidkit-Demo-User, the header
// `eidkit serve --sim` takes the subject from (any such header the browser
// sends is dropped first). A real site has its own login; its policy's
// `authorize(request)` reads the session cookie the proxy passes through.
//
//   node examples/h5/front.js --serve http://127.0.0.1:8080 [--listen 127.0.0.1:8000]
//   eidkit serve --sim --listen 127.0.0.1:8080 --h5-return-url http://127.0.0.1:8000/done.html \
//     --token-fields RedirectUrl
//
// require("./front.js").createFront({ serve }) -> an http.Server (not yet
// listening) with server.setServe(url), for spec/conformance/h5_serve.test.js.
"use strict";

const crypto = require("node:crypto");
const fs = require("node:fs");
const http = require("node:http");
const path = require("node:path");

const COOKIE = "eidkit_demo_session";
const FILES = {
  "/": ["index.html", "text/html; charset=utf-8"],
  "/index.html": ["index.html", "text/html; charset=utf-8"],
  "/verify.js": ["verify.js", "text/javascript; charset=utf-8"],
  "/done.html": ["done.html", "text/html; charset=utf-8"],
  "/done.js": ["done.js", "text/javascript; charset=utf-8"],
};
// Hop-by-hop headers (RFC 9110 7.6.1) are not forwarded.
const HOP = new Set(["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
  "upgrade", "proxy-authorization", "proxy-authenticate"]);

function session(req) {
  const m = new RegExp(`(?:^|;\\s*)${COOKIE}=([0-9a-f]{32})(?:;|$)`).exec(req.headers.cookie || "");
  return m ? m[1] : null;
}

function createFront(opts = {}) {
  let serve = opts.serve ? new URL(opts.serve) : null;

  function proxy(req, res) {
    if (!serve) {
      res.writeHead(503, { "Content-Type": "text/plain" });
      res.end("no eidkit serve to pass /eid/ to\n");
      return;
    }
    const headers = {};
    for (const [k, v] of Object.entries(req.headers)) {
      if (!HOP.has(k) && k !== "host" && k !== "x-eidkit-demo-user") headers[k] = v;
    }
    const sid = session(req);
    if (sid) headers["x-eidkit-demo-user"] = `h5-${sid}`;
    headers["x-forwarded-for"] = req.socket.remoteAddress;
    const up = http.request({ host: serve.hostname, port: serve.port, method: req.method, path: req.url, headers },
      (ures) => {
        const out = {};
        for (const [k, v] of Object.entries(ures.headers)) if (!HOP.has(k)) out[k] = v;
        res.writeHead(ures.statusCode, out);
        ures.pipe(res);
      });
    up.on("error", () => {
      if (!res.headersSent) res.writeHead(502, { "Content-Type": "text/plain" });
      res.end("eidkit serve did not answer\n");
    });
    req.pipe(up);
  }

  const server = http.createServer((req, res) => {
    const p = req.url.split("?")[0];
    if (p === "/eid" || p.startsWith("/eid/")) return proxy(req, res);
    const file = FILES[p];
    if (!file || (req.method !== "GET" && req.method !== "HEAD")) {
      res.writeHead(404, { "Content-Type": "text/plain" });
      res.end("not found\n");
      return;
    }
    const headers = { "Content-Type": file[1], "Cache-Control": "no-store" };
    if (!session(req)) {
      headers["Set-Cookie"] = `${COOKIE}=${crypto.randomBytes(16).toString("hex")}; Path=/; HttpOnly; SameSite=Lax`;
    }
    res.writeHead(200, headers);
    res.end(req.method === "HEAD" ? undefined : fs.readFileSync(path.join(__dirname, file[0])));
  });
  server.setServe = (url) => { serve = new URL(url); };
  return server;
}

module.exports = { createFront };

if (require.main === module) {
  const args = process.argv.slice(2);
  const opt = (name, dflt) => {
    const i = args.indexOf(name);
    return i >= 0 && args[i + 1] ? args[i + 1] : dflt;
  };
  const serveUrl = opt("--serve", null);
  if (!serveUrl) {
    process.stderr.write("usage: node front.js --serve URL [--listen HOST:PORT]\n");
    process.exit(2);
  }
  const [host, port] = opt("--listen", "127.0.0.1:8000").split(/:(?=\d+$)/);
  const server = createFront({ serve: serveUrl });
  server.listen(Number(port), host, () => {
    const a = server.address();
    process.stdout.write(`listening on http://${a.address}:${a.port}\n`);
  });
}
