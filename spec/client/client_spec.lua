-- eidkit.client against a real `eidkit sim` on loopback: every API and error
-- path, retries under injected faults (attempts, backoff bounds, deadline),
-- GetEidToken after a send timeout, ±10 minutes of clock skew, callbacks and
-- their error relay, 1,000 calls in one batch, and redaction of secrets;
-- all of it twice: on the caller's thread, and with thread = true (libcurl
-- on the client's own thread, bindings/client_thread.c).
local client_mod = require "eidkit.client"
local simproc = require "support.simproc"
local simctl = require "support.simctl"
local sim_mod = require "eidkit.sim"

local demo = sim_mod.demo
local NAME, IDCARD = "韦小宝", "11204416541220243X"

local threaded -- set by each pass of the loop below, for the specs it defines

local function new(s, opts)
  opts = opts or {}
  opts.thread = threaded or nil
  opts.endpoint = opts.endpoint or s.url
  opts.secret_id = opts.secret_id or demo.SecretId
  opts.secret_key = opts.secret_key or demo.SecretKey
  return client_mod.new(opts)
end

-- Everything a spec saw, for the redaction check at the end.
local captured = {}
local function capture(...)
  for i = 1, select("#", ...) do
    local v = select(i, ...)
    if type(v) == "table" then
      for k, x in pairs(v) do captured[#captured + 1] = tostring(k) .. "=" .. tostring(x) end
    end
    captured[#captured + 1] = tostring(v)
  end
  return ...
end

for _, thread in ipairs { false, true } do
  describe(thread and "eidkit.client{thread = true}" or "eidkit.client", function()
    local s
    -- busted runs a describe's body when it collects specs, the specs later:
    -- each spec sets the mode it was defined in.
    before_each(function() threaded = thread end)
    lazy_setup(function() s = simproc.start { "--seed", "5" } end)
    lazy_teardown(function() if s then simproc.stop(s) end end)
    after_each(function() if s then simctl.clear(s) end end)

    describe("new", function()
      it("raises on misuse, naming the option", function()
        assert.has_error(function() client_mod.new { endpoint = 5 } end,
          "bad option 'endpoint' (expected string, got number)")
        assert.has_error(function() client_mod.new { secretKey = "x" } end,
          "bad option 'secretKey' (unknown option)")
        assert.has_error(function() new(s, { endpoint = "ftp://x" }) end,
          "bad option 'endpoint' (endpoint: must start with http:// or https://)")
        assert.has_error(function() new(s, { headers = { Authorization = "x" } }) end)
        assert.has_error(function() new(s, { retry = { tries = 3 } }) end)
        assert.has_error(function() new(s, { timeout = -1 }) end, "bad option 'timeout' (out of range: 0.001..3600 s)")
        assert.has_error(function() client_mod.new { secret_id = "x" } end)
      end)

      it("is callable as eidkit.client{...} and closes idempotently", function()
        local c = client_mod { endpoint = s.url, secret_id = "a", secret_key = "b" }
        c:close()
        c:close()
        assert.has_error(function() c:call("GetEidResult", {}) end,
          "attempt to use a closed eidkit.Client")
      end)
    end)

    describe("get_eid_token", function()
      it("returns the decoded Response", function()
        local c = new(s)
        local res, err = c:get_eid_token { MerchantId = demo.MerchantId, Name = NAME, IdCard = IDCARD,
          Config = { InputType = "4" }, Extra = "order-1" }
        capture(res, err)
        assert.is_nil(err)
        assert.matches("^[%w-]+$", res.EidToken)
        assert.equal(36, #res.EidToken)
        assert.equal(36, #res.RequestId)
        assert.equal(s.url .. "/sim/h5?token=" .. res.EidToken, res.Url)
      end)

      it("raises on parameter mistakes", function()
        local c = new(s)
        assert.has_error(function() c:get_eid_token {} end,
          "bad argument #1 to 'get_eid_token' (MerchantId: expected a non-empty string)")
        assert.has_error(function() c:get_eid_token "x" end,
          "bad argument #1 to 'get_eid_token' (expected a table of request fields)")
        assert.has_error(function() c:get_eid_token { MerchantId = "m", Config = "4" } end,
          "bad argument #1 to 'get_eid_token' (Config: expected table, got string)")
      end)

      it("returns Tencent's error as err, with its request id", function()
        local c = new(s)
        local res, err = c:get_eid_token { MerchantId = "unknown-merchant" }
        capture(res, err)
        assert.is_nil(res)
        assert.equal("InvalidParameterValue", err.code)
        assert.equal(36, #err.request_id)
        assert.same({ 1, false, 200 }, { err.attempts, err.retryable, err.http_status })
        assert.equal("InvalidParameterValue: " .. err.message, tostring(err))
      end)

      it("is not retried after a send timeout, but is after throttling", function()
        local c = new(s, { timeout = 0.15, retry = { base = 0.01 } })
        simctl.faults(s, { { Action = "GetEidToken", Kind = "latency", Ms = 400 } })
        local res, err = c:get_eid_token { MerchantId = demo.MerchantId }
        assert.is_nil(res)
        assert.same({ "timeout", 1, false }, { err.code, err.attempts, err.retryable })
        simctl.faults(s, { { Action = "GetEidToken", Kind = "throttle", First = 2 } })
        res, err = c:get_eid_token { MerchantId = demo.MerchantId }
        assert.is_nil(err)
        assert.truthy(res.EidToken)
      end)

      it("is retried after a send timeout when the policy says unsafe = true", function()
        local c = new(s, { timeout = 0.15, retry = { base = 0.01, unsafe = true, max_attempts = 2 } })
        simctl.faults(s, { { Action = "GetEidToken", Kind = "latency", Ms = 400, First = 1 } })
        local res, err = c:get_eid_token { MerchantId = demo.MerchantId }
        assert.is_nil(err)
        assert.truthy(res.EidToken)
      end)

      it("goes out once per attempt it counts under connection resets, and says it may have been sent", function()
        local c = new(s, { retry = { base = 0.01 } })
        local function received() -- every request the simulator has read, this one included
          local status, h = simctl.request(s, "GET", "/sim/health")
          assert.equals(200, status)
          return h.Requests
        end
        c:check_eid_token_status { EidToken = "x" } -- a keep-alive connection a retry could reuse
        simctl.faults(s, { { Action = "GetEidToken", Kind = "reset", Rate = 0.5 } })
        local sent0, before = c:stats().requests, received()
        local failed = 0
        for _ = 1, 50 do
          local res, err = c:get_eid_token { MerchantId = demo.MerchantId }
          if not res then
            failed = failed + 1
            -- the reset came after the request went out: a token may exist
            assert.same({ "reset", 1, true }, { err.code, err.attempts, err.sent })
          end
          -- reads between tokens keep a connection for curl to resend on, were it allowed
          c:check_eid_token_status { EidToken = "x" }
        end
        local attempts = c:stats().requests - sent0
        assert.is_true(failed >= 10, "the fault fired " .. failed .. " times")
        -- the simulator read each counted attempt and nothing else (the second
        -- health request counts itself)
        assert.equals(attempts + 1, received() - before)
      end)
    end)

    describe("get_eid_result", function()
      it("pulls a finished flow's result", function()
        local c = new(s)
        local tok = assert(c:get_eid_token { MerchantId = demo.MerchantId, Extra = "o-7" }).EidToken
        assert.equal(200, simctl.finish(s, tok, { ErrCode = 0 }))
        local res, err = c:get_eid_result { EidToken = tok, InfoType = "1" }
        assert.is_nil(err)
        assert.equal(0, res.Text.ErrCode)
        assert.equal("o-7", res.Text.Extra)
      end)

      it("raises on a numeric InfoType (Tencent wants a string)", function()
        local c = new(s)
        assert.has_error(function() c:get_eid_result { EidToken = "t", InfoType = 0 } end,
          "bad argument #1 to 'get_eid_result' (InfoType: expected string, got number)")
        assert.has_error(function() c:get_eid_result { EidToken = "t", BestFramesCount = 1.5 } end)
      end)

      it("retries throttling, 5xx, resets and truncation until it succeeds", function()
        for _, kind in ipairs { { Kind = "throttle" }, { Kind = "http", Status = 503 },
          { Kind = "error", Code = "InternalError" }, { Kind = "reset" }, { Kind = "truncate" },
          { Kind = "error", Code = "FailedOperation.UnKnown" } } do
          kind.Action, kind.First = "GetEidResult", 2
          simctl.faults(s, { kind })
          local events = {}
          local c = new(s, { retry = { base = 0.005, max_attempts = 4 },
            logger = function(_, ev) events[#events + 1] = ev end })
          local res, err = c:get_eid_result { EidToken = "not-a-token" }
          assert.is_nil(res)
          assert.equal("InvalidParameterValue.BizTokenIllegal", err.code, kind.Kind)
          assert.equal(3, err.attempts, kind.Kind)
          assert.equal(3, #events)
          assert.is_number(events[1].retry_delay)
          assert.is_nil(events[3].retry_delay)
          c:close()
        end
      end)

      it("gives up after max_attempts with the last error, retryable", function()
        local c = new(s, { retry = { base = 0.01, cap = 0.04, max_attempts = 4 } })
        simctl.faults(s, { { Action = "GetEidResult", Kind = "http", Status = 502 } })
        local t0 = simproc.now()
        local res, err = c:get_eid_result { EidToken = "x" }
        local took = simproc.now() - t0
        capture(res, err)
        assert.is_nil(res)
        assert.same({ "http_502", 502, 4, true }, { err.code, err.http_status, err.attempts, err.retryable })
        assert.is_string(err.received)
        assert.is_nil(err.request_id)
        -- full jitter: waits of at most 10 + 20 + 40 ms
        assert.is_true(took < 0.07 + 0.5)
      end)

      it("keeps every backoff within [0, min(cap, base * 2^(n-1))]", function()
        local delays = {}
        local c = new(s, { retry = { base = 0.02, cap = 0.05, max_attempts = 6 },
          logger = function(_, ev) delays[#delays + 1] = ev.retry_delay or false end })
        simctl.faults(s, { { Action = "GetEidResult", Kind = "throttle" } })
        for _ = 1, 5 do c:get_eid_result { EidToken = "x" } end
        local bounds = { 0.02, 0.04, 0.05, 0.05, 0.05 }
        local n, sum = 0, 0
        for i, d in ipairs(delays) do
          local k = (i - 1) % 6 + 1
          if k <= 5 then
            assert.is_true(d >= 0 and d <= bounds[k] + 1e-9, ("delay %d = %s"):format(k, d))
            n, sum = n + 1, sum + d / bounds[k]
          else
            assert.is_false(d)
          end
        end
        assert.equal(25, n)
        -- full jitter is uniform: the mean fraction of the bound is near 1/2
        assert.is_true(sum / n > 0.2 and sum / n < 0.8)
      end)

      it("stops at the deadline, including waits", function()
        local c = new(s, { deadline = 0.3, timeout = 5, retry = { base = 0.01 } })
        -- The upstream takes 3 s: a client that outlived its 0.3 s deadline
        -- would take at least that, so the bound leaves a loaded machine room.
        simctl.faults(s, { { Action = "GetEidResult", Kind = "latency", Ms = 3000 } })
        local t0 = simproc.now()
        local res, err = c:get_eid_result { EidToken = "x" }
        local took = simproc.now() - t0
        assert.is_nil(res)
        assert.equal("timeout", err.code)
        assert.is_true(took >= 0.28 and took < 1.5, "took " .. took)
      end)

      it("reports a non-JSON 200 as bad_response with its size, never its bytes", function()
        local c = new(s)
        simctl.faults(s, { { Action = "GetEidResult", Kind = "malformed" } })
        local res, err = c:get_eid_result { EidToken = "x" }
        assert.is_nil(res)
        assert.same({ "bad_response", 1, false }, { err.code, err.attempts, err.retryable })
        assert.is_nil(err.received)
        assert.matches("^the body is not JSON %(invalid at byte %d+%); %d+ bytes received$", err.message)
      end)

      it("refuses an answer over max_response", function()
        local c = new(s, { max_response = 64 })
        local res, err = c:get_eid_result { EidToken = "x" }
        assert.is_nil(res)
        assert.equal("bad_response", err.code)
        assert.matches("larger than 64 bytes", err.message)
      end)
    end)

    describe("answers the simulator cannot make", function()
      local child = require "support.child"
      local proc = require "support.proc"
      local function serve(status, body)
        return child.start({ proc.bin(), "spec/support/static_server.lua", tostring(status), body },
          { ready = "port (%d+)" })
      end

      -- case[5]: err.received; only an answer whose status is not 200 keeps
      -- its body (a 200 body may hold an identity: spec/support/received_cases.lua)
      for _, case in ipairs {
        -- success-shaped answers are decoded by lua-cjson (defer_parse)
        { 200, '{"Response":{"RequestId":"r-1",}}', "bad_response",
          "Response is not valid JSON: Expected object key string but found T_OBJ_END at character 20; "
          .. "20 bytes of Response" },
        { 200, '{"Response":{"Text":{"ErrCode":0}}', "bad_response", "Response is not valid JSON" },
        { 200, '{"Response":{"Text":{"ErrCode":0}}}garbage', "bad_response", "the body is not JSON" },
        { 200, '{"Response":{"Error":{"Message":"no code"},"RequestId":"r"}}', "bad_response",
          "Response.Error has no Code string; 60 bytes received" },
        { 200, '{"Other":{}}', "bad_response", "no Response object" },
        { 200, '{"Response":5}', "bad_response", "no Response object" },
        { 404, "<html>not here</html>", "http_404", "HTTP 404", "<html>not here</html>" },
      } do
        it(("turns %s into %s"):format(case[2], case[3]), function()
          local srv = serve(case[1], case[2])
          local ok, e = pcall(function()
            local c = client_mod.new { endpoint = "http://127.0.0.1:" .. srv.ready, secret_id = "a",
              secret_key = "b" }
            local res, err = c:check_eid_token_status { EidToken = "x" }
            assert.is_nil(res)
            assert.equal(case[3], err.code)
            assert.matches(case[4], err.message, 1, true)
            assert.equal(case[5], err.received)
            assert.equal(1, err.attempts)
            assert.is_false(err.retryable)
          end)
          child.stop(srv)
          assert(ok, e)
        end)
      end
    end)

    describe("an unusable answer with an identity in it (received)", function()
      local child = require "support.child"
      local proc = require "support.proc"
      local cases = require "support.received_cases"
      local eidkit = require "eidkit"

      for _, case in ipairs(cases.cases) do
        it(case[1], function()
          assert.is_false(cases.clean(case[3]) and case[2] == 200, "the 200 bodies carry the fake identity")
          local srv = child.start({ proc.bin(), "spec/support/static_server.lua", tostring(case[2]), case[3],
            case.fault }, { ready = "port (%d+)" })
          local ok, e = pcall(function()
            local opts = { endpoint = "http://127.0.0.1:" .. srv.ready, secret_id = "a", secret_key = "b",
              retry = { max_attempts = 1 } }
            for k, v in pairs(case.opts or {}) do opts[k] = v end
            local c = eidkit.client.new(opts)
            local res, err = c:get_eid_result { EidToken = "x" }
            c:close()
            assert.is_nil(res)
            -- A boolean, so a failure cannot print the identity.
            assert.is_true(cases.clean(cases.dump(err)), "the identity is in the error table")
            assert.equal(case.code, err.code)
            assert.equal(case[2], err.http_status)
            assert.is_truthy(err.message:find(case.message.lua54, 1, true))
            assert.equal(case.received, err.received)
          end)
          child.stop(srv)
          assert(ok, e)
        end)
      end
    end)

    describe("check_eid_token_status", function()
      it("follows the token's states", function()
        local c = new(s)
        local tok = assert(c:get_eid_token { MerchantId = demo.MerchantId }).EidToken
        assert.equal("init", assert(c:check_eid_token_status { EidToken = tok }).Status)
        simctl.finish(s, tok)
        assert.equal("finished", assert(c:check_eid_token_status { EidToken = tok }).Status)
        assert.has_error(function() c:check_eid_token_status {} end,
          "bad argument #1 to 'check_eid_token_status' (EidToken: expected a non-empty string)")
      end)

      it("reuses one connection for sequential calls", function()
        local c = new(s)
        for _ = 1, 5 do c:check_eid_token_status { EidToken = "x" } end
        assert.same({ requests = 5, connects = 1 }, c:stats())
      end)
    end)

    describe("call", function()
      it("calls any action and returns Tencent's code for unknown ones", function()
        local c = new(s)
        local res, err = c:call("DescribeNothing", {})
        assert.is_nil(res)
        assert.equal("InvalidAction", err.code)
        -- The messages blame the line that called call (eidkit.client_params
        -- raises them for both clients, two frames down).
        local ok, e1 = pcall(function() c:call("Get Eid", {}) end)
        assert.is_false(ok)
        assert.matches("client_spec%.lua:%d+: bad argument #1 to 'call' %(action: expected an API name", e1)
        local ok2, e2 = pcall(function() c:call("GetEidResult", "x") end)
        assert.is_false(ok2)
        assert.matches("client_spec%.lua:%d+: bad argument #2 to 'call' %(expected a table%)$", e2)
      end)

      it("fails with connect against a closed port, after retries", function()
        local c = client_mod.new { endpoint = "http://127.0.0.1:" .. require("support.child").free_port(),
          secret_id = "a", secret_key = "b",
          retry = { base = 0.005, max_attempts = 3 } }
        local res, err = c:call("GetEidResult", { EidToken = "x" })
        assert.is_nil(res)
        assert.same({ "connect", 3, true }, { err.code, err.attempts, err.retryable })
      end)

      it("reports a wrong key as AuthFailure.SignatureFailure, once", function()
        local c = new(s, { secret_key = "wrong-key-value" })
        local res, err = c:call("GetEidResult", { EidToken = "x" })
        capture(res, err)
        assert.same({ "AuthFailure.SignatureFailure", 1 }, { err.code, err.attempts })
      end)
    end)

    describe("clock skew", function()
      for _, offset in ipairs { 600, -600 } do
        it(("corrects %+d s from the Date header, once, and keeps the offset"):format(offset), function()
          simctl.advance(s, offset)
          local ok, e = pcall(function()
            local events = {}
            local c = new(s, { logger = function(_, ev) events[#events + 1] = ev end })
            local res, err = c:check_eid_token_status { EidToken = "x" }
            assert.is_nil(res)
            assert.equal("InvalidParameterValue.BizTokenIllegal", err.code)
            assert.equal(2, err.attempts)
            assert.is_true(math.abs(c:skew() - offset) <= 2)
            assert.equal("skew", events[1].event)
            local _, err2 = c:check_eid_token_status { EidToken = "x" }
            assert.equal(1, err2.attempts)
          end)
          simctl.advance(s, -offset)
          assert(ok, e)
        end)
      end
    end)

    if thread then
      it("refuses a retry function: it would have to run on the transport thread", function()
        assert.has_error(function() new(s, { retry = function() return 0 end }) end,
          "bad option 'retry' (a function cannot be used with thread = true; give a table of the "
          .. "default policy's knobs)")
        assert.has_error(function()
          client_mod.new { endpoint = s.url, secret_id = "a", secret_key = "b", thread = "yes" }
        end, "bad option 'thread' (expected boolean, got string)")
      end)
    end

    describe("retry policy function", function()
      if thread then return end
      it("decides delays and sees the error and attempt", function()
        local seen = {}
        local c = new(s, { retry = function(err, attempt)
          seen[#seen + 1] = { err.code, attempt, err.retryable }
          return attempt < 3 and 0 or nil
        end })
        simctl.faults(s, { { Action = "*", Kind = "error", Code = "InvalidParameter" } })
        local _, err = c:get_eid_token { MerchantId = demo.MerchantId }
        assert.equal(3, err.attempts)
        assert.same({ { "InvalidParameter", 1, false }, { "InvalidParameter", 2, false },
          { "InvalidParameter", 3, false } }, seen)
      end)

      it("re-raises its error after the call, and the client stays usable", function()
        local broken = true
        local c = new(s, { retry = function()
          if broken then
            broken = false
            error("policy broke")
          end
        end })
        simctl.faults(s, { { Action = "*", Kind = "throttle", First = 1 } })
        assert.has_error(function() c:check_eid_token_status { EidToken = "x" } end)
        local ok, msg = pcall(c.check_eid_token_status, c, { EidToken = "x" })
        assert.is_true(ok, msg)
        simctl.faults(s, { { Action = "*", Kind = "throttle", First = 1 } })
        local rc = new(s, { retry = function() return "soon" end })
        assert.has_error(function() rc:check_eid_token_status { EidToken = "x" } end,
          "retry policy must return seconds (number) or nil, got string")
      end)
    end)

    describe("logger", function()
      it("gets an error code whole, however long Tencent's code is", function()
        local code = "InvalidParameterValue." .. ("X"):rep(70) -- 92 bytes (eid_result keeps 95)
        simctl.faults(s, { { Action = "*", Kind = "error", Code = code } })
        local events = {}
        local c = new(s, { retry = { max_attempts = 1 },
          logger = function(_, ev) events[#events + 1] = ev end })
        local _, err = c:check_eid_token_status { EidToken = "x" }
        assert.equals(code, err.code)
        assert.equals(1, #events)
        assert.equals(code, events[1].code)
      end)

      it("gets one event per attempt; its error is re-raised after the call", function()
        local c = new(s, { logger = function() error({ why = "logger broke" }) end })
        local ok, e = pcall(c.check_eid_token_status, c, { EidToken = "x" })
        assert.is_false(ok)
        assert.same({ why = "logger broke" }, e)
        local events = {}
        c = new(s, { logger = function(level, ev) events[#events + 1] = { level, ev } end })
        c:check_eid_token_status { EidToken = "x" }
        assert.equal(1, #events)
        local level, ev = events[1][1], events[1][2]
        assert.equal("warn", level)
        assert.same({ "attempt", "CheckEidTokenStatus", 1, "InvalidParameterValue.BizTokenIllegal", 200 },
          { ev.event, ev.action, ev.attempts, ev.code, ev.http_status })
        assert.equal(36, #ev.trace_id)
        assert.is_number(ev.duration)
      end)
    end)

    describe("batch", function()
      it("runs 1,000 calls at once under 200 ms latency and throttling, in order", function()
        -- The first 50 status checks are throttled, a fixed count rather than
        -- a rate (a rate can draw the throttle for every attempt of one call);
        -- six attempts leave room for a retry that lands among those 50.
        local c = new(s, { retry = { base = 0.01, max_attempts = 6 }, max_in_flight = 1000 })
        local tok = assert(c:get_eid_token { MerchantId = demo.MerchantId }).EidToken
        simctl.faults(s, { { Action = "*", Kind = "latency", Ms = 200 },
          { Action = "CheckEidTokenStatus", Kind = "throttle", First = 50 } })
        local sent0 = c:stats().requests
        local list = {}
        for i = 1, 1000 do
          list[i] = i % 2 == 0 and { "CheckEidTokenStatus", { EidToken = tok } }
            or { "GetEidResult", { EidToken = "bad-" .. i } }
        end
        local t0 = simproc.now()
        local results = c:batch(list)
        local took = simproc.now() - t0
        assert.equal(1000, #results)
        for i = 1, 1000 do
          if i % 2 == 0 then
            assert.is_nil(results[i].err)
            assert.equal("init", results[i].res.Status)
          else
            assert.equal("InvalidParameterValue.BizTokenIllegal", results[i].err.code)
          end
        end
        -- In line the calls would take 200 s; 5 s failed once (5.06 s) under ASan
        -- with three test runs on two cores, all of it connection setup.
        assert.is_true(took < 20, "took " .. took)
        -- all 1,000 on the wire at once: one connection each (the token's reused)
        assert.equal(1000, c:stats().connects)
        -- each throttled attempt, and nothing else, was tried again
        assert.equal(1050, c:stats().requests - sent0)
      end)

      it("raises on a malformed entry and returns {} for an empty list", function()
        local c = new(s)
        assert.same({}, c:batch {})
        assert.has_error(function() c:batch { { "GetEidResult", "x" } } end,
          "bad argument #1 to 'batch' (entry 1: expected {action, params})")
      end)
    end)

    describe("ledger_puller", function()
      it("pulls GetEidResult for eidkit.ledger's sweep: Response, or nil and err", function()
        local c = new(s)
        local pull = c:ledger_puller("1")
        local tok = assert(c:get_eid_token { MerchantId = demo.MerchantId }).EidToken
        simctl.finish(s, tok, { ErrCode = 2016 })
        local res = assert(pull(tok, { EidToken = tok }))
        assert.equal(2016, res.Text.ErrCode)
        local none, err = pull("not-a-token", {})
        assert.is_nil(none)
        assert.equal("InvalidParameterValue.BizTokenIllegal", err.code)
      end)

      it("is reachable from the facade as eidkit.client{...}", function()
        local eidkit = require "eidkit"
        local c = eidkit.client { endpoint = s.url, secret_id = demo.SecretId, secret_key = demo.SecretKey }
        local _, err = c:check_eid_token_status { EidToken = "x" }
        assert.equal("InvalidParameterValue.BizTokenIllegal", err.code)
        assert.equal(demo.SecretId, c.provider:get().secret_id)
      end)
    end)

    describe("secrets", function()
      it("never appear in events, errors or tostring", function()
        local lines = {}
        local c = new(s, { token = "SessionTokenValue123", retry = { base = 0.001 },
          logger = function(level, ev)
            lines[#lines + 1] = level
            for k, v in pairs(ev) do lines[#lines + 1] = k .. "=" .. tostring(v) end
          end })
        simctl.faults(s, { { Action = "*", Kind = "throttle", First = 1 } })
        capture(c:get_eid_token { MerchantId = demo.MerchantId, Name = NAME, IdCard = IDCARD })
        capture(c:get_eid_result { EidToken = "x" })
        capture(c:call("Nope", { Name = NAME, IdCard = IDCARD }))
        capture(tostring(c))
        for _, l in ipairs(lines) do captured[#captured + 1] = l end
        local all = table.concat(captured, "\n")
        assert.is_true(#captured > 20)
        for _, secret in ipairs { demo.SecretKey, "SessionTokenValue123", "TC3-HMAC-SHA256",
          "Authorization", "Signature=", NAME, IDCARD, "EidInfo" } do
          assert.is_nil(all:find(secret, 1, true), secret)
        end
      end)
    end)
  end)
end
