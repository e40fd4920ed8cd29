-- eidkit.gateway mounted in nginx (lua/eidkit/openresty/gateway.lua) through
-- examples/openresty/run: what only nginx's shape brings. Metrics summed
-- over workers, the upstream bucket shared by workers (shared dict) and by
-- nginx instances (Redis), a token issued on one nginx finished on another,
-- Redis restarted mid-run, the sweep on one worker at a time, and the spec
-- that fails when a worker blocks. Real nginx, `eidkit sim`, redis-server.
-- (The routes' answers, case by case against `eidkit serve`: run_spec.)
local scratch = require "support.scratch"
local core = require "eidkit.core"
local cjson = require "cjson"
local sp = require "support.serveproc"
local orrun = require "support.orrun"
local redis = require "support.redis"
local proc = require "support.proc"

-- The pids of the workers that wrote access log lines (--access-log: into
-- error.log, each line prefixed with "PID#TID:").
-- from: the log's length before the requests of interest. Returns how
-- many workers, and the log's length now.
local function access_pids(s, from)
  local log = orrun.error_log(s)
  local pids, n = {}, 0
  for pid in log:sub((from or 0) + 1):gmatch("%] (%d+)#%d+: %*%d+ %[lua%] %S+ eidkit access ") do
    if not pids[pid] then n = n + 1 end
    pids[pid] = true
  end
  return n, #log
end

local function metric(s, pattern)
  local r = sp.request(s, "GET", "/metrics")
  assert.equals(200, r.status)
  return tonumber(r.body:match("\n" .. pattern .. " (%S+)\n"))
end

-- Many requests at once from one curl (--parallel), each its own
-- connection; returns the bodies (in request order), the statuses (in
-- the order the answers came) and the wall time.
local function parallel(s, reqs)
  local dir = proc.output("mktemp -d /tmp/eidkit-orgw-par-XXXXXX"):gsub("%s+$", "")
  local cfg = {}
  for i, r in ipairs(reqs) do
    cfg[#cfg + 1] = ('url = "%s%s"'):format(s.url, r.path)
    cfg[#cfg + 1] = ('request = "%s"'):format(r.method or "POST")
    cfg[#cfg + 1] = ('header = "X-Eidkit-Demo-User: %s"'):format(r.user)
    if r.body then
      cfg[#cfg + 1] = 'header = "Content-Type: application/json"'
      cfg[#cfg + 1] = ('data-binary = "%s"'):format((cjson.encode(r.body):gsub('"', '\\"')))
    end
    cfg[#cfg + 1] = ('output = "%s/%d"'):format(dir, i)
    cfg[#cfg + 1] = 'write-out = "%{http_code}\\n"'
    cfg[#cfg + 1] = "max-time = 20"
    if i < #reqs then cfg[#cfg + 1] = "next" end
  end
  local f = assert(io.open(dir .. "/cfg", "wb"))
  f:write(table.concat(cfg, "\n"), "\n")
  f:close()
  local t0 = core.monotonic()
  local r = proc.run { "curl", "-s", "--parallel", "--parallel-immediate", "--parallel-max", tostring(#reqs),
    "-K", dir .. "/cfg" }
  local took = core.monotonic() - t0
  local out = {}
  for i = 1, #reqs do
    local body = proc.read(dir .. "/" .. i) or ""
    local ok, v = pcall(cjson.decode, body)
    out[i] = { body = body, json = ok and v or nil }
  end
  local statuses = {}
  for code in r.stdout:gmatch("(%d+)\n") do statuses[#statuses + 1] = tonumber(code) end
  proc.sh("rm -rf " .. proc.quote(dir))
  return out, statuses, took
end

local function count(list, v)
  local n = 0
  for _, x in ipairs(list) do if x == v then n = n + 1 end end
  return n
end

describe("eidkit.gateway in nginx", function()
  it("sums /metrics over two workers", function()
    local s = orrun.start { "--workers", "2", "--access-log", "--sweep-interval", "0" }
    local ok, err = pcall(function()
      local sent = 0
      -- until both workers have answered some of them
      for _ = 1, 10 do
        local _, statuses = parallel(s, (function()
          local t = {}
          for i = 1, 20 do t[i] = { method = "GET", path = "/nope", user = "m" } end
          return t
        end)())
        assert.equals(20, count(statuses, 404))
        sent = sent + 20
        if access_pids(s) >= 2 then break end
      end
      assert.equals(2, (access_pids(s)), "one worker answered every request of 10 batches")
      -- every scrape, whichever worker answers it, shows the sum
      for _ = 1, 6 do
        assert.equals(sent, metric(s, 'eidkit_gateway_requests_total{route="other",status="404"}'))
      end
    end)
    orrun.stop(s)
    assert(ok, err)
  end)

  it("shares the upstream bucket between two workers (shared dict)", function()
    -- 0.5 calls a second: a bucket of 1, refilled every 2.5 s
    local s = orrun.start { "--workers", "2", "--access-log", "--sweep-interval", "0", "--limits", "shared",
      "--upstream-rate", "0.5", "--token-limit", "off" }
    local ok, err = pcall(function()
      -- Batches until one was answered by both workers (the kernel spreads
      -- connections, reuseport; one batch almost always does), each after
      -- the bucket is full again.
      local out, statuses, took, both
      local batches = 0
      for b = 1, 4 do
        batches = b
        local _, mark = access_pids(s)
        local reqs = {}
        for i = 1, 16 do reqs[i] = { path = "/eid/token", user = "b" .. b .. "-" .. i } end
        out, statuses, took = parallel(s, reqs)
        both = access_pids(s, mark) == 2
        if both then break end
        core.sleep(2.6)
      end
      assert.is_true(both, "one worker answered every request of 4 batches")
      assert.is_true(took < 2.4, "the requests took " .. took .. " s")
      -- each worker alone would let one through: 2
      assert.equals(1, count(statuses, 200), table.concat(statuses, ","))
      assert.equals(15, count(statuses, 429))
      local limited = 0
      for _, o in ipairs(out) do
        if o.json.error then
          assert.equals("rate_limited", o.json.error.code)
          limited = limited + 1
        end
      end
      assert.equals(15, limited)
      assert.equals(15 * batches, metric(s, 'eidkit_gateway_rate_limited_total{limit="GetEidToken"}'))
    end)
    orrun.stop(s)
    assert(ok, err)
  end)

  it("opens its ledger with the options eidkit serve uses (gateway.LEDGER_OPTIONS)", function()
    local inc = scratch.file()
    local f = assert(io.open(inc, "w"))
    f:write([[
location = /t/ledger-options {
  content_by_lua_block {
    local ledger = require("eidkit.openresty.gateway").state().ledger
    ngx.say(require("cjson").encode { request_ids = ledger.request_ids })
  }
}
]])
    f:close()
    local s = orrun.start { "--include", inc, "--sweep-interval", "0" }
    local ok, err = pcall(function()
      assert.equals(200, sp.request(s, "GET", "/healthz").status)
      local r = sp.request(s, "GET", "/t/ledger-options")
      assert.equals(200, r.status)
      assert.same(require("eidkit.gateway").LEDGER_OPTIONS, r.json)
    end)
    orrun.stop(s)
    os.remove(inc)
    assert(ok, err)
  end)

  it("answers the per-subject limit from the shared dict as eidkit serve does (429, Retry-After)", function()
    local s = orrun.start { "--limits", "shared", "--sweep-interval", "0" }
    local ok, err = pcall(function()
      for _ = 1, 5 do assert.equals(200, sp.request(s, "POST", "/eid/token", { user = "lim" }).status) end
      local r = sp.request(s, "POST", "/eid/token", { user = "lim" })
      -- the case table's want for `eidkit serve` (memory limits): 5/600 leaves 120 s to the next token
      assert.same({ 429, "rate_limited", "120" }, { r.status, r.json.error.code, r.headers["retry-after"] })
      assert.equals(200, sp.request(s, "POST", "/eid/token", { user = "other" }).status)
    end)
    orrun.stop(s)
    assert(ok, err)
  end)

  it("gives the subject's token back when the upstream bucket refuses (shared dict, Redis ledger)", function()
    local rds = redis.start()
    local ok, err = pcall(function()
      for _, where in ipairs { { "--limits", "shared" }, { "--limits", "ledger", "--ledger", rds:url(0, "give:") } } do
        local args = { "--token-limit", "2/600", "--upstream-rate", "0.5", "--sweep-interval", "0" }
        for _, a in ipairs(where) do args[#args + 1] = a end
        local s = orrun.start(args)
        local sok, serr = pcall(function()
          assert.equals(200, sp.request(s, "POST", "/eid/token", { user = "give" }).status)
          local r = sp.request(s, "POST", "/eid/token", { user = "give" })
          assert.same({ 429, "rate_limited" }, { r.status, r.json.error.code })
          assert.equals(1, metric(s, 'eidkit_gateway_rate_limited_total{limit="GetEidToken"}'))
          core.sleep(2.6) -- the upstream bucket refills; the subject's second token is still there
          r = sp.request(s, "POST", "/eid/token", { user = "give" })
          assert.equals(200, r.status, where[2])
          assert.is_nil(metric(s, 'eidkit_gateway_rate_limited_total{limit="subject"}'))
        end)
        orrun.stop(s)
        assert(sok, serr)
      end
    end)
    rds:destroy()
    assert(ok, err)
  end)

  describe("two nginx instances on one Redis", function()
    local srv
    lazy_setup(function() srv = redis.start() end)
    lazy_teardown(function() if srv then srv:destroy() end end)

    it("share the upstream bucket (the ledger's take)", function()
      local url = srv:url(0, "two-a:")
      local a = orrun.start { "--ledger", url, "--upstream-rate", "0.5", "--token-limit", "off", "--sweep-interval", "0" }
      local ok, err = pcall(function()
        local b = orrun.start { "--ledger", url, "--sim-url", a.sim_url, "--upstream-rate", "0.5", "--token-limit", "off",
          "--sweep-interval", "0" }
        local bok, berr = pcall(function()
          local ha, hb = {}, {}
          for i = 1, 6 do
            ha[i] = sp.spawn(a, "POST", "/eid/token", { user = "ta" .. i })
            hb[i] = sp.spawn(b, "POST", "/eid/token", { user = "tb" .. i })
          end
          local ra, rb = sp.wait_all(ha), sp.wait_all(hb)
          local oks = 0
          for _, r in ipairs(ra) do if r.status == 200 then oks = oks + 1 end end
          for _, r in ipairs(rb) do if r.status == 200 then oks = oks + 1 end end
          -- each alone would let one through: 2
          assert.equals(1, oks)
        end)
        orrun.stop(b)
        assert(bok, berr)
      end)
      orrun.stop(a)
      assert(ok, err)
    end)

    it("finish a token issued on the other: one ledger, one outcome", function()
      local url = srv:url(0, "two-b:")
      local a = orrun.start { "--ledger", url, "--sweep-interval", "0" }
      local ok, err = pcall(function()
        local b = orrun.start { "--ledger", url, "--sim-url", a.sim_url, "--sweep-interval", "0" }
        local bok, berr = pcall(function()
          local tok = sp.token(a, "cross")
          local r = sp.request(b, "POST", "/eid/result", { user = "cross", body = { EidToken = tok } })
          assert.same({ 200, "pending" }, { r.status, r.json.status })
          sp.sim_finish(a, tok, 0)
          r = sp.request(b, "POST", "/eid/result", { user = "cross", body = { EidToken = tok } })
          assert.same({ 200, "passed", "passed" }, { r.status, r.json.status, r.json.reason })
          -- replayed on the first: the same outcome; another user: refused on both
          r = sp.request(a, "POST", "/eid/result", { user = "cross", body = { EidToken = tok } })
          assert.same({ 200, "passed", "passed" }, { r.status, r.json.status, r.json.reason })
          for _, s in ipairs { a, b } do
            r = sp.request(s, "POST", "/eid/result", { user = "other", body = { EidToken = tok } })
            assert.same({ 403, "wrong_subject" }, { r.status, r.json.error.code })
          end
        end)
        orrun.stop(b)
        assert(bok, berr)
      end)
      orrun.stop(a)
      assert(ok, err)
    end)
  end)

  it("answers 503 while Redis is down, and recovers with nothing lost once it is back", function()
    local srv = redis.start()
    local s = orrun.start { "--ledger", srv:url(0, "restart:"), "--sweep-interval", "0" }
    local ok, err = pcall(function()
      local tok = sp.token(s, "rr")
      local done = sp.token(s, "rr2")
      sp.sim_finish(s, done, 0)
      srv:stop()
      for _, c in ipairs {
        { "POST", "/eid/token", { user = "rr" } },
        { "POST", "/eid/result", { user = "rr", body = { EidToken = tok } } },
      } do
        local r = sp.request(s, c[1], c[2], c[3])
        assert.equals(503, r.status, c[2] .. ": " .. r.body)
        assert.equals("unavailable", r.json.error.code)
        assert.equals("application/json", r.headers["content-type"])
      end
      assert(srv:launch())
      -- back within a few seconds (a pooled connection to the old server may fail once)
      local r
      for _ = 1, 50 do
        r = sp.request(s, "POST", "/eid/result", { user = "rr", body = { EidToken = tok } })
        if r.status == 200 then break end
        assert.equals(503, r.status, r.body)
        core.sleep(0.1)
      end
      assert.same({ 200, "pending" }, { r.status, r.json.status })
      -- the token issued (and the user's pass) before the restart are all there
      r = sp.request(s, "POST", "/eid/result", { user = "rr2", body = { EidToken = done } })
      assert.same({ 200, "passed" }, { r.status, r.json.status })
      assert.equals(200, sp.request(s, "POST", "/eid/token", { user = "rr3" }).status)
    end)
    orrun.stop(s)
    srv:destroy()
    assert(ok, err)
  end)

  it("runs the sweep on one worker at a time, and it records results the front end never asked for", function()
    local s = orrun.start { "--workers", "2", "--sweep-interval", "0.5" }
    local ok, err = pcall(function()
      local t0 = core.monotonic()
      local tok = sp.token(s, "swept")
      sp.sim_finish(s, tok, 0)
      core.sleep(3.2)
      local runs = metric(s, "eidkit_sweep_runs_total")
      local took = core.monotonic() - t0
      -- each worker's timer fires every 0.5 s: without the lock, about twice as many
      assert.is_true(runs >= 3 and runs <= took / 0.45 + 1, ("%s runs in %.1f s"):format(tostring(runs), took))
      local log = orrun.error_log(s)
      assert.falsy(log:find("sweep failed", 1, true), log:sub(-2000))
      -- the sweep pulled the pass and settled it (GET /metrics reads the ledger's stats)
      assert.equals(0, metric(s, 'eidkit_ledger_tokens{state="issued"}'))
      assert.equals(1, metric(s, 'eidkit_ledger_tokens{state="consumed"}'))
      assert.equals(1, metric(s, "eidkit_ledger_up"))
      local r = sp.request(s, "POST", "/eid/result", { user = "swept", body = { EidToken = tok } })
      assert.same({ 200, "passed" }, { r.status, r.json.status })
    end)
    orrun.stop(s)
    assert(ok, err)
  end)

  it("a worker killed while it sweeps holds the sweep up only until its lock expires", function()
    -- GetEidResult takes 6 s, so the sweep of a due token is still running at the kill,
    -- and its lock (--sweep-max 6) outlives the kill, the new worker's start and the
    -- check below even on a loaded machine (2.5 s did not, once, under the full suite).
    local s = orrun.start { "--sweep-interval", "0.3", "--sweep-max", "6", "--sim-fault",
      "GetEidResult:latency:ms=6000" }
    local ok, err = pcall(function()
      sp.token(s, "dead")
      -- Sweeps that find nothing due end at once, and the count grows every 0.3 s (on a
      -- loaded machine some run before the token exists); once the sweep pulling the
      -- token holds the lock (its GetEidResult takes 6 s), the count stops for a second.
      local last, since = -1, core.monotonic()
      local runs0 = sp.wait_for(function()
        local n = metric(s, "eidkit_sweep_runs_total") or 0
        if n ~= last then
          last, since = n, core.monotonic()
          return nil
        end
        core.sleep(0.05)
        return n >= 1 and core.monotonic() - since >= 1 and n
      end, 15, "a sweep holding the lock")
      local worker = orrun.workers(s)[1]
      proc.sh("kill -KILL " .. worker)
      -- nginx starts another worker; its timer finds the dead one's lock, and waits
      sp.wait_for(function() return orrun.workers(s)[1] ~= worker and #orrun.workers(s) == 1 end, 10, "a new worker")
      core.sleep(0.6)
      assert.equals(runs0, metric(s, "eidkit_sweep_runs_total"), "a sweep ran while the dead worker's lock held")
      -- at most sweep_max after the dead one took it, the lock is gone and the sweep runs again
      sp.wait_for(function() return metric(s, "eidkit_sweep_runs_total") > runs0 end, 12, "the sweep to run again")
    end)
    orrun.stop(s)
    assert(ok, err)
  end)

  -- THE BLOCKING SPEC. One worker; the simulator adds 200 ms to every
  -- GetEidResult; 200 requests at once. A worker that waited for Tencent
  -- (or Redis) by blocking would answer them one after another: 40 s.
  it("answers 200 concurrent /eid/result, each waiting 200 ms upstream, in well under 1 s on one worker", function()
    local s = orrun.start { "--token-limit", "off", "--upstream-rate", "off", "--sweep-interval", "0",
      "--sim-fault", "GetEidResult:latency:ms=200", "--worker-connections", "2048" }
    local ok, err = pcall(function()
      local n = 200
      local reqs = {}
      for i = 1, n do reqs[i] = { path = "/eid/token", user = "blk" .. i } end
      local tokens, statuses = parallel(s, reqs)
      assert.equals(n, count(statuses, 200))
      reqs = {}
      for i = 1, n do reqs[i] = { path = "/eid/result", user = "blk" .. i, body = { EidToken = tokens[i].json.EidToken } } end
      -- a warm-up batch (JIT, the Redis scripts, the keepalive pool), then the one measured
      local _, wstatuses = parallel(s, reqs)
      assert.equals(n, count(wstatuses, 200))
      local out, rstatuses, took = parallel(s, reqs)
      assert.equals(n, count(rstatuses, 200))
      for i = 1, n do assert.equals("pending", out[i].json.status) end
      assert.is_true(took >= 0.2, "faster than the simulator's latency: " .. took)
      assert.is_true(took < 1.0, ("200 requests took %.2f s"):format(took))
    end)
    orrun.stop(s)
    assert(ok, err)
  end)
end)
