-- eidkit.flow against a real `eidkit sim` and real ledgers (SQLite in a
-- temporary directory; the ledger-backed cases also on a redis-server):
-- every outcome class, token substitution, double finish, sweep, intention
-- modes, billing, policy overrides and failures, and redaction.
local flowenv = require "support.flowenv"
local redis = require "support.redis"
local flow_mod = require "eidkit.flow"
local core = require "eidkit.core"

local NAME, IDCARD, demo = flowenv.NAME, flowenv.IDCARD, flowenv.demo

describe("eidkit.flow", function()
  local env
  lazy_setup(function() env = flowenv.new { sim_args = { "--seed", "17" } } end)
  lazy_teardown(function() if env then env:close() end end)
  after_each(function() if env then env:clear_faults() end end)

  describe("new", function()
    it("raises on misuse, naming the option", function()
      local c = env:client()
      local l = env:ledger()
      local ok = { client = c, ledger = l, merchant_id = demo.MerchantId }
      local function with(k, v)
        local o = {}
        for key, x in pairs(ok) do o[key] = x end
        o[k] = v
        return function() flow_mod.new(o) end
      end
      assert.has_error(function() flow_mod.new() end, "bad argument #1 to 'flow' (expected a table of options)")
      assert.has_error(with("client", nil), "bad option 'client' (expected an eidkit.client)")
      assert.has_error(with("ledger", 5), "bad option 'ledger' (expected an eidkit ledger)")
      assert.has_error(with("merchant_id", ""), "bad option 'merchant_id' (expected a non-empty string)")
      assert.has_error(with("clok", 1), "bad option 'clok' (unknown option)")
      assert.has_error(with("policy", { classfy = function() end }),
        "bad option 'policy' (unknown policy key 'classfy')")
      assert.has_error(with("poll_interval", -1), "bad option 'poll_interval' (expected 0..60 seconds)")
      assert.is_table(flow_mod(ok)) -- callable as eidkit.flow{...}
    end)
  end)

  describe("start", function()
    it("gets a token and issues it in the ledger, bound to the subject", function()
      local f = env:flow()
      local st = env:start(f, "user-1", { Extra = "order-1" })
      assert.matches("^[%w%-]+$", st.EidToken)
      assert.equals(36, #st.EidToken)
      assert.matches("/sim/h5%?token=" .. st.EidToken:gsub("%-", "%%-"), st.Url)
      assert.is_string(st.RequestId)
      local rec = f.ledger:get(st.EidToken)
      assert.equals("issued", rec.state)
      assert.equals("user-1", rec.subject)
      assert.equals("order-1", rec.Extra)
      assert.equals(rec.expires_at, st.expires_at)
      assert.equals(1, f.counts.issue)
    end)

    it("raises on misuse, naming the argument", function()
      local f = env:flow()
      assert.has_error(function() f.flow:start() end, "bad argument #1 to 'start' (expected a table)")
      assert.has_error(function() f.flow:start { Name = "x" } end,
        "bad argument #1 to 'start' (subject: expected string, got nil)")
      assert.has_error(function() f.flow:start { subject = "a", IdCard = 5 } end,
        "bad argument #1 to 'start' (IdCard: expected string, got number)")
      assert.has_error(function() f.flow:start { subject = "a", Foo = 1 } end,
        "bad argument #1 to 'start' (Foo: unknown field)")
      assert.has_error(function() f.flow:start { subject = "a", Extra = ("x"):rep(1025) } end,
        "bad argument #1 to 'start' (Extra: expected at most 1024 bytes without control characters)")
      assert.equals(0, f.counts.issue)
    end)

    it("returns the API's error and issues nothing when GetEidToken fails", function()
      local f = env:flow()
      local res, err = f.flow:start { subject = "u", Name = NAME, IdCard = "bad id!", Config = { InputType = "4" } }
      env:capture(err)
      assert.is_nil(res)
      assert.equals("InvalidParameterValue", err.code)
      assert.equals("GetEidToken", err.action)
      assert.is_string(err.request_id)
      assert.equals(0, f.counts.issue)
      assert.equals("start_failed", f.events[1].event.event)
    end)
  end)

  -- Each case on each ledger backend.
  local backends = { "sqlite" }
  if redis.available then backends[2] = "redis" end
  for _, backend in ipairs(backends) do
    describe("finish (" .. backend .. " ledger)", function()
      local function flow(opts)
        opts = opts or {}
        opts.backend = backend
        return env:flow(opts)
      end

      it("is pending before the user finishes, and consumes nothing", function()
        local f = flow()
        local st = env:start(f, "u-p")
        local o = assert(f.flow:finish { subject = "u-p", EidToken = st.EidToken })
        assert.same({ status = "pending", reason = "no_result", retry_with_new_token = false,
          billable = false, charges = 0, attempts = 0, EidToken = st.EidToken,
          request_id = o.request_id }, o)
        assert.equals(0, f.counts.consume)
        assert.equals("issued", f.ledger:get(st.EidToken).state)
        -- then the user finishes: passed
        env:finish_user(st.EidToken, { ErrCode = 0 })
        o = assert(f.flow:finish { subject = "u-p", EidToken = st.EidToken })
        assert.equals("passed", o.status)
        assert.equals(1, f.counts.consume)
      end)

      -- obj with own's fields in front; the rest of obj's methods called on
      -- obj, and the names in `hidden` absent.
      local function forward(obj, own, hidden)
        return setmetatable(own, { __index = function(_, k)
          if hidden and hidden[k] then return nil end
          local v = obj[k]
          if type(v) ~= "function" then return v end
          return function(_, ...) return v(obj, ...) end
        end })
      end

      it("records the text a Response was decoded from, when the client keeps it", function()
        -- As eidkit.openresty.client does: response_text(res) names the
        -- body behind a Response it returned. The ledger must be handed that
        -- text (here one that says more than the table: two attempts).
        local asked = {}
        local keeping = forward(env:client(), {
          response_text = function(_, res)
            asked[#asked + 1] = res
            return ('{"Response":{"Text":{"LivenessDetail":[{"Seq":"1","IsNeedCharge":false},'
              .. '{"Seq":"2","IsNeedCharge":true}]},"RequestId":"%s"}}'):format(res.RequestId)
          end,
        })
        local f = flow { client = keeping }
        local st = env:start(f, "u-t")
        local o = assert(f.flow:finish { subject = "u-t", EidToken = st.EidToken })
        assert.equals("pending", o.status)
        assert.equals(1, #asked)
        assert.equals(o.request_id, asked[1].RequestId)
        local rec = f.ledger:get(st.EidToken)
        assert.equals(2, rec.attempts)
        assert.equals(1, rec.billable)
        assert.same({ o.request_id }, rec.request_ids)
      end)

      it("gives a ledger that does not say it takes text (a merchant's own) the table", function()
        local keeping = forward(env:client(), { response_text = function() return '{"RequestId":"from-text"}' end })
        local real = env:ledger(backend)
        local seen = {}
        local own = forward(real, { record = function(_, tok, res)
          seen[#seen + 1] = type(res)
          return real:record(tok, res)
        end }, { record_text = true })
        local f = flow { client = keeping, ledger = own }
        local st = env:start(f, "u-o")
        local o = assert(f.flow:finish { subject = "u-o", EidToken = st.EidToken })
        assert.equals("pending", o.status)
        assert.same({ "table" }, seen)
        assert.same({ o.request_id }, real:get(st.EidToken).request_ids)
      end)

      it("passes, bills, and consumes exactly once; a second finish returns the same outcome", function()
        local calls = 0
        local f = flow { policy = { on_outcome = function() calls = calls + 1 end } }
        local st = env:start(f, "u-ok")
        env:finish_user(st.EidToken, { ErrCode = 0 })
        local o1 = assert(f.flow:finish { subject = "u-ok", EidToken = st.EidToken })
        assert.same({ status = "passed", code = 0, reason = "passed", retry_with_new_token = false,
          billable = true, charges = 1, attempts = 1, EidToken = st.EidToken,
          request_id = o1.request_id }, o1)
        local o2 = assert(f.flow:finish { subject = "u-ok", EidToken = st.EidToken })
        assert.same(o1, o2)
        assert.equals(1, f.counts.consume)
        assert.equals(1, calls)
        local rec = f.ledger:get(st.EidToken)
        assert.equals("consumed", rec.state)
        assert.equals(0, rec.ErrCode)
        assert.equals(1, rec.billable)
        -- Another flow (another process: no memory of the first) on the same
        -- ledger: the same outcome, rebuilt from the ledger, no consume.
        local g = flow { ledger = f.ledger, policy = { on_outcome = function() calls = calls + 1 end } }
        local o3 = assert(g.flow:finish { subject = "u-ok", EidToken = st.EidToken })
        o3.request_id = o1.request_id -- a fresh pull has its own RequestId
        assert.same(o1, o3)
        assert.equals(0, g.counts.consume)
        assert.equals(1, calls)
        assert.equals("consumed", f.ledger:get(st.EidToken).state)
      end)

      it("replays a settled outcome from the ledger's stored payload without calling Tencent", function()
        local ledger = env:ledger(backend, { payload_key_hex = ("ab"):rep(32), keep_payloads = true })
        local f = flow { ledger = ledger, policy = { keep_result = true } }
        local st = env:start(f, "u-pay")
        env:finish_user(st.EidToken, { ErrCode = 1001 })
        env:finish_user(st.EidToken, { ErrCode = 2016 })
        local o1 = assert(f.flow:finish { subject = "u-pay", EidToken = st.EidToken })
        assert.is_true(ledger:get(st.EidToken).has_payload)
        -- The user retries on the same token after the verdict was consumed:
        -- the settled outcome must not change.
        env:finish_user(st.EidToken, { ErrCode = 0 })
        env:faults { { Action = "GetEidResult", Kind = "error", Code = "InternalError" } }
        local g = flow { ledger = ledger, policy = { keep_result = true } }
        local o2 = assert(g.flow:finish { subject = "u-pay", EidToken = st.EidToken })
        assert.same(o1, o2)
        assert.same({ "failed", 2016, 1, 2 }, { o2.status, o2.code, o2.charges, o2.attempts })
        -- Without a payload the result is pulled again and cut back to the
        -- settled verdict.
        env:clear_faults()
        local plain = env:ledger(backend)
        local k = flow { ledger = plain }
        local st2 = env:start(k, "u-nopay")
        env:finish_user(st2.EidToken, { ErrCode = 2016 })
        local p1 = assert(k.flow:finish { subject = "u-nopay", EidToken = st2.EidToken })
        env:finish_user(st2.EidToken, { ErrCode = 0 })
        local p2 = assert(flow({ ledger = plain }).flow:finish { subject = "u-nopay", EidToken = st2.EidToken })
        p2.request_id = p1.request_id
        assert.same(p1, p2)
      end)

      it("refuses another subject's token and a token this merchant never issued", function()
        local f = flow()
        local st = env:start(f, "alice")
        env:finish_user(st.EidToken, { ErrCode = 0 })
        local res, err = f.flow:finish { subject = "mallory", EidToken = st.EidToken }
        env:capture(err)
        assert.is_nil(res)
        assert.equals("wrong_subject", err.code)
        assert.is_false(err.retryable)
        local rec = f.ledger:get(st.EidToken)
        assert.equals("issued", rec.state) -- nothing pulled, nothing recorded
        assert.equals(0, rec.pulls)
        -- A real token, minted by the same account but never issued through the flow.
        local other = assert(env.client0:get_eid_token { MerchantId = demo.MerchantId })
        env:finish_user(other.EidToken, { ErrCode = 0 })
        res, err = f.flow:finish { subject = "mallory", EidToken = other.EidToken }
        assert.is_nil(res)
        assert.equals("unknown_token", err.code)
        -- Garbage from a redirect's query string.
        for _, junk in ipairs { "../../etc/passwd", "a\0b", ("A"):rep(129), "" } do
          res, err = f.flow:finish { subject = "mallory", EidToken = junk }
          assert.is_nil(res)
          assert.equals("unknown_token", err.code)
        end
        assert.equals(0, f.counts.consume)
        assert.equals(0, f.counts.record)
        -- The owner still can.
        assert.equals("passed", f.flow:finish { subject = "alice", EidToken = st.EidToken }.status)
        assert.has_error(function() f.flow:finish { subject = "alice", EidToken = 5 } end,
          "bad argument #1 to 'finish' (EidToken: expected string, got number)")
        assert.has_error(function() f.flow:finish { EidToken = st.EidToken } end,
          "bad argument #1 to 'finish' (subject: expected string, got nil)")
      end)

      describe("the claim cache", function()
        it("finishes a token this flow issued without the ledger's claim, by the ledger's own rule", function()
          local f = flow()
          local st = env:start(f, "u-c")
          for _ = 1, 2 do
            assert.equals("pending", assert(f.flow:finish { subject = "u-c", EidToken = st.EidToken }).status)
          end
          assert.same({ 0, 2 }, { f.counts.claim, f.counts.record })
          -- Another subject: refused from the cache, with what the ledger's claim answers.
          local res, err = f.flow:finish { subject = "mallory", EidToken = st.EidToken }
          env:capture(err)
          assert.is_nil(res)
          local g = flow { ledger = f.ledger, claim_cache = 0 }
          local _, gerr = g.flow:finish { subject = "mallory", EidToken = st.EidToken }
          assert.same({ gerr.code, gerr.message, gerr.retryable }, { err.code, err.message, err.retryable })
          assert.equals("wrong_subject", err.code)
          assert.same({ 0, 1 }, { f.counts.claim, g.counts.claim })
          assert.equals(2, f.counts.record) -- nothing pulled for mallory
          -- claim_cache = 0: every finish asks the ledger.
          assert.equals("pending", assert(g.flow:finish { subject = "u-c", EidToken = st.EidToken }).status)
          assert.equals(2, g.counts.claim)
          assert.has_error(function() flow { claim_cache = -1 } end,
            "bad option 'claim_cache' (expected a non-negative integer)")
        end)

        it("replays what another process settled meanwhile, as the ledger's claim would have led to", function()
          local calls = 0
          local function counted() calls = calls + 1 end
          local f = flow { policy = { on_outcome = counted } }
          local st = env:start(f, "u-x") -- f holds the binding
          assert.equals("pending", assert(f.flow:finish { subject = "u-x", EidToken = st.EidToken }).status)
          env:finish_user(st.EidToken, { ErrCode = 0 })
          local g = flow { ledger = f.ledger, policy = { on_outcome = counted } } -- another node
          local o1 = assert(g.flow:finish { subject = "u-x", EidToken = st.EidToken })
          assert.equals("passed", o1.status)
          local o2 = assert(f.flow:finish { subject = "u-x", EidToken = st.EidToken })
          -- The binding is gone: the next finish is the memo's.
          assert.same(o2, assert(f.flow:finish { subject = "u-x", EidToken = st.EidToken }))
          o2.request_id = o1.request_id -- its own pull's RequestId
          assert.same(o1, o2)
          assert.same({ 0, 0, 1, 1 }, { f.counts.claim, f.counts.consume, g.counts.consume, calls })
          local rec = f.ledger:get(st.EidToken)
          assert.same({ "consumed", 0, 1 }, { rec.state, rec.ErrCode, rec.billable })
        end)

        it("asks the ledger near the token's expiry, and always with a ledger that has no now()", function()
          local offset = 0
          local ledger = env:ledger(backend, { clock = function() return os.time() + offset end })
          local f = flow { ledger = ledger }
          local st = env:start(f, "u-n")
          offset = st.expires_at - os.time() - 30 -- within the last minute: the ledger decides
          assert.equals("pending", assert(f.flow:finish { subject = "u-n", EidToken = st.EidToken }).status)
          assert.equals(1, f.counts.claim)
          offset = st.expires_at - os.time() + 1 -- past it: the ledger says expired, as without a cache
          local o = assert(f.flow:finish { subject = "u-n", EidToken = st.EidToken })
          assert.same({ "expired", "token_expired" }, { o.status, o.reason })
          -- A ledger without now(): no cache.
          local real = env:ledger(backend)
          local bare = setmetatable({}, { __index = function(_, k)
            if k == "now" then return nil end
            return function(_, ...) return real[k](real, ...) end
          end })
          local h = flow { ledger = bare }
          local st2 = env:start(h, "u-b")
          assert.equals("pending", assert(h.flow:finish { subject = "u-b", EidToken = st2.EidToken }).status)
          assert.equals(1, h.counts.claim)
        end)
      end)

      it("ends expired when the token's lifetime passes unfinished (ErrCode 15), once", function()
        local calls = 0
        local f = flow { policy = { on_outcome = function(o) calls = calls + 1; assert.equals("expired", o.status) end } }
        local st = env:start(f, "u-exp")
        env:advance(7201)
        local o1, err = f.flow:finish { subject = "u-exp", EidToken = st.EidToken }
        env:advance(-7201)
        assert.is_nil(err)
        assert.same({ status = "expired", code = 15, reason = "token_expired", retry_with_new_token = true,
          billable = false, charges = 0, attempts = 0, EidToken = st.EidToken, request_id = o1.request_id }, o1)
        local rec = f.ledger:get(st.EidToken) -- Tencent's verdict, closed once
        assert.same({ "consumed", 15 }, { rec.state, rec.ErrCode })
        local o2 = assert(f.flow:finish { subject = "u-exp", EidToken = st.EidToken })
        assert.same(o1, o2)
        local g = flow { ledger = f.ledger }
        local o3 = assert(g.flow:finish { subject = "u-exp", EidToken = st.EidToken })
        assert.equals("expired", o3.status)
        assert.equals(15, o3.code)
        assert.equals(1, calls)
        assert.equals(1, f.counts.consume + g.counts.consume)
      end)

      it("ends expired after the result window (BizTokenExpired)", function()
        local f = flow()
        local st = env:start(f, "u-old")
        env:advance(3 * 86400 + 1)
        local o = f.flow:finish { subject = "u-old", EidToken = st.EidToken }
        env:advance(-(3 * 86400 + 1))
        assert.equals("expired", o.status)
        assert.equals(15, o.code)
        assert.equals("consumed", f.ledger:get(st.EidToken).state)
      end)

      it("settles an expiry the sweep recorded first: on_outcome once, from finish", function()
        local calls = 0
        local offset = 0
        local ledger = env:ledger(backend, { clock = function() return os.time() + offset end })
        local f = flow { ledger = ledger, policy = { on_outcome = function() calls = calls + 1 end } }
        local st = env:start(f, "u-swept")
        env:advance(7201)
        offset = 7201
        assert.same({ 1, 1 }, { select(2, f.flow:sweep()).expired, calls }) -- expire, last pull (15), settle
        assert.same({ "consumed", 15 }, { ledger:get(st.EidToken).state, ledger:get(st.EidToken).ErrCode })
        local o = assert(f.flow:finish { subject = "u-swept", EidToken = st.EidToken })
        env:advance(-7201)
        assert.same({ "expired", 15 }, { o.status, o.code })
        assert.equals(1, calls)
        assert.equals(1, f.counts.consume)
      end)

      it("pulls once past the ledger's lifetime: a late pass lands, no verdict is expired", function()
        local offset = 0
        local ledger = env:ledger(backend, { clock = function() return os.time() + offset end })
        local f = flow { ledger = ledger }
        local late = env:start(f, "u-late")
        local never = env:start(f, "u-never")
        env:finish_user(late.EidToken, { ErrCode = 0 })
        offset = 7300
        local o = assert(f.flow:finish { subject = "u-late", EidToken = late.EidToken })
        assert.equals("passed", o.status)
        assert.equals("consumed", ledger:get(late.EidToken).state)
        o = assert(f.flow:finish { subject = "u-never", EidToken = never.EidToken })
        assert.equals("expired", o.status)
        assert.equals("token_expired", o.reason)
        assert.is_nil(o.code)
        assert.equals(1, f.counts.consume)
      end)

      it("sweeps tokens the front end never reported and leaves settled ones alone", function()
        local reported = {}
        local f = flow { policy = { on_outcome = function(o) reported[#reported + 1] = o.EidToken end } }
        local t = {}
        for i = 1, 4 do t[i] = env:start(f, "s-" .. i).EidToken end
        env:finish_user(t[1], { ErrCode = 0 })
        env:finish_user(t[2], { ErrCode = 2016 })
        env:finish_user(t[4], { ErrCode = 0 })
        assert.equals("passed", f.flow:finish { subject = "s-1", EidToken = t[1] }.status)
        local pulls1 = f.ledger:get(t[1]).pulls
        local n, report = f.flow:sweep { limit = 10 }
        assert.equals(3, n)
        assert.equals(3, report.due)
        assert.equals("failed", f.ledger:get(t[2]).state)
        assert.equals(2016, f.ledger:get(t[2]).ErrCode)
        assert.equals("issued", f.ledger:get(t[3]).state)
        -- A pass cannot change: the sweep settles it (once) and reports it;
        -- the failure may still turn into a pass, so it waits for finish.
        assert.equals("consumed", f.ledger:get(t[4]).state)
        assert.equals(1, report.settled)
        assert.same({ t[1], t[4] }, reported)
        assert.equals(pulls1, f.ledger:get(t[1]).pulls)
        assert.equals(2, f.counts.consume)
        -- A pass is final, so the next sweep pulls 2 (may retry) and 3 only.
        n, report = f.flow:sweep()
        assert.equals(2, n)
        assert.equals(2, report.due)
        assert.equals(1, f.ledger:get(t[4]).pulls)
        assert.equals(pulls1, f.ledger:get(t[1]).pulls)
        -- The front end reports late: finish settles from what is there.
        local o = assert(f.flow:finish { subject = "s-2", EidToken = t[2] })
        assert.equals("failed", o.status)
        assert.equals("identity_rejected", o.reason)
        o = assert(f.flow:finish { subject = "s-4", EidToken = t[4] }) -- replayed, not reported again
        assert.equals("passed", o.status)
        assert.same({ t[1], t[4], t[2] }, reported)
        assert.has_error(function() f.flow:sweep { limit = 0 } end,
          "bad argument #1 to 'sweep' (limit: expected an integer 1..100000)")
      end)
    end)
  end

  describe("classification through the simulator", function()
    -- {ErrCode, status, reason, retry_with_new_token, billable}
    local cases = {
      { 0, "passed", "passed", false, true },
      { 2006, "failed", "identity_rejected", false, true },
      { 2016, "failed", "identity_rejected", false, true },
      { 301, "failed", "identity_rejected", false, false },
      { 302, "failed", "identity_rejected", false, false },
      { 2005, "failed", "identity_rejected", false, false },
      { 2007, "failed", "identity_rejected", false, false },
      { 2008, "failed", "identity_rejected", false, false },
      { 2009, "failed", "identity_rejected", false, false },
      { 1001, "failed", "user_retry", true, false },
      { 2001, "failed", "user_retry", true, false },
      { 4, "failed", "user_retry", true, false },
      { 8, "failed", "user_retry", true, false },
      { 10, "failed", "user_retry", true, false },
      { 12, "failed", "user_retry", true, false },
      { 13, "failed", "user_retry", true, false },
      { 1008, "failed", "user_retry", true, false },
      { 201, "failed", "user_retry", true, false },
      { 202, "failed", "user_retry", true, false },
      { 303, "failed", "user_retry", true, false },
      { 15, "expired", "token_expired", true, false },
      { 16, "failed", "retry_limit", false, false },
      { 17, "pending", "unfinished", false, false },
      { 1, "failed", "merchant_config", false, false },
      { 2, "failed", "merchant_config", false, false },
      { 3, "failed", "merchant_config", false, false },
      { 203, "failed", "merchant_config", false, false },
      { 204, "failed", "merchant_config", false, false },
      { 1002, "failed", "liveness_rejected", false, false },
      { 2017, "pending", "service_retry", false, false },
      { 14, "pending", "completed", false, false },
      { 9999, "failed", "unclassified", false, false },
    }
    it("maps every code group from Text.ErrCode and consumes only final verdicts", function()
      local calls = {}
      local f = env:flow { policy = { on_outcome = function(o) calls[o.EidToken] = (calls[o.EidToken] or 0) + 1 end } }
      for i, c in ipairs(cases) do
        local subject = "c-" .. i
        local st = env:start(f, subject)
        env:finish_user(st.EidToken, { ErrCode = c[1] })
        local o, err = f.flow:finish { subject = subject, EidToken = st.EidToken }
        assert(o, tostring(err))
        local want = { code = c[1], status = c[2], reason = c[3], retry_with_new_token = c[4], billable = c[5] }
        assert.same(want, { code = o.code, status = o.status, reason = o.reason,
          retry_with_new_token = o.retry_with_new_token, billable = o.billable }, "ErrCode " .. c[1])
        local state = f.ledger:get(st.EidToken).state
        -- Tencent's expiry (15) is a verdict too: closed once like the others.
        local final = c[2] == "passed" or c[2] == "failed" or c[2] == "expired"
        assert.equals(final and "consumed" or "issued", state,
          "ErrCode " .. c[1])
        assert.equals(c[2] ~= "pending" and 1 or nil, calls[st.EidToken], "on_outcome, ErrCode " .. c[1])
        -- twice: the same outcome, nothing more
        local again = assert(f.flow:finish { subject = subject, EidToken = st.EidToken })
        if c[2] ~= "pending" then assert.same(o, again) end
        assert.equals(c[2] ~= "pending" and 1 or nil, calls[st.EidToken])
      end
    end)

    it("counts billable attempts from LivenessDetail[].IsNeedCharge", function()
      local f = env:flow()
      local function run(subject, codes)
        local st = env:start(f, subject)
        for _, c in ipairs(codes) do env:finish_user(st.EidToken, { ErrCode = c }) end
        return assert(f.flow:finish { subject = subject, EidToken = st.EidToken })
      end
      local o = run("b-1", { 2016, 2006 })
      assert.same({ "failed", 2006, true, 2, 2 }, { o.status, o.code, o.billable, o.charges, o.attempts })
      o = run("b-2", { 1001, 1008, 0 })
      assert.same({ "passed", 0, true, 1, 3 }, { o.status, o.code, o.billable, o.charges, o.attempts })
      o = run("b-3", { 1001 })
      assert.same({ "failed", false, 0, 1 }, { o.status, o.billable, o.charges, o.attempts })
    end)
  end)

  describe("intention modes", function()
    local modes = {
      { mode = "1", type = "2", name = "read_aloud", config = { IntentionVerifyText = "本人自愿办理" } },
      { mode = "2", type = "0", name = "qa", config = { IntentionQuestions = { { Question = "是否本人办理？", Answers = { "是" } } } } },
      { mode = "3", type = "1", name = "nod", config = { IntentionActions = { { Text = "请点头确认" } } } },
    }
    for _, m in ipairs(modes) do
      it("needs both the identity and the " .. m.name .. " intention result to pass", function()
        local f = env:flow()
        local function run(subject, body)
          local config = { InputType = "4", UseIntentionVerify = true, IntentionMode = m.mode }
          for k, v in pairs(m.config) do config[k] = v end
          local st = env:start(f, subject, { Config = config })
          env:finish_user(st.EidToken, body)
          return assert(f.flow:finish { subject = subject, EidToken = st.EidToken })
        end
        local o = run("i-ok-" .. m.mode, { ErrCode = 0, IntentionErrCode = 0 })
        assert.equals("passed", o.status)
        assert.equals(m.type, o.intention.type)
        assert.equals(m.name, o.intention.mode)
        assert.is_true(o.intention.passed)
        o = run("i-no-" .. m.mode, { ErrCode = 0, IntentionErrCode = -12 })
        assert.same({ "failed", "intention_failed", 0, false }, { o.status, o.reason, o.code, o.intention.passed })
        o = run("i-id-" .. m.mode, { ErrCode = 2016 })
        assert.same({ "failed", "identity_rejected" }, { o.status, o.reason })
      end)
    end

    it("is pending, not passed, when the policy's InfoType leaves the intention result out", function()
      local f = env:flow { policy = { info_type = "1" } }
      local st = env:start(f, "i-missing", { Config = { InputType = "4", UseIntentionVerify = true,
        IntentionVerifyText = "本人自愿办理" } })
      env:finish_user(st.EidToken, { ErrCode = 0 })
      local o = assert(f.flow:finish { subject = "i-missing", EidToken = st.EidToken })
      assert.same({ "pending", "intention_missing" }, { o.status, o.reason })
      assert.equals(0, f.counts.consume)
    end)
  end)

  describe("policy hooks", function()
    it("classify can change the verdict, and keep_result hands out the Response", function()
      local seen
      local f = env:flow { policy = {
        keep_result = true,
        classify = function(result, outcome)
          seen = outcome.status
          if result.Text.Extra == "blocked-order" then
            outcome.status, outcome.reason = "failed", "merchant_blocklist"
          end
          return outcome
        end } }
      local st = env:start(f, "p-1", { Extra = "blocked-order" })
      env:finish_user(st.EidToken, { ErrCode = 0 })
      local o = assert(f.flow:finish { subject = "p-1", EidToken = st.EidToken })
      assert.equals("passed", seen)
      assert.same({ "failed", "merchant_blocklist" }, { o.status, o.reason })
      assert.equals(0, o.result.Text.ErrCode)
      assert.equals("consumed", f.ledger:get(st.EidToken).state)
    end)

    it("info_type decides what GetEidResult returns", function()
      local asked
      local f = env:flow { policy = { keep_result = true,
        info_type = function(req) asked = req.subject; return "12" end } }
      local st = env:start(f, "p-it", { Config = { InputType = "1" } })
      env:finish_user(st.EidToken, { ErrCode = 0 })
      local o = assert(f.flow:finish { subject = "p-it", EidToken = st.EidToken })
      assert.equals("p-it", asked)
      assert.is_string(o.result.IdCardData.OcrFront)
      -- the default ("156") asks for no images
      local g = env:flow { policy = { keep_result = true } }
      st = env:start(g, "p-it2", { Config = { InputType = "1" } })
      env:finish_user(st.EidToken, { ErrCode = 0 })
      o = assert(g.flow:finish { subject = "p-it2", EidToken = st.EidToken })
      assert.not_table(o.result.IdCardData)
      assert.not_table(o.result.BestFrame)
      assert.is_table(o.result.Text)
    end)

    it("a raising on_outcome fails that call with code 'policy'; nothing is lost or consumed twice", function()
      local calls = 0
      local P = { on_outcome = function() calls = calls + 1; error("audit database down") end }
      local f = env:flow { policy = P }
      local st = env:start(f, "p-raise")
      env:finish_user(st.EidToken, { ErrCode = 0 })
      local res, err = f.flow:finish { subject = "p-raise", EidToken = st.EidToken }
      env:capture(err)
      assert.is_nil(res)
      assert.equals("policy", err.code)
      assert.equals("on_outcome", err.hook)
      assert.matches("policy hook 'on_outcome' raised: .*audit database down", err.message)
      assert.matches("^policy: policy hook 'on_outcome'", tostring(err))
      assert.equals("consumed", f.ledger:get(st.EidToken).state)
      local o = assert(f.flow:finish { subject = "p-raise", EidToken = st.EidToken })
      assert.equals("passed", o.status)
      -- and from a flow with no memory of it
      local g = env:flow { ledger = f.ledger, policy = P }
      assert.equals("passed", assert(g.flow:finish { subject = "p-raise", EidToken = st.EidToken }).status)
      assert.equals(1, f.counts.consume)
      assert.equals(0, g.counts.consume)
      assert.equals(1, calls)
    end)

    it("a classify that fails (raise, or nil plus a sandbox error) consumes nothing", function()
      local mode = "raise"
      local f = env:flow { policy = { classify = function(_, o)
        if mode == "raise" then error({ code = "x", message = "bad rule" }) end
        if mode == "sandbox" then return nil, { code = "instructions", message = "instruction budget exhausted" } end
        if mode == "junk" then return { status = "maybe" } end
        return o
      end } }
      local st = env:start(f, "p-cls")
      env:finish_user(st.EidToken, { ErrCode = 0 })
      local res, err = f.flow:finish { subject = "p-cls", EidToken = st.EidToken }
      assert.is_nil(res)
      assert.same({ "policy", "classify" }, { err.code, err.hook })
      assert.matches("bad rule", err.message)
      mode = "sandbox"
      res, err = f.flow:finish { subject = "p-cls", EidToken = st.EidToken }
      assert.is_nil(res)
      assert.same({ "policy", "classify", "instructions" }, { err.code, err.hook, err.cause })
      assert.equals("policy hook 'classify' failed: instruction budget exhausted", err.message)
      mode = "junk"
      res, err = f.flow:finish { subject = "p-cls", EidToken = st.EidToken }
      assert.is_nil(res)
      assert.equals("classify", err.hook)
      assert.equals(0, f.counts.consume)
      assert.equals("passed", f.ledger:get(st.EidToken).state) -- recorded, not consumed
      mode = "ok"
      assert.equals("passed", f.flow:finish { subject = "p-cls", EidToken = st.EidToken }.status)
      assert.equals(1, f.counts.consume)
    end)

    it("a policy run in eidkit.sandbox: a looping hook fails that call only", function()
      local has, sandbox = pcall(require, "eidkit.sandbox")
      if not has then return pending("eidkit.sandbox is not there yet") end
      local box = sandbox.new { instructions = 1e6, time = 1 }
      local mod = assert(box:load([[
        local P = { info_type = "1" }
        function P.classify(result, outcome)
          if result.Text.Extra == "loop" then while true do end end
          return outcome
        end
        return P
      ]], "=merchant_policy"))
      local f = env:flow { policy = box:wrap(mod) }
      local st = env:start(f, "p-box", { Extra = "loop" })
      env:finish_user(st.EidToken, { ErrCode = 0 })
      local res, err = f.flow:finish { subject = "p-box", EidToken = st.EidToken }
      assert.is_nil(res)
      assert.same({ "policy", "classify", "instructions" }, { err.code, err.hook, err.cause })
      assert.equals(0, f.counts.consume)
      local st2 = env:start(f, "p-box2", { Extra = "fine" })
      env:finish_user(st2.EidToken, { ErrCode = 0 })
      assert.equals("passed", assert(f.flow:finish { subject = "p-box2", EidToken = st2.EidToken }).status)
    end)

    it("a classify that settles a result with no verdict is refused", function()
      local f = env:flow { policy = { classify = function(_, o) o.status = "failed"; return o end } }
      local st = env:start(f, "p-nov")
      local res, err = f.flow:finish { subject = "p-nov", EidToken = st.EidToken }
      assert.is_nil(res)
      assert.same({ "policy", "classify" }, { err.code, err.hook })
      assert.equals("issued", f.ledger:get(st.EidToken).state)
    end)

    it("retry is asked after the client gives up; its failure is a policy error", function()
      local asked = {}
      local c = env:client { retry = { max_attempts = 1 } }
      local f = env:flow { client = c, sleep = function() end, policy = {
        retry = function(err, attempt)
          asked[#asked + 1] = { err.code, err.action, attempt }
          if attempt < 3 then return 0 end
        end } }
      local st = env:start(f, "p-retry")
      env:finish_user(st.EidToken, { ErrCode = 0 })
      env:faults { { Action = "GetEidResult", Kind = "http", Status = 502, First = 2 } }
      local o = assert(f.flow:finish { subject = "p-retry", EidToken = st.EidToken })
      assert.equals("passed", o.status)
      assert.same({ { "http_502", "GetEidResult", 1 }, { "http_502", "GetEidResult", 2 } }, asked)
      -- A retry hook that raises.
      local g = env:flow { client = c, policy = { retry = function() error("nope") end } }
      st = env:start(g, "p-retry2")
      env:faults { { Action = "GetEidResult", Kind = "http", Status = 502, First = 1 } }
      local res, err = g.flow:finish { subject = "p-retry2", EidToken = st.EidToken }
      assert.is_nil(res)
      assert.same({ "policy", "retry" }, { err.code, err.hook })
      -- No retry hook (the default): the client's error comes back as it is.
      -- (Every call: libcurl resends a read by itself when a reused
      -- connection is reset, as often as it finds another to reuse.)
      local h = env:flow { client = c }
      st = env:start(h, "p-retry3")
      env:faults { { Action = "GetEidResult", Kind = "reset" } }
      res, err = h.flow:finish { subject = "p-retry3", EidToken = st.EidToken }
      env:capture(err)
      assert.is_nil(res)
      assert.equals("reset", err.code)
      assert.equals("GetEidResult", err.action)
      assert.is_true(err.retryable)
    end)

    it("redact filters events; a failing redact drops that event and changes no result", function()
      -- Regression: a redact hook that raised made finish return err.code
      -- "policy" although the verdict was recorded and consumed.
      local n = 0
      local told = {}
      local f = env:flow { on_log_failure = function(why) told[#told + 1] = why end,
        policy = { redact = function(ev)
          n = n + 1
          if n == 2 then error("redactor crashed") end
          if ev.event == "start" then return false end
          return ev
        end } }
      local st = env:start(f, "p-red")
      assert.equals(0, #f.events) -- dropped
      env:finish_user(st.EidToken, { ErrCode = 0 })
      local o = assert(f.flow:finish { subject = "p-red", EidToken = st.EidToken })
      assert.equals("passed", o.status)
      assert.equals(0, #f.events) -- the outcome event was the one that failed
      local count, last = f.flow:log_failures()
      assert.equals(1, count)
      assert.matches("^policy hook 'redact' raised: .*redactor crashed$", last)
      assert.equals(1, #told)
      local again = assert(f.flow:finish { subject = "p-red", EidToken = st.EidToken })
      assert.same(o, again)
      assert.equals(1, f.counts.consume)
      assert.equals("p-red", f.events[#f.events].event.subject) -- this redact keeps subjects
      -- A redact that returns neither a table nor false is a failure of the same kind.
      local g = env:flow { on_log_failure = function() end, policy = { redact = function() return 7 end } }
      env:start(g, "p-red2")
      assert.matches("must return the event table or false, got number", select(2, g.flow:log_failures()))
    end)

    it("copies an outcome that refers to itself (a classify hook's cycle)", function()
      -- Regression: deep_copy recursed without end on a cyclic table.
      local f = env:flow { policy = { classify = function(_, o)
        o.self = o
        o.pair = { o, o }
        return o
      end } }
      local st = env:start(f, "p-cycle")
      env:finish_user(st.EidToken, { ErrCode = 0 })
      local o = assert(f.flow:finish { subject = "p-cycle", EidToken = st.EidToken })
      assert.equals("passed", o.status)
      assert.equals(o, o.self)
      assert.equals(o, o.pair[2])
      local again = assert(f.flow:finish { subject = "p-cycle", EidToken = st.EidToken })
      assert.are_not.equal(o, again) -- a copy, with the same shape
      assert.equals(again, again.self)
    end)

    it("a logger that raises on every call changes no outcome, record or consume", function()
      -- Regression: 9 of the 10 events returned the logger's error as the result.
      local told = {}
      for _, backend in ipairs { "sqlite", "redis" } do
        local f = env:flow { backend = backend, policy = { redact = function(ev) return ev end },
          logger = function() error("log sink down") end,
          on_log_failure = function(why) told[#told + 1] = why end }
        local settled = {}
        f.flow.policy.on_outcome = function(o) settled[#settled + 1] = o.status end
        -- start, finish (a pass), its replay, a refused finish, an unknown token
        local st = env:start(f, "log-" .. backend)
        env:finish_user(st.EidToken, { ErrCode = 0 })
        local o = assert(f.flow:finish { subject = "log-" .. backend, EidToken = st.EidToken })
        assert.same({ "passed", 0 }, { o.status, o.code })
        assert.same(o, assert(f.flow:finish { subject = "log-" .. backend, EidToken = st.EidToken }))
        assert.equals("wrong_subject", select(2, f.flow:finish {
          subject = "other", EidToken = st.EidToken }).code)
        assert.equals("unknown_token", select(2, f.flow:finish { subject = "x", EidToken = "nope" }).code)
        -- a failure settled by finish, and a pass that only the sweep sees
        local st2 = env:start(f, "log2-" .. backend)
        env:finish_user(st2.EidToken, { ErrCode = 2016 })
        assert.equals("failed", assert(f.flow:finish { subject = "log2-" .. backend,
          EidToken = st2.EidToken }).status)
        local st3 = env:start(f, "log3-" .. backend)
        env:finish_user(st3.EidToken, { ErrCode = 0 })
        local n, report = f.flow:sweep()
        assert.is_number(n)
        assert.equals(1, report.settled)
        -- CheckEidTokenStatus polling
        local poll = assert(f.flow:poll_h5 { EidToken = st3.EidToken, interval = 0, max_wait = 0 })
        assert.equals("finished", poll.status)
        local count, last = f.flow:log_failures()
        assert.is_true(count >= 8, "counted " .. count)
        assert.matches("^the flow's logger raised: .*log sink down$", last)
        assert.same({ "passed", "failed", "passed" }, settled)
        assert.equals(3, f.counts.consume)
        for _, t in ipairs { st, st2, st3 } do
          assert.equals("consumed", f.ledger:get(t.EidToken).state)
        end
      end
      assert.equals(2, #told) -- once per flow
    end)

    it("authorize refuses by default and returns the policy's subject", function()
      local f = env:flow()
      local res, err = f.flow:authorize { headers = {} }
      assert.is_nil(res)
      assert.equals("unauthorized", err.code)
      assert.matches("no authorize policy", err.message)
      local g = env:flow { policy = { authorize = function(req)
        if req.session == "s3cr3t-session" then return "user-42" end
        if req.session == "boom" then return nil, { code = "time", message = "hook ran too long" } end
        return false, "unknown session"
      end } }
      assert.equals("user-42", g.flow:authorize { session = "s3cr3t-session" })
      res, err = g.flow:authorize { session = "other" }
      assert.is_nil(res)
      assert.same({ "unauthorized", "refused by the authorize policy: unknown session" }, { err.code, err.message })
      res, err = g.flow:authorize { session = "boom" }
      assert.is_nil(res)
      assert.same({ "policy", "authorize", "time" }, { err.code, err.hook, err.cause })
      local h = env:flow { policy = { authorize = function() return 42 end } }
      res, err = h.flow:authorize {}
      assert.is_nil(res)
      assert.same({ "policy", "authorize" }, { err.code, err.hook })
    end)

    it("on_show applies the onShow exclusion rule, or the policy's", function()
      local f = env:flow()
      assert.is_true(f.flow:on_show { scene = 1038, path = "pages/index/index", query = {},
        referrerInfo = { appId = "wx0e2cb0b052a91c92", extraData = { verifyDone = true, token = "x" } } })
      assert.is_false(f.flow:on_show { scene = 1001, path = "pages/index/index", query = {}, referrerInfo = {} })
      local g = env:flow { policy = { on_show = function(o) return o.scene == 1037 end } }
      assert.is_true(g.flow:on_show { scene = 1037 })
      local h = env:flow { policy = { on_show = function() end } }
      local res, err = h.flow:on_show { scene = 1038 }
      assert.is_nil(res)
      assert.same({ "policy", "on_show" }, { err.code, err.hook })
    end)
  end)

  describe("gate_pulls", function()
    -- A gate that counts its calls and refuses while told to.
    local function gate()
      local g = { calls = 0, refuse = false, refusal = { code = "rate_limited", message = "no token" } }
      g.fn = function()
        g.calls = g.calls + 1
        if g.refuse then return g.refusal end
      end
      return g
    end

    it("runs before each GetEidResult call finish makes, never for the memo, a kept payload or "
      .. "the sweep; a refusal is finish's error and changes nothing", function()
      local ledger = env:ledger(nil, { payload_key_hex = ("ab"):rep(32), keep_payloads = true })
      local f, g = env:flow { ledger = ledger }, gate()
      f.flow:gate_pulls(g.fn)
      local st = env:start(f, "u-gate")
      env:finish_user(st.EidToken, { ErrCode = 0 })
      g.refuse = true
      local o, err = f.flow:finish { subject = "u-gate", EidToken = st.EidToken }
      assert.is_nil(o)
      assert.equals(g.refusal, err)
      assert.same({ 1, 0, 0, "issued" }, { g.calls, f.counts.record, f.counts.consume, ledger:get(st.EidToken).state })
      g.refuse = false
      assert.equals("passed", assert(f.flow:finish { subject = "u-gate", EidToken = st.EidToken }).status)
      assert.equals(2, g.calls)
      -- the memo
      assert.equals("passed", assert(f.flow:finish { subject = "u-gate", EidToken = st.EidToken }).status)
      assert.equals(2, g.calls)
      -- another flow on the same ledger: the payload kept
      local h, hg = env:flow { ledger = ledger }, gate()
      h.flow:gate_pulls(hg.fn)
      assert.equals("passed", assert(h.flow:finish { subject = "u-gate", EidToken = st.EidToken }).status)
      assert.equals(0, hg.calls)
      -- the sweep pulls ungated
      local st2 = env:start(f, "u-gate-2")
      env:finish_user(st2.EidToken, { ErrCode = 2016 })
      hg.refuse = true
      local n = assert(h.flow:sweep())
      assert.is_true(n >= 1)
      assert.equals(0, hg.calls)
      assert.equals("failed", ledger:get(st2.EidToken).state)
      -- removed
      h.flow:gate_pulls(nil)
      assert.equals("failed", assert(h.flow:finish { subject = "u-gate-2", EidToken = st2.EidToken }).status)
      assert.has_error(function() h.flow:gate_pulls(5) end,
        "bad argument #1 to 'gate_pulls' (expected a function or nil)")
    end)

    it("closing a token Tencent expired: the gate runs before the consume, so a refusal leaves it open",
      function()
      local issuer = env:flow()
      local st = env:start(issuer, "u-gate-15")
      local calls = 0
      -- a flow that did not issue it (no claim cache), and a sweep elsewhere
      -- that recorded Tencent's expiry without settling it
      local f, g = env:flow { ledger = issuer.ledger,
        policy = { on_outcome = function() calls = calls + 1 end } }, gate()
      f.flow:gate_pulls(g.fn)
      assert(f.ledger:record(st.EidToken, { Text = { ErrCode = 15 }, RequestId = "r-15" }))
      g.refuse = true
      local o, err = f.flow:finish { subject = "u-gate-15", EidToken = st.EidToken }
      assert.is_nil(o)
      assert.equals(g.refusal, err)
      assert.same({ 1, 0, "expired" }, { g.calls, f.counts.consume, f.ledger:get(st.EidToken).state })
      g.refuse = false
      o = assert(f.flow:finish { subject = "u-gate-15", EidToken = st.EidToken })
      assert.same({ "expired", 15, 2, 1, 1 }, { o.status, o.code, g.calls, f.counts.consume, calls })
    end)
  end)

  describe("redaction", function()
    it("never puts names, ID numbers, secrets or Responses into errors or events", function()
      -- The default redact drops subjects.
      local f = env:flow()
      local st = env:start(f, "user-secret-subject")
      env:finish_user(st.EidToken, { ErrCode = 2016 })
      env:capture(f.flow:finish { subject = "user-secret-subject", EidToken = st.EidToken })
      env:capture(f.flow:finish { subject = "someone-else", EidToken = st.EidToken })
      for _, e in ipairs(f.events) do
        assert.is_nil(e.event.subject)
        for _, v in pairs(e.event) do assert.is_true(type(v) ~= "table") end
      end
      assert.is_true(#env.captured > 20)
      for _, s in ipairs(env.captured) do
        for _, secret in ipairs { NAME, IDCARD, demo.SecretKey, "Authorization", "Signature=",
          "LivenessDetail", "OcrFront", "user-secret-subject" } do
          assert.is_nil(s:find(secret, 1, true), "leaked " .. secret .. " in: " .. s)
        end
      end
    end)
  end)

  it("uses core.now and core.sleep unless told otherwise", function()
    local f = env:flow()
    assert.equals(core.now, f.flow.clock)
    assert.equals(core.sleep, f.flow.sleep)
  end)
end)
