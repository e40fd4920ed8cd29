-- client:batch with every slot on the wire taken while retries wait out
-- their backoff: each call still retries, in time, and the loop neither
-- spins nor forgets a delayed call (regression guard for the loop that
-- skips its walk over queued calls when no retry is waiting).
local client_mod = require "eidkit.client"
local core = require "eidkit.core"
local simproc = require "support.simproc"
local simctl = require "support.simctl"
local demo = require("eidkit.sim").demo

describe("client:batch under backoff with the window full", function()
  local s
  setup(function() s = simproc.start { "--seed", "21" } end)
  teardown(function() simproc.stop(s) end)

  it("retries every throttled call after its backoff and finishes them all", function()
    local c <close> = client_mod.new { endpoint = s.url, secret_id = demo.SecretId,
      secret_key = demo.SecretKey, max_in_flight = 2, deadline = 10,
      retry = { base = 0.05, cap = 0.2, max_attempts = 4 } }
    local tok = assert(c:get_eid_token { MerchantId = demo.MerchantId }).EidToken
    simctl.finish(s, tok, { ErrCode = 0 })
    simctl.faults(s, { { Action = "GetEidResult", Kind = "throttle", First = 6 } })
    local list = {}
    for i = 1, 12 do list[i] = { "GetEidResult", { EidToken = tok, InfoType = "1" } } end
    local sent = c:stats().requests
    local t0 = core.monotonic()
    local results = c:batch(list)
    local took = core.monotonic() - t0
    for i, r in ipairs(results) do
      assert.is_nil(r.err, "call " .. i .. ": " .. tostring(r.err))
      assert.equals(0, math.tointeger(r.res.Text.ErrCode))
    end
    assert.equals(12 + 6, c:stats().requests - sent) -- six throttled, each retried once
    assert.is_true(took < 5, "took " .. took .. " s")
    simctl.clear(s)
  end)
end)
