-- The proof that `eidkit serve` never lets a network wait hold up another
-- request. Each case first makes sure the slow request is really waiting
-- (the upstream has received it, or Redis holds the ledger's write), then
-- times a second request: a host that blocked on the first would answer
-- the second only after the wait, and these cases fail.
-- Real processes on loopback: `eidkit serve`, a separate `eidkit sim` as
-- Tencent (so a blocked host could not be rescued by an in-process
-- simulator), a redis-server.
local scratch = require "support.scratch"
local core = require "eidkit.core"
local cjson = require "cjson"
local sp = require "support.serveproc"
local simproc = require "support.simproc"
local redis = require "support.redis"
local sim_mod = require "eidkit.sim"

local demo = sim_mod.demo
local LATENCY = 1.5 -- seconds the upstream takes for the slow call

-- A policy for specs without --sim: the subject is the X-User header.
local function policy_file()
  local path = scratch.file()
  local f = assert(io.open(path, "w"))
  f:write([[return { authorize = function(req) return req.headers["x-user"] or false end }]])
  f:close()
  return path
end

-- The separate simulator's request count (each call of this counts too).
local function sim_requests(sim)
  local status, body = core.http_request("GET", sim.url .. "/sim/health", nil, 5)
  assert(status == 200)
  return math.tointeger(cjson.decode(body).Requests)
end

describe("eidkit serve never blocks on the network", function()
  describe("waiting on Tencent", function()
    local sim, s, policy, dir
    lazy_setup(function()
      sim = simproc.start { "--seed", "21" }
      policy = policy_file()
      dir = scratch.file()
      s = sp.start({ "--endpoint", sim.url, "--merchant-id", demo.MerchantId, "--policy", policy,
        "--ledger", "sqlite:" .. dir .. ".db", "--token-limit", "off", "--sweep-interval", "0" },
        { env = { TENCENTCLOUD_SECRET_ID = demo.SecretId, TENCENTCLOUD_SECRET_KEY = demo.SecretKey } })
    end)
    lazy_teardown(function()
      if s then sp.stop(s) end
      if sim then simproc.stop(sim) end
      os.remove(policy)
      for _, ext in ipairs { "", ".db", ".db-wal", ".db-shm" } do os.remove(dir .. ext) end
    end)

    local function passed_token(user)
      local r = sp.request(s, "POST", "/eid/token", { headers = { ["X-User"] = user } })
      assert.equals(200, r.status, r.body)
      sp.sim_finish(s, r.json.EidToken, 0, sim.url)
      return r.json.EidToken
    end

    local function result(user, tok)
      return { "POST", "/eid/result", { headers = { ["X-User"] = user }, body = { EidToken = tok } } }
    end

    it("answers a second request while the first waits 1.5 s on GetEidResult", function()
      local slow_tok, fast_tok = passed_token("alice"), passed_token("bob")
      sp.sim_faults(s, { { Action = "GetEidResult", Kind = "latency", Ms = LATENCY * 1000, First = 1 } }, sim.url)
      local before = sim_requests(sim)
      local t_slow = core.monotonic()
      local slow = sp.spawn(s, table.unpack(result("alice", slow_tok)))
      -- Wait until the simulator has the slow GetEidResult: each poll adds
      -- one request of its own; one more means the call arrived.
      local polls = 0
      sp.wait_for(function()
        polls = polls + 1
        return sim_requests(sim) > before + polls
      end, 10, "the slow GetEidResult to reach the simulator")
      local t0 = core.monotonic()
      local fast = sp.request(s, table.unpack(result("bob", fast_tok)))
      local fast_elapsed = core.monotonic() - t0
      local health = sp.request(s, "GET", "/healthz")
      local health_elapsed = core.monotonic() - t0
      assert.same({ 200, "passed" }, { fast.status, fast.json and fast.json.status })
      assert.equals(200, health.status)
      assert.is_true(not slow.done(), "the slow request should still be waiting")
      assert.is_true(fast_elapsed < LATENCY / 3, ("the second request took %.3f s"):format(fast_elapsed))
      assert.is_true(health_elapsed < LATENCY / 3, ("/healthz came after %.3f s"):format(health_elapsed))
      local r = sp.wait_all({ slow })[1]
      assert.same({ 200, "passed" }, { r.status, r.json.status })
      assert.is_true(core.monotonic() - t_slow >= LATENCY - 0.05)
    end)

    it("runs 20 slow requests at once: about one latency, not twenty", function()
      local toks = {}
      for i = 1, 20 do toks[i] = passed_token("user-" .. i) end
      sp.sim_faults(s, { { Action = "GetEidResult", Kind = "latency", Ms = LATENCY * 1000 } }, sim.url)
      local t0 = core.monotonic()
      local hs = {}
      for i = 1, 20 do hs[i] = sp.spawn(s, table.unpack(result("user-" .. i, toks[i]))) end
      local rs = sp.wait_all(hs, 60)
      local elapsed = core.monotonic() - t0
      for i = 1, 20 do assert.same({ 200, "passed" }, { rs[i].status, rs[i].json.status }) end
      assert.is_true(elapsed >= LATENCY - 0.05)
      -- Serially this would be 30 s; at once, one latency plus the spawning of 20 curls.
      assert.is_true(elapsed < LATENCY * 3, ("20 requests took %.3f s"):format(elapsed))
    end)
  end)

  describe("waiting on Redis", function()
    local srv, s
    lazy_setup(function()
      srv = redis.available and redis.start() or nil
      if srv then
        s = sp.start { "--sim", "--ledger", srv:url(0, "nb:"), "--token-limit", "off", "--sweep-interval", "0" }
      end
    end)
    lazy_teardown(function()
      if s then sp.stop(s) end
      if srv then srv:destroy() end
    end)

    local function blocked_clients()
      return tonumber(srv:cli("INFO", "clients"):match("blocked_clients:(%d+)")) or 0
    end

    it("answers other requests while Redis holds the ledger's write, then that one too", function()
      if not srv then pending("redis-server is not installed") return end
      local pause = 2.5
      -- Redis holds every write for 2.5 s; reads (the ledger's stats) go on.
      assert.matches("OK", srv:cli("CLIENT", "PAUSE", ("%d"):format(pause * 1000), "WRITE"))
      local t_slow = core.monotonic()
      local slow = sp.spawn(s, "POST", "/eid/token", { user = "carol" })
      -- Wait until the ledger's issue (a write) is parked inside Redis.
      sp.wait_for(function() return blocked_clients() >= 1 end, 5, "the ledger's write to reach Redis")
      local t0 = core.monotonic()
      local nope = sp.request(s, "GET", "/nope")
      local nope_elapsed = core.monotonic() - t0
      local health = sp.request(s, "GET", "/healthz") -- Redis reads, on another worker
      local health_elapsed = core.monotonic() - t0
      assert.equals(404, nope.status)
      assert.equals(200, health.status)
      assert.is_true(not slow.done(), "the token request should still be waiting on Redis")
      assert.is_true(nope_elapsed < pause / 3, ("GET /nope took %.3f s"):format(nope_elapsed))
      assert.is_true(health_elapsed < pause / 3, ("/healthz came after %.3f s"):format(health_elapsed))
      local r = sp.wait_all({ slow })[1]
      assert.equals(200, r.status, r.body)
      assert.is_string(r.json.EidToken)
      assert.is_true(core.monotonic() - t_slow >= pause - 0.6)
      -- and it is in the ledger
      local ledger = assert(require("eidkit.ledger").open(srv:url(0, "nb:")))
      assert.equals("carol", ledger:get(r.json.EidToken).subject)
      ledger:close()
    end)
  end)
end)
