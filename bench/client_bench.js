// bench/client's Node side: the official SDK (tencentcloud-sdk-nodejs, pinned
// in node/) against `eidkit sim`, configured as a merchant would for a private
// endpoint.
//   node client_bench.js seq  PORT TOKEN N RUNS   await GetEidResult, one at a time
//   node client_bench.js conc PORT TOKEN N RUNS   N GetEidResult promises at once
// Prints one calls/s figure per run; every answer must be a passing result.
"use strict";

const tencentcloud = require("tencentcloud-sdk-nodejs");

const [mode, port, token, nArg, runsArg] = process.argv.slice(2);
const n = Number(nArg);
const runs = Number(runsArg);

const client = new tencentcloud.faceid.v20180301.Client({
  credential: {
    secretId: "AKIDeidkitSimDemo00000000000000000000",
    secretKey: "eidkitSimDemoSecretKey000000000",
  },
  profile: { httpProfile: { endpoint: `127.0.0.1:${port}`, protocol: "http://", reqTimeout: 60 } },
});

function check(res) {
  if (!res || !res.Text || res.Text.ErrCode !== 0) {
    console.error("client_bench.js: bad answer", JSON.stringify(res));
    process.exit(1);
  }
}

async function main() {
  const params = { EidToken: token, InfoType: "1" };
  for (let r = 0; r < runs; r++) {
    const t0 = process.hrtime.bigint();
    if (mode === "seq") {
      for (let i = 0; i < n; i++) check(await client.GetEidResult(params));
    } else {
      const all = [];
      for (let i = 0; i < n; i++) all.push(client.GetEidResult(params));
      (await Promise.all(all)).forEach(check);
    }
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    console.log((n / s).toFixed(0));
  }
}

main().catch((e) => {
  console.error("client_bench.js:", e && e.message ? e.message : e);
  process.exit(1);
});
