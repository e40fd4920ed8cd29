-- What `eidkit serve` answers when what it depends on fails: the ledger
-- down (503), Tencent unreachable (502) or too slow (504). It never
-- crashes, and it serves again once the dependency is back.
local scratch = require "support.scratch"
local sp = require "support.serveproc"
local simproc = require "support.simproc"
local redis = require "support.redis"
local proc = require "support.proc"
local tinyproxy = require "support.tinyproxy"
local testca = require "support.testca"
local sim_mod = require "eidkit.sim"

local demo = sim_mod.demo
local CREDS = { TENCENTCLOUD_SECRET_ID = demo.SecretId, TENCENTCLOUD_SECRET_KEY = demo.SecretKey }

local function policy_file()
  local path = scratch.file()
  local f = assert(io.open(path, "w"))
  f:write([[return { authorize = function(req) return req.headers["x-user"] or false end }]])
  f:close()
  return path
end

describe("eidkit serve when a dependency fails", function()
  it("answers 503 while the Redis ledger is down, and 200 once it is back", function()
    if not redis.available then pending("redis-server is not installed") return end
    local srv = redis.start()
    local s = sp.start { "--sim", "--ledger", srv:url(0, "down:"), "--sweep-interval", "0" }
    local tok = sp.token(s, "alice")
    srv:stop()
    for _, c in ipairs {
      { "POST", "/eid/token", { user = "alice" } },
      { "POST", "/eid/result", { user = "alice", body = { EidToken = tok } } },
      { "GET", "/healthz", {} },
    } do
      local r = sp.request(s, c[1], c[2], c[3])
      assert.equals(503, r.status, c[2] .. ": " .. r.body)
      assert.equals("unavailable", r.json.error.code)
    end
    assert(srv:launch())
    local r = sp.request(s, "POST", "/eid/result", { user = "alice", body = { EidToken = tok } })
    assert.same({ 200, "pending" }, { r.status, r.json and r.json.status })
    assert.equals(0, (sp.stop(s)))
    srv:destroy()
  end)

  it("logs in to a Redis that wants a password, given in $EIDKIT_LEDGER, and never shows it", function()
    assert(redis.available, "redis-server is not installed: run scripts/setup-deps")
    local PW = "serve-pw/9:x@y"
    local srv = redis.start { requirepass = PW }
    local url = srv:url(0, "pw:")
    local s = sp.start({ "--sim", "--sweep-interval", "0" }, { env = { EIDKIT_LEDGER = url } })
    local tok = sp.token(s, "alice")
    local r = sp.request(s, "POST", "/eid/result", { user = "alice", body = { EidToken = tok } })
    assert.same({ 200, "pending" }, { r.status, r.json and r.json.status })
    assert.matches("1", srv:cli("EXISTS", "pw:{" .. tok .. "}"))
    -- The ledger's connections break and come back: each logs in again.
    srv:stop()
    assert(srv:launch())
    r = sp.request(s, "POST", "/eid/result", { user = "alice", body = { EidToken = tok } })
    assert.same({ 200, "pending" }, { r.status, r.json and r.json.status })
    local metrics = sp.request(s, "GET", "/metrics", {}).body
    assert.equals(0, (sp.stop(s)))
    local out, err = sp.output(s)
    for _, text in ipairs { out, err, metrics } do
      assert.is_nil(text:find("serve-pw", 1, true))
    end

    -- Refusals name what was wrong, never the password.
    local bin = proc.bin()
    local bad = url:gsub("serve%-pw", "wrong-pw")
    local run = proc.run { bin, "serve", "--sim", "--listen", "127.0.0.1:0", "--ledger", bad }
    assert.equals(1, run.code)
    assert.matches("cannot open the ledger: unavailable: redis: AUTH at 127%.0%.0%.1:%d+ failed: WRONGPASS", run.stderr)
    assert.is_nil(run.stderr:find("wrong-pw", 1, true))
    run = proc.run { bin, "serve", "--sim", "--listen", "127.0.0.1:0", "--ledger", "rediss://:hunter2@h:1/0" }
    assert.equals(2, run.code)
    assert.matches("%-%-ledger: expected sqlite:PATH or redis://%[%[USER%]:PASSWORD@%]HOST:PORT%[/DB%]%[%?prefix=P%], "
      .. "got 'rediss://%*%*%*@h:1/0'", run.stderr)
    assert.is_nil(run.stderr:find("hunter2", 1, true))
    run = proc.run({ bin, "serve", "--sim", "--listen", "127.0.0.1:0" }, { env = { EIDKIT_LEDGER = "mysql://u:hunter2@x" } })
    assert.equals(2, run.code)
    assert.matches("EIDKIT_LEDGER: expected sqlite:PATH or redis://.*got 'mysql://%*%*%*@x'", run.stderr)
    assert.is_nil(run.stderr:find("hunter2", 1, true))
    -- given empty (an unset variable in a script): refused, not ./eidkit.db in its place
    run = proc.run({ bin, "serve", "--sim", "--listen", "127.0.0.1:0", "--ledger", "" }, { env = { EIDKIT_LEDGER = url } })
    assert.equals(2, run.code)
    assert.matches("%-%-ledger: expected sqlite:PATH or redis://.*got ''", run.stderr)
    srv:destroy()
  end)

  it("calls Tencent through --proxy, and answers 502 when the proxy is not there", function()
    local sim = simproc.start { "--seed", "5" }
    local tp = tinyproxy.start()
    local policy, db = policy_file(), scratch.file()
    local function serve()
      return sp.start({ "--endpoint", sim.url, "--merchant-id", demo.MerchantId, "--policy", policy,
        "--ledger", "sqlite:" .. db .. ".db", "--sweep-interval", "0", "--proxy", tp.url }, { env = CREDS })
    end
    local s = serve()
    local r = sp.request(s, "POST", "/eid/token", { headers = { ["X-User"] = "u" } })
    assert.equals(200, r.status, r.body)
    assert.equals(1, tp:forwarded("POST", sim.url))
    assert.equals(0, (sp.stop(s)))
    tp:stop()
    -- Nothing listens where the proxy was: the call never left.
    s = serve()
    r = sp.request(s, "POST", "/eid/token", { headers = { ["X-User"] = "u" } })
    assert.same({ 502, "connect" }, { r.status, r.json and r.json.error.code })
    assert.equals(0, (sp.stop(s)))
    simproc.stop(sim)
  end)

  it("checks Tencent's TLS against --ca-file: 200 with the right CA, 502 tls with another", function()
    local ca = testca.make { san = "IP:127.0.0.1" }
    local sim = simproc.start { "--tls-cert", ca.cert, "--tls-key", ca.key }
    local policy, db = policy_file(), scratch.file()
    for _, c in ipairs { { ca.ca, 200 }, { ca.other, 502, "tls" } } do
      local s = sp.start({ "--endpoint", sim.url, "--merchant-id", demo.MerchantId, "--policy", policy,
        "--ledger", "sqlite:" .. db .. ".db", "--sweep-interval", "0", "--ca-file", c[1] }, { env = CREDS })
      local r = sp.request(s, "POST", "/eid/token", { headers = { ["X-User"] = "u" } })
      assert.equals(c[2], r.status, r.body)
      if c[3] then assert.equals(c[3], r.json.error.code) end
      assert.equals(0, (sp.stop(s)))
    end
    simproc.stop(sim)
    ca.remove()
  end)

  it("answers 502 when Tencent cannot be reached, 504 when it does not answer in time", function()
    local policy = policy_file()
    local db = scratch.file()
    -- Nothing listens on port 1: connection refused.
    local s = sp.start({ "--endpoint", "http://127.0.0.1:1", "--merchant-id", demo.MerchantId,
      "--policy", policy, "--ledger", "sqlite:" .. db .. ".db", "--sweep-interval", "0" }, { env = CREDS })
    local r = sp.request(s, "POST", "/eid/token", { headers = { ["X-User"] = "u" } })
    assert.same({ 502, "connect" }, { r.status, r.json and r.json.error.code })
    assert.equals(0, (sp.stop(s)))

    local sim = simproc.start { "--seed", "3" }
    s = sp.start({ "--endpoint", sim.url, "--merchant-id", demo.MerchantId, "--policy", policy,
      "--ledger", "sqlite:" .. db .. ".db", "--sweep-interval", "0", "--upstream-timeout", "0.3",
      "--upstream-deadline", "1" }, { env = CREDS })
    sp.sim_faults(s, { { Action = "GetEidToken", Kind = "latency", Ms = 3000 } }, sim.url)
    r = sp.request(s, "POST", "/eid/token", { headers = { ["X-User"] = "u" } })
    assert.same({ 504, "timeout" }, { r.status, r.json and r.json.error.code })
    -- still serving
    assert.equals(200, sp.request(s, "GET", "/healthz").status)
    assert.equals(0, (sp.stop(s)))
    simproc.stop(sim)
    os.remove(policy)
    for _, ext in ipairs { "", ".db", ".db-wal", ".db-shm" } do os.remove(db .. ext) end
  end)
end)
