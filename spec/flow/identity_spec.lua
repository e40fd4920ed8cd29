-- eidkit.flow{eidinfo_key = ...}: finish decrypts EidInfo (the simulator
-- started with --eidinfo-public-key) and hands the identity to the policy
-- only: classify's third argument and on_outcome's outcome.identity, never
-- the outcome finish returns, the logger's events or errors. finish's
-- expect turns a pass for someone else into failed / identity_mismatch.
local flowenv = require "support.flowenv"
local flow_mod = require "eidkit.flow"
local cjson = require "cjson"

local NAME, IDCARD, demo = flowenv.NAME, flowenv.IDCARD, flowenv.demo
local F = "spec/fixtures/crypto/"

describe("eidkit.flow with eidinfo_key", function()
  local env
  lazy_setup(function()
    env = flowenv.new { sim_args = { "--seed", "23", "--eidinfo-public-key", F .. "sm2_pub.pem" } }
  end)
  lazy_teardown(function() if env then env:close() end end)

  local function flow(extra)
    local seen = { classify = {}, on_outcome = {} }
    local opts = { eidinfo_key = F .. "sm2_sec1.pem", policy = {
      classify = function(_, default, id)
        seen.classify[#seen.classify + 1] = id or false
        return default
      end,
      on_outcome = function(o) seen.on_outcome[#seen.on_outcome + 1] = o end,
    } }
    for k, v in pairs(extra or {}) do opts[k] = v end
    local f = env:flow(opts)
    f.seen = seen
    return f
  end

  it("gives classify and on_outcome the identity, and nothing else sees it", function()
    local f = flow()
    local st = env:start(f, "user-1", { Config = { InputType = "4" } })
    env:finish_user(st.EidToken, { ErrCode = 0 })
    local out = assert(f.flow:finish { subject = "user-1", EidToken = st.EidToken })
    assert.equal("passed", out.status)
    assert.is_nil(out.identity)
    local id = f.seen.classify[#f.seen.classify]
    assert.equal(NAME, id.name)
    assert.equal(IDCARD, id.idnum)
    assert.equal("01", id.idtype)
    assert.equal(IDCARD, f.seen.on_outcome[1].identity.idnum)
    local logged = cjson.encode(f.events)
    assert.is_nil(logged:find(IDCARD, 1, true))
    assert.is_nil(logged:find(NAME, 1, true))
  end)

  it("expect: the same identity passes; another is failed / identity_mismatch", function()
    local f = flow()
    local a = env:start(f, "user-2", { Config = { InputType = "4" } })
    env:finish_user(a.EidToken, { ErrCode = 0 })
    local ok = assert(f.flow:finish { subject = "user-2", EidToken = a.EidToken,
      expect = { name = NAME, idnum = IDCARD:lower() } })
    assert.equal("passed", ok.status)
    local b = env:start(f, "user-3", { Config = { InputType = "4" } })
    env:finish_user(b.EidToken, { ErrCode = 0 })
    local bad = assert(f.flow:finish { subject = "user-3", EidToken = b.EidToken,
      expect = { idnum = "110101199003070000" } })
    assert.equal("failed", bad.status)
    assert.equal("identity_mismatch", bad.reason)
    assert.equal("consumed", f.ledger:get(b.EidToken).state) -- settled: a verdict, not a retry
    local text = cjson.encode(bad) .. cjson.encode(f.events)
    assert.is_nil(text:find(IDCARD, 1, true))
    assert.is_nil(text:find("110101199003070000", 1, true))
  end)

  it("a key that does not open EidInfo: identity_unverified when an identity is expected", function()
    local f = flow { eidinfo_key = F .. "sm2_other.pem" }
    local st = env:start(f, "user-4", { Config = { InputType = "4" } })
    env:finish_user(st.EidToken, { ErrCode = 0 })
    local out = assert(f.flow:finish { subject = "user-4", EidToken = st.EidToken,
      expect = { idnum = IDCARD } })
    assert.equal("failed", out.status)
    assert.equal("identity_unverified", out.reason)
    assert.equal(false, f.seen.classify[#f.seen.classify])
  end)

  it("raises on a bad eidinfo_key or expect", function()
    local c, l = env:client(), env:ledger()
    local base = { client = c, ledger = l, merchant_id = demo.MerchantId }
    base.eidinfo_key = F .. "sm2_pub.pem"
    assert.has_error(function() flow_mod.new(base) end,
      "bad option 'eidinfo_key' (expected the merchant's SM2 private key)")
    base.eidinfo_key = F .. "no-such.pem"
    assert.has_error(function() flow_mod.new(base) end)
    local f = flow()
    assert.has_error(function() f.flow:finish { subject = "u", EidToken = "x", expect = 5 } end,
      "bad argument #1 to 'finish' (expect: expected a table with name and/or idnum)")
  end)
end)
