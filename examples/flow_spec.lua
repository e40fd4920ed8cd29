-- luacheck: std +busted
-- The merchant's verification service (examples/flow.lua with the policy in
-- examples/policy.lua), tested against the simulator with eidkit.testing.
-- Run: busted examples/flow_spec.lua (with eidkit on the module paths), or
--      busted --lua=build/eidkit examples/flow_spec.lua
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
package.path = here .. "/?.lua;" .. package.path

local testing = require "eidkit.testing"
local service_mod = require "flow"
local policy = require "policy"

describe("the verification service", function()
  local sim, svc, ledger
  local user = { id = "user-42", name = "张三", id_card = "11010519491231002X" }

  setup(function()
    sim = testing.sim { now = 1700000000 } -- frozen: every time below is exact
  end)
  teardown(function() sim:stop() end)

  before_each(function()
    ledger = sim:ledger()
    svc = service_mod.new { flow = sim:flow { policy = policy, ledger = ledger } }
  end)

  it("issues a token bound to the user, stored before it is handed out", function()
    local started = assert(svc:begin(user))
    assert.equal(1700000000 + sim.token_ttl, started.expires_at)
    local rec = assert(ledger:get(started.EidToken))
    assert.same({ "user-42", "issued", 1700000000 }, { rec.subject, rec.state, rec.created_at })
    assert.equal(sim.url .. "/sim/h5?token=" .. started.EidToken, started.Url)
  end)

  it("pass: verified, billable, and the token is consumed once", function()
    local started = assert(svc:begin(user))
    sim:pass(started.EidToken)
    local outcome, message = svc:complete(user, started.EidToken)
    assert.same({ "passed", 0, true }, { outcome.status, outcome.code, outcome.billable })
    assert.equal("Verified.", message)
    assert.equal("consumed", ledger:get(started.EidToken).state)
    assert.same(outcome, (svc:complete(user, started.EidToken))) -- a second call: same answer
  end)

  it("fail(2016): identity rejected, no retry with a new token", function()
    local started = assert(svc:begin(user))
    sim:fail(started.EidToken, 2016)
    local outcome, message = svc:complete(user, started.EidToken)
    assert.same({ "failed", 2016, "identity_rejected", false },
      { outcome.status, outcome.code, outcome.reason, outcome.retry_with_new_token })
    assert.matches("visit a branch", message)
  end)

  it("a retryable code (1001): try again, until the policy's limit of three attempts", function()
    local started = assert(svc:begin(user))
    sim:fail(started.EidToken, 1001)
    local outcome = svc:complete(user, started.EidToken)
    assert.same({ "failed", "user_retry", true },
      { outcome.status, outcome.reason, outcome.retry_with_new_token })

    local again = assert(svc:begin(user))
    for _ = 1, 3 do sim:fail(again.EidToken, 1001) end
    outcome = svc:complete(user, again.EidToken)
    assert.same({ "too_many_retries", false, 3 },
      { outcome.reason, outcome.retry_with_new_token, outcome.attempts })
  end)

  it("abandon: the sweep finds the token expired; finish says so; three days on, abandoned", function()
    local started = assert(svc:begin(user))
    sim:abandon(started.EidToken) -- the clock moves past the lifetime
    assert.equal(1700000000 + sim.token_ttl + 1, sim:now())
    local recorded = svc:sweep()
    assert.equal(1, recorded)
    local rec = ledger:get(started.EidToken)
    -- Tencent's ErrCode 15 is the verdict: the sweep closed the token once.
    assert.same({ "consumed", 15, 1 }, { rec.state, rec.ErrCode, rec.pulls })
    local outcome = svc:complete(user, started.EidToken)
    assert.same({ "expired", 15, true }, { outcome.status, outcome.code, outcome.retry_with_new_token })

    local other = assert(svc:begin(user)) -- never opened, never pulled
    sim:advance(3 * 86400)
    assert(ledger:expire())
    assert.equal("abandoned", ledger:get(other.EidToken).state)
  end)

  it("refuses a token issued to another user", function()
    local started = assert(svc:begin(user))
    sim:pass(started.EidToken)
    local outcome, err = svc:complete({ id = "user-43" }, started.EidToken)
    assert.is_nil(outcome)
    assert.equal("wrong_subject", err.code)
  end)

  it("alerts through on_outcome when the integration is wrong (ErrCode 203)", function()
    local started = assert(svc:begin(user))
    sim:fail(started.EidToken, 203)
    local outcome, err = svc:complete(user, started.EidToken)
    assert.is_nil(outcome)
    assert.same({ "policy", "on_outcome" }, { err.code, err.hook })
    assert.matches("eID integration problem: ErrCode 203", err.message)
  end)

  it("pulls the text result only (the policy's InfoType): no images", function()
    local c = sim:client()
    local pulled = {}
    local get = c.get_eid_result
    c.get_eid_result = function(self, p)
      local res, err = get(self, p)
      pulled[#pulled + 1] = { p.InfoType, res and res.IdCardData }
      return res, err
    end
    local s2 = service_mod.new { flow = sim:flow { policy = policy, client = c } }
    local started = assert(s2:begin(user))
    sim:pass(started.EidToken)
    assert.equal("passed", s2:complete(user, started.EidToken).status)
    assert.equal("1", pulled[1][1])
    assert.is_true(pulled[1][2] == nil or pulled[1][2] == require("cjson").null)
  end)

  it("recognises the return from the eID mini-program in onShow", function()
    local flow = sim:flow { policy = policy }
    local ref = { appId = "wx0e2cb0b052a91c92" }
    assert.is_true(flow:on_show { scene = 1038, referrerInfo = ref })
    assert.is_true(flow:on_show { scene = "1037", referrerInfo = ref })
    assert.is_false(flow:on_show { scene = 1037, referrerInfo = { appId = "wxother" } })
    assert.is_false(flow:on_show { scene = 1001 })
  end)
end)
