-- eidkit.testing: the merchant's testing kit (lua/eidkit/testing.lua).
local scratch = require "support.scratch"
local testing = require "eidkit.testing"
local core = require "eidkit.core"

local function alive(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if f then f:close() end
  return f ~= nil
end

describe("eidkit.testing", function()
  local sim, client

  setup(function()
    sim = testing.sim { seed = 7 }
    client = sim:client()
  end)
  teardown(function() sim:stop() end)

  local function new_token()
    local res = assert(client:get_eid_token { MerchantId = sim.merchant_id })
    return res.EidToken
  end

  describe("testing.sim", function()
    it("serves on a free loopback port with its own credentials and merchant", function()
      assert.matches("^http://127%.0%.0%.1:%d+$", sim.url)
      assert.equal(sim.url, "http://127.0.0.1:" .. sim.port)
      assert.matches("^AKID", sim.secret_id)
      assert.equal(32, #sim.secret_key)
      assert.same("ok", assert(sim:health()).Status)
      local out = sim:output()
      assert.matches("^listening on " .. sim.url:gsub("%p", "%%%0"), out)
      assert.is_nil(out:find(sim.secret_key, 1, true))
      assert.is_nil(out:find("demo credential", 1, true))
    end)

    it("runs two simulators at once, each with its own tokens", function()
      local other <close> = testing.sim {}
      assert.are_not.equal(sim.port, other.port)
      assert.are_not.equal(sim.secret_key, other.secret_key)
      local tok = new_token()
      local _, err = other:token(tok)
      assert.equal("NotFound", err.code)
      assert.equal(404, err.http_status)
      assert.equal("init", assert(sim:token(tok)).Status)
    end)

    it("stops the child, removes its files, and is idempotent", function()
      local s = testing.sim {}
      local pid, base = s.process:pid(), s.base
      assert.is_true(alive(pid))
      assert.same({ 0, "exit" }, { s:stop() })
      assert.same({ 0, "exit" }, { s:stop() })
      assert.is_false(alive(pid))
      assert.is_nil(io.open(base))
      assert.is_nil(io.open(base .. ".port"))
      assert.has_error(function() s:health() end, "eidkit.testing: the simulator was stopped")
      assert.equal("eidkit.testing sim (stopped)", tostring(s))
    end)

    it("stops on __close and on garbage collection", function()
      local pid
      do
        local s <close> = testing.sim {}
        pid = s.process:pid()
      end
      assert.is_false(alive(pid))
      pid = testing.sim({}).process:pid()
      collectgarbage()
      collectgarbage()
      assert.is_false(alive(pid))
    end)

    it("fails to start with a clear error and the simulator's stderr", function()
      local ok, err = pcall(testing.sim, { args = { "--token-ttl", "zero" } })
      assert.is_false(ok)
      assert.matches("eidkit.testing: the simulator %(.-%) did not start: it exited %(exit 2%):\n"
        .. "eidkit sim: %-%-token%-ttl: expected an integer >= 1, got 'zero'", err)
      local stuck = scratch.file() -- a program that never binds
      local f = assert(io.open(stuck, "wb"))
      f:write("#!/bin/sh\necho 'stuck starting' >&2\nexec sleep 30\n")
      f:close()
      assert(os.execute("chmod 700 " .. stuck))
      local t0 = core.monotonic()
      ok, err = pcall(testing.sim, { bin = stuck, start_timeout = 0.3 })
      os.remove(stuck)
      assert.is_false(ok)
      assert.matches("did not start: it did not bind within 0.3 s:\nstuck starting", err)
      assert.is_true(core.monotonic() - t0 < 3)
      ok, err = pcall(testing.sim, { bin = "/nonexistent/eidkit" })
      assert.is_false(ok)
      assert.matches("cannot start the simulator: cannot run '/nonexistent/eidkit': No such file "
        .. "or directory %(pass bin = ... or set EIDKIT_BIN", err)
    end)

    it("raises on misuse", function()
      assert.has_error(function() testing.sim { sede = 1 } end,
        "bad argument #1 to 'sim' (unknown option 'sede')")
      assert.has_error(function() testing.sim { token_ttl = 0 } end,
        "bad argument #1 to 'sim' (token_ttl: expected an integer >= 1)")
      assert.has_error(function() sim:fail(new_token()) end,
        "bad argument #2 to 'fail' (ErrCode: expected a non-zero integer such as 2016)")
      assert.has_error(function() sim:pass(42) end,
        "bad argument #1 to 'pass' (expected an EidToken string)")
    end)

    it("finds the eidkit program: bin, $EIDKIT_BIN, the running host, PATH", function()
      assert.equal("/x/eidkit", testing.find_bin("/x/eidkit"))
      local env = os.getenv("EIDKIT_BIN")
      if env and env ~= "" then
        assert.equal(env, testing.find_bin())
      elseif package.preload["eidkit.core"] then
        assert.equal(core.executable(), testing.find_bin())
      else
        assert.equal("eidkit", testing.find_bin())
      end
    end)
  end)

  describe("playing the user", function()
    it("pass: GetEidResult answers ErrCode 0", function()
      local tok = new_token()
      assert.equal("doing", assert(sim:start(tok)).Status)
      assert.equal("finished", assert(sim:pass(tok)).Status)
      local res = assert(client:get_eid_result { EidToken = tok, InfoType = "1" })
      assert.equal(0, math.tointeger(res.Text.ErrCode))
      local _, err = sim:pass(tok)
      assert.equal("AlreadyPassed", err.code)
      assert.equal(409, err.http_status)
    end)

    it("fail(2016), then a pass on the same token", function()
      local tok = new_token()
      assert(sim:fail(tok, 2016))
      local res = assert(client:get_eid_result { EidToken = tok, InfoType = "1" })
      assert.equal(2016, math.tointeger(res.Text.ErrCode))
      assert(sim:pass(tok))
      res = assert(client:get_eid_result { EidToken = tok, InfoType = "1" })
      assert.equal(0, math.tointeger(res.Text.ErrCode))
      assert.equal(2, #res.Text.LivenessDetail)
    end)

    it("finish: an attempt's ID-card warnings, and a flow state that is no attempt", function()
      local res = assert(client:get_eid_token { MerchantId = sim.merchant_id, Config = { InputType = "1" } })
      local tok = res.EidToken
      assert(sim:finish(tok, { ErrCode = 0, WarnInfos = { -9102 }, BackWarnInfos = {} }))
      local r = assert(client:get_eid_result { EidToken = tok, InfoType = "12" })
      assert.same({ -9102 }, r.IdCardData.WarnInfos)
      local t2 = new_token()
      assert(sim:fail(t2, 2016))
      assert(sim:fail(t2, 16)) -- retry limit: a flow state
      r = assert(client:get_eid_result { EidToken = t2, InfoType = "1" })
      assert.same({ 16, 1 }, { math.tointeger(r.Text.ErrCode), #r.Text.LivenessDetail })
      assert.has_error(function() sim:finish(tok, { WarnInfos = { "x" } }) end,
        "bad argument #2 to 'finish' (WarnInfos: expected ErrCode or IntentionErrCode, integers, "
        .. "or WarnInfos or BackWarnInfos, lists of integers)")
    end)

    it("intention: the attempt carries the IntentionErrCode", function()
      local res = assert(client:get_eid_token { MerchantId = sim.merchant_id,
        Config = { InputType = "4", UseIntentionVerify = true, IntentionMode = "1",
          IntentionVerifyText = "I agree" }, Name = "张三", IdCard = "11010519491231002X" })
      assert(sim:intention(res.EidToken, -12))
      local r = assert(client:get_eid_result { EidToken = res.EidToken })
      assert.is_true(r.IsVerifyIntention)
      assert.equal("2", r.IntentionVerifyType) -- read-aloud
      assert.equal(-12, math.tointeger(r.IntentionVerifyData.ErrorCode))
      assert.equal(0, math.tointeger(r.Text.ErrCode))
    end)

    it("abandon: past the lifetime, ErrCode 15 and status timeout", function()
      local tok = new_token()
      local before = sim:now()
      local s = assert(sim:abandon(tok))
      assert.equal("timeout", s.Status)
      assert.is_true(sim:now() > before + sim.token_ttl - 5)
      local res = assert(client:get_eid_result { EidToken = tok })
      assert.equal(15, math.tointeger(res.Text.ErrCode))
      local st = assert(client:check_eid_token_status { EidToken = tok })
      assert.equal("timeout", st.Status)
      local _, err = sim:pass(tok)
      assert.equal("TokenExpired", err.code)
    end)
  end)

  describe("time", function()
    it("freeze and advance move the simulator and the ledger together; the client follows", function()
      local ledger = sim:ledger()
      assert.equal(1700000000, sim:freeze(1700000000))
      assert.equal(1700000000, sim:now())
      core.sleep(1.1) -- the simulator's clock is frozen too: no second has passed for it
      local tok = new_token()
      local s = assert(sim:token(tok))
      assert.equal(1700000000, s.CreatedAt)
      assert(ledger:issue { EidToken = tok, MerchantId = sim.merchant_id, subject = "u1" })
      local rec = assert(ledger:get(tok))
      assert.equal(1700000000, rec.created_at)
      assert.equal(1700000000 + sim.token_ttl, rec.expires_at)

      assert.equal(1700086400, sim:advance(86400)) -- a day later
      assert.equal(1700086400, sim:now())
      assert.is_true(math.abs(assert(sim:health()).Now - 1700086400) <= 2)
      local sent = client:stats().requests
      local res = assert(client:get_eid_result { EidToken = tok })
      assert.equal(15, math.tointeger(res.Text.ErrCode)) -- the lifetime passed unfinished
      -- The kit set the client's skew: signed for the new time, one request.
      assert.equal(sent + 1, client:stats().requests)
      assert.is_true(math.abs(client:skew() - (1700086400 - os.time())) <= 2)
      -- A client made elsewhere adopts the clock from SignatureExpire: two requests.
      local other <close> = require("eidkit.client").new { endpoint = sim.url,
        secret_id = sim.secret_id, secret_key = sim.secret_key }
      assert(other:get_eid_result { EidToken = tok })
      assert.equal(2, other:stats().requests)
      assert.is_true(math.abs(other:skew() - (1700086400 - os.time())) <= 2)
      assert(ledger:expire())
      assert.equal("expired", assert(ledger:get(tok)).state)
      local fresh = new_token() -- GetEidToken signs on the adopted clock too
      assert(sim:pass(fresh))
      assert.equal(0, math.tointeger(assert(client:get_eid_result { EidToken = fresh }).Text.ErrCode))

      assert.equal(1700086400, sim:unfreeze())
      assert.equal("integer", math.type(sim:now()))
      assert.is_true(sim:now() - 1700086400 <= 2)
      local before = sim:now()
      assert.is_true(sim:advance(60) - before >= 60) -- running: Advance, not Now
      assert.is_true(math.abs(assert(sim:health()).Now - sim:now()) <= 1)
    end)

    it("testing.sim{now = ts} starts frozen", function()
      local s <close> = testing.sim { now = 1800000000, token_ttl = 600 }
      assert.equal(1800000000, s:now())
      local l = s:ledger()
      local c = s:client()
      local r = assert(c:get_eid_token { MerchantId = s.merchant_id })
      assert(l:issue { EidToken = r.EidToken, MerchantId = s.merchant_id, subject = "u" })
      assert.equal(1800000600, assert(l:get(r.EidToken)).expires_at)
    end)
  end)

  describe("sim:flow", function()
    it("builds eidkit.flow on the kit's client, ledger and merchant", function()
      local ledger = sim:ledger()
      local flow = sim:flow { ledger = ledger, policy = { info_type = "1" } }
      local started = assert(flow:start { subject = "user-1" })
      assert.equal("issued", assert(ledger:get(started.EidToken)).state)
      assert.equal(sim.merchant_id, ledger:get(started.EidToken).MerchantId)
      assert(sim:pass(started.EidToken))
      local outcome = assert(flow:finish { subject = "user-1", EidToken = started.EidToken })
      assert.same({ "passed", 0 }, { outcome.status, outcome.code })
      assert.has_error(function() sim:flow { polcy = {} } end)
    end)
  end)

  describe("faults", function()
    it("injects and clears per-action faults", function()
      local tok = new_token()
      assert(sim:pass(tok))
      local c = sim:client { retry = { max_attempts = 1 } }
      local rules = sim:faults { { Action = "GetEidResult", Kind = "throttle", First = 1 } }
      assert.equal(1, #rules)
      local _, err = c:get_eid_result { EidToken = tok }
      assert.equal("RequestLimitExceeded", err.code)
      assert(c:get_eid_result { EidToken = tok }) -- only the first call
      sim:faults { { Action = "GetEidResult", Kind = "throttle" } }
      assert.is_nil((c:get_eid_result { EidToken = tok }))
      assert.same({}, sim:clear_faults())
      assert(c:get_eid_result { EidToken = tok })
      assert.has_error(function() sim:faults { { Kind = "nope" } } end)
    end)
  end)
end)
