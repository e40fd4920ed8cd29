-- flow:poll_h5 against a real `eidkit sim`: CheckEidTokenStatus every
-- interval until finished or timeout, network errors injected by the
-- simulator's faults (HTTP 502, TCP reset), a frozen clock and a sleep that
-- only advances it, so the specs take milliseconds.
local flowenv = require "support.flowenv"

describe("flow:poll_h5", function()
  local env, client
  lazy_setup(function()
    env = flowenv.new { sim_args = { "--seed", "23" } }
    -- One attempt per poll, so each poll is one simulator call.
    client = env:client { retry = { max_attempts = 1 } }
  end)
  lazy_teardown(function() if env then env:close() end end)
  after_each(function() if env then env:clear_faults() end end)

  -- A flow on a frozen clock; on_sleep(k) runs at the k-th sleep.
  local function flow(on_sleep, opts)
    local t = 1700000000
    local sleeps = {}
    local o = { client = client, clock = function() return t end,
      sleep = function(s)
        sleeps[#sleeps + 1] = s
        t = t + s
        if on_sleep then on_sleep(#sleeps) end
      end }
    for k, v in pairs(opts or {}) do o[k] = v end
    local f = env:flow(o)
    f.sleeps = sleeps
    return f
  end

  it("polls every second until the user finishes", function()
    local tok
    local f = flow(function(k) if k == 3 then env:finish_user(tok, { ErrCode = 0 }) end end)
    tok = env:start(f, "h5-1").EidToken
    local st = assert(f.flow:poll_h5 { EidToken = tok })
    assert.same({ status = "finished", done = true, polls = 4, network_errors = 0,
      request_id = st.request_id }, st)
    assert.same({ 1, 1, 1 }, f.sleeps)
    assert.equals("passed", assert(f.flow:finish { subject = "h5-1", EidToken = tok }).status)
    assert.equals("poll", f.events[#f.events - 1].event.event)
  end)

  it("keeps the last state through fewer than 3 network errors in a row", function()
    local tok
    local f = flow(function(k)
      -- errors 1-2, a good answer, errors 3-4 (a new run of two), then finished
      if k == 3 then
        env:faults { { Action = "CheckEidTokenStatus", Kind = "http", Status = 502, First = 2 } }
        env:finish_user(tok, { ErrCode = 2016 })
      end
    end)
    tok = env:start(f, "h5-2").EidToken
    env:faults { { Action = "CheckEidTokenStatus", Kind = "http", Status = 502, First = 2 } }
    local st = assert(f.flow:poll_h5 { EidToken = tok, subject = "h5-2", interval = 0.5 })
    assert.same({ "finished", true, 6, 4 }, { st.status, st.done, st.polls, st.network_errors })
    assert.same({ 0.5, 0.5, 0.5, 0.5, 0.5 }, f.sleeps)
  end)

  it("gives up after 3 network errors in a row (HTTP 502)", function()
    local f = flow()
    local tok = env:start(f, "h5-3").EidToken
    env:faults { { Action = "CheckEidTokenStatus", Kind = "http", Status = 502, First = 3 } }
    local st, err = f.flow:poll_h5 { EidToken = tok }
    env:capture(err)
    assert.is_nil(st)
    assert.equals("http_502", err.code)
    assert.equals("CheckEidTokenStatus", err.action)
    assert.matches("^gave up after 3 network errors in a row", err.message)
    assert.equals(2, #f.sleeps)
    assert.equals("poll_gave_up", f.events[#f.events].event.event)
  end)

  it("gives up after 3 connection resets, and not after 2", function()
    local f = flow()
    local tok = env:start(f, "h5-4").EidToken
    env:faults { { Action = "CheckEidTokenStatus", Kind = "reset" } }
    local st, err = f.flow:poll_h5 { EidToken = tok }
    assert.is_nil(st)
    assert.equals("reset", err.code)
    assert.equals(2, #f.sleeps)
    -- libcurl resends once by itself on a reused connection that was reset,
    -- so two rules' worth of resets may be one or two failed polls: never 3.
    env:faults { { Action = "CheckEidTokenStatus", Kind = "reset", First = 2 } }
    env:finish_user(tok, { ErrCode = 0 })
    st = assert(f.flow:poll_h5 { EidToken = tok })
    assert.equals("finished", st.status)
    assert.is_true(st.network_errors >= 1 and st.network_errors <= 2)
  end)

  it("stops at a permanent error at once", function()
    local f = flow()
    local tok = env:start(f, "h5-5").EidToken
    env:faults { { Action = "CheckEidTokenStatus", Kind = "error", Code = "InvalidParameterValue.BizTokenIllegal" } }
    local st, err = f.flow:poll_h5 { EidToken = tok }
    assert.is_nil(st)
    assert.equals("InvalidParameterValue.BizTokenIllegal", err.code)
    assert.equals(0, #f.sleeps)
  end)

  it("returns the last state, not done, when max_wait passes", function()
    local f = flow()
    local tok = env:start(f, "h5-6").EidToken
    local st = assert(f.flow:poll_h5 { EidToken = tok, max_wait = 5 })
    assert.same({ "init", false, 6 }, { st.status, st.done, st.polls })
    -- The H5 page opened: doing.
    assert(require("support.simctl").request(env.sim, "POST", "/sim/tokens/" .. tok .. "/start") == 200)
    st = assert(f.flow:poll_h5 { EidToken = tok, max_wait = 0 })
    assert.same({ "doing", false, 1 }, { st.status, st.done, st.polls })
  end)

  it("ends with timeout when the token's lifetime passes", function()
    local f = flow()
    local tok = env:start(f, "h5-7").EidToken
    env:advance(7201)
    local st = f.flow:poll_h5 { EidToken = tok }
    env:advance(-7201)
    assert.same({ "timeout", true }, { st.status, st.done })
  end)

  it("polls only this merchant's tokens, and only the subject's when given", function()
    local f = flow()
    local tok = env:start(f, "h5-8").EidToken
    local st, err = f.flow:poll_h5 { EidToken = tok, subject = "someone-else" }
    assert.is_nil(st)
    assert.equals("wrong_subject", err.code)
    local other = assert(client:get_eid_token { MerchantId = flowenv.demo.MerchantId })
    st, err = f.flow:poll_h5 { EidToken = other.EidToken }
    assert.is_nil(st)
    assert.equals("unknown_token", err.code)
    assert.has_error(function() f.flow:poll_h5 { EidToken = tok, interval = -1 } end,
      "bad argument #1 to 'poll_h5' (interval: expected 0..60 seconds)")
    assert.has_error(function() f.flow:poll_h5 {} end,
      "bad argument #1 to 'poll_h5' (EidToken: expected string, got nil)")
  end)

  it("sleeps with core.sleep by default", function()
    local f = env:flow { client = client }
    local tok = env:start(f, "h5-9").EidToken
    env:finish_user(tok, { ErrCode = 0 })
    env:faults { { Action = "CheckEidTokenStatus", Kind = "http", Status = 503, First = 1 } }
    local t0 = require("eidkit.core").monotonic()
    local st = assert(f.flow:poll_h5 { EidToken = tok, interval = 0.05 })
    local dt = require("eidkit.core").monotonic() - t0
    assert.same({ "finished", 2, 1 }, { st.status, st.polls, st.network_errors })
    assert.is_true(dt >= 0.05 and dt < 2, "elapsed " .. dt)
  end)

  it("never puts the identity or secrets into errors or events", function()
    for _, s in ipairs(env.captured) do
      for _, secret in ipairs { flowenv.NAME, flowenv.IDCARD, flowenv.demo.SecretKey } do
        assert.is_nil(s:find(secret, 1, true), "leaked in: " .. s)
      end
    end
  end)
end)
