// Shared by the conformance specs: the official SDK's faceid client pointed
// at a running `eidkit sim`, and a tiny client for the simulator's unsigned
// control API. spec/conformance/run starts the simulators and sets the
// environment read here; the specs never start a server of the API kind.
"use strict";

const { spawn } = require("node:child_process");
const fs = require("node:fs");
const http = require("node:http");
const https = require("node:https");
const path = require("node:path");
const tencentcloud = require("tencentcloud-sdk-nodejs");

const FaceidClient = tencentcloud.faceid.v20180301.Client;

// The simulator's documented demo identity (not secret: it only opens a
// simulator on loopback; `eidkit sim` prints it).
const DEMO = {
  secretId: "AKIDeidkitSimDemo00000000000000000000",
  secretKey: "eidkitSimDemoSecretKey000000000",
  merchantId: "0NSJ000000000000000000EIDKIT",
};

function env(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run these specs through spec/conformance/run`);
  return v;
}

// The port of one of the simulators the driver started: "plain" (HTTP),
// "tls" (HTTPS with the driver's test CA) or "slow" (200 ms latency fault).
function simPort(which) {
  return Number(env(`EIDKIT_SIM_${which.toUpperCase()}_PORT`));
}

// The temporary (STS-style) credential the driver registered.
function tempCredential() {
  return {
    secretId: env("EIDKIT_CONF_TEMP_ID"),
    secretKey: env("EIDKIT_CONF_TEMP_KEY"),
    token: env("EIDKIT_CONF_TEMP_TOKEN"),
  };
}

// A faceid client of the official SDK, exactly as a merchant configures one
// for a private endpoint. opts: port, protocol ("http://"), credential
// ({secretId, secretKey[, token]}, default the demo pair), agent.
function faceid(opts) {
  const credential = opts.credential || { secretId: DEMO.secretId, secretKey: DEMO.secretKey };
  const httpProfile = {
    endpoint: `127.0.0.1:${opts.port}`,
    protocol: opts.protocol || "http://",
    reqTimeout: 30,
  };
  if (opts.agent) httpProfile.agent = opts.agent;
  return new FaceidClient({ credential, profile: { httpProfile } });
}

// One request to the control API on a fresh connection. target is a port
// (HTTP) or {port, tls: true} (HTTPS, trusting NODE_EXTRA_CA_CERTS).
// Resolves to {status, headers, body, json}; json is null when the body is
// not JSON.
function control(target, method, path, body) {
  const { port, tls } = typeof target === "object" ? target : { port: target, tls: false };
  return new Promise((resolve, reject) => {
    const data = body === undefined ? "" : JSON.stringify(body);
    const req = (tls ? https : http).request(
      {
        host: "127.0.0.1", port, method, path, agent: false,
        headers: { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(data) },
      },
      (res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          let json = null;
          try { json = JSON.parse(text); } catch { /* not JSON */ }
          resolve({ status: res.statusCode, headers: res.headers, body: text, json });
        });
        res.on("error", reject);
      });
    req.on("error", reject);
    req.setTimeout(10000, () => req.destroy(new Error(`control ${method} ${path}: timeout`)));
    req.end(data);
  });
}

// Play the user through the control API: start, then finish with errCode.
async function playUser(target, token, errCode) {
  const s = await control(target, "POST", `/sim/tokens/${token}/start`);
  if (s.status !== 200) throw new Error(`start ${token}: HTTP ${s.status} ${s.body}`);
  const f = await control(target, "POST", `/sim/tokens/${token}/finish`, { ErrCode: errCode });
  if (f.status !== 200) throw new Error(`finish ${token}: HTTP ${f.status} ${f.body}`);
  return f.json;
}

// A valid GetEidToken request for the demo merchant.
function tokenRequest(extra) {
  return Object.assign({
    MerchantId: DEMO.merchantId,
    IdCard: "11204416541220243X",
    Name: "韦小宝",
    Config: { InputType: "4" },
  }, extra);
}

// The SDK's exception for a failing call, or an AssertionError-style throw
// when the call unexpectedly succeeds.
async function sdkError(promise) {
  try {
    const res = await promise;
    throw Object.assign(new Error(`expected an SDK error, got ${JSON.stringify(res)}`), { unexpected: true });
  } catch (e) {
    if (e.unexpected) throw e;
    return e;
  }
}

// The browser: $CHROMIUM, else chromium (or chromium-browser) on PATH.
function findChromium() {
  if (process.env.CHROMIUM) return process.env.CHROMIUM;
  for (const dir of (process.env.PATH || "").split(path.delimiter)) {
    for (const name of ["chromium", "chromium-browser"]) {
      const p = path.join(dir, name);
      try {
        fs.accessSync(p, fs.constants.X_OK);
        return p;
      } catch { /* not here */ }
    }
  }
  return null;
}

// The repository's root and its eidkit program ($EIDKIT_BIN, as the driver sets it).
const ROOT = path.resolve(__dirname, "..", "..");
const EIDKIT_BIN = process.env.EIDKIT_BIN || path.join(ROOT, "build", "eidkit");

// start(cmd, args, {env, lines = 1, timeoutMs = 15000}) -> {proc, urls, stop}
// Spawns a server that announces itself on stdout with lines "... on URL"
// ("listening on http://127.0.0.1:PORT", then for `eidkit serve --sim`
// "simulator on http://..."), and resolves once `lines` of them are read:
// urls holds their URLs in order. stop() sends SIGTERM and resolves with the
// exit code (SIGKILL after 5 s). Rejects with the server's stderr when it
// exits or stays silent first.
function start(cmd, args, opts = {}) {
  const want = opts.lines || 1;
  const proc = spawn(cmd, args, { env: opts.env || process.env, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  const urls = [];
  const exited = new Promise((resolve) => proc.on("exit", (code, sig) => resolve(code === null ? sig : code)));
  const stop = async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill("SIGTERM");
      const t = setTimeout(() => proc.kill("SIGKILL"), 5000);
      const code = await exited;
      clearTimeout(t);
      return code;
    }
    return exited;
  };
  proc.stderr.on("data", (c) => { err += c; });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill("SIGKILL");
      reject(new Error(`${path.basename(cmd)} did not announce ${want} URL(s) in time: ${out}${err}`));
    }, opts.timeoutMs || 15000);
    proc.stdout.on("data", (c) => {
      out += c;
      const lines = out.split("\n");
      out = lines.pop();
      for (const line of lines) {
        const m = / on (https?:\/\/\S+)$/.exec(line);
        if (m && urls.length < want) urls.push(m[1]);
      }
      if (urls.length === want) {
        clearTimeout(timer);
        proc.stdout.resume(); // keep draining
        resolve({ proc, urls, stop, stderr: () => err });
      }
    });
    proc.on("exit", (code) => {
      clearTimeout(timer);
      if (urls.length < want) reject(new Error(`${path.basename(cmd)} exited ${code}: ${err}`));
    });
    proc.on("error", (e) => { clearTimeout(timer); reject(e); });
  });
}

// One HTTP request on a fresh connection: url, {method, headers, body
// (object: sent as JSON; string: as is)} -> {status, headers, body, json}.
function request(url, opts = {}) {
  const u = new URL(url);
  const body = opts.body === undefined ? "" :
    typeof opts.body === "string" ? opts.body : JSON.stringify(opts.body);
  const headers = Object.assign({ "Content-Type": "application/json",
    "Content-Length": Buffer.byteLength(body) }, opts.headers);
  return new Promise((resolve, reject) => {
    const req = (u.protocol === "https:" ? https : http).request(
      { host: u.hostname, port: u.port, method: opts.method || "GET", path: u.pathname + u.search,
        agent: false, headers },
      (res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          let json = null;
          try { json = JSON.parse(text); } catch { /* not JSON */ }
          resolve({ status: res.statusCode, headers: res.headers, body: text, json });
        });
        res.on("error", reject);
      });
    req.on("error", reject);
    req.setTimeout(15000, () => req.destroy(new Error(`${opts.method || "GET"} ${url}: timeout`)));
    req.end(body);
  });
}

module.exports = { DEMO, FaceidClient, ROOT, EIDKIT_BIN, findChromium, env, simPort, tempCredential, faceid, control,
  playUser, tokenRequest, sdkError, start, request };
