-- eidkit.policy: the default classification, the onShow exclusion rule and
-- merge(), without a simulator.
local policy = require "eidkit.policy"
local cjson = require "cjson"

local null = cjson.null

describe("eidkit.policy", function()
  describe("is_eid_return", function()
    local eid = "wx0e2cb0b052a91c92"
    -- {options, expected, what}
    local cases = {
      { { scene = 1038, path = "pages/index/index", query = {}, shareTicket = nil,
          referrerInfo = { appId = eid, extraData = { verifyDone = true, token = "A1B2" } } }, true,
        "the return from eID with extraData" },
      { { scene = 1038, referrerInfo = { appId = eid } }, true, "the return from eID without extraData" },
      { { scene = "1038", referrerInfo = { appId = eid } }, true, "scene as a string" },
      { { scene = 1038.0, referrerInfo = { appId = eid } }, true, "scene as a float (JSON)" },
      { { scene = 1038, referrerInfo = { appId = "wx1234567890abcdef" } }, false, "another mini-program" },
      { { scene = 1038, referrerInfo = {} }, false, "empty referrerInfo (WeChat's usual)" },
      { { scene = 1038 }, false, "no referrerInfo" },
      { { scene = 1038, referrerInfo = null }, false, "referrerInfo JSON null" },
      { { scene = 1001, path = "pages/index/index", query = {}, referrerInfo = {} }, false, "a normal launch" },
      { { scene = 1037, referrerInfo = { appId = eid } }, false, "another scene from eID" },
      { { scene = "x1038", referrerInfo = { appId = eid } }, false, "a malformed scene" },
      { { referrerInfo = { appId = eid } }, false, "no scene" },
      { cjson.decode('{"scene":1038,"referrerInfo":{"appId":"wx0e2cb0b052a91c92","extraData":{"verifyDone":true}}}'),
        true, "decoded JSON" },
      { nil, false, "nil" }, { "scene=1038", false, "a string" }, { 1038, false, "a number" },
      { null, false, "JSON null" },
    }
    for _, c in ipairs(cases) do
      it(c[3], function() assert.equals(c[2], policy.is_eid_return(c[1])) end)
    end

    it("is the default on_show", function()
      assert.is_true(policy.defaults.on_show { scene = 1038, referrerInfo = { appId = eid } })
      assert.is_false(policy.defaults.on_show {})
    end)
  end)

  describe("default_outcome", function()
    it("is pending without Text or ErrCode", function()
      for _, r in ipairs { {}, { Text = null }, { Text = { ErrCode = null } }, { Text = {} }, "junk" } do
        local o = policy.default_outcome(r)
        assert.same({ "pending", "no_result" }, { o.status, o.reason })
      end
    end)

    it("reads JSON numbers (floats) as integer codes, never ErrMsg", function()
      local o = policy.default_outcome(cjson.decode(
        '{"Text":{"ErrCode":0,"ErrMsg":"failed","LivenessDetail":[{"IsNeedCharge":true}]}}'))
      assert.same({ status = "passed", code = 0, reason = "passed", retry_with_new_token = false,
        billable = true, charges = 1, attempts = 1 }, o)
      assert.equals("integer", math.type(o.code))
      o = policy.default_outcome { Text = { ErrCode = 2016, ErrMsg = "success" } }
      assert.same({ "failed", "identity_rejected" }, { o.status, o.reason })
    end)

    it("is failed and not retryable for unknown codes", function()
      for _, code in ipairs { 4242, -1, 18, 2018 } do
        local o = policy.default_outcome { Text = { ErrCode = code } }
        assert.same({ "failed", "unclassified", false }, { o.status, o.reason, o.retry_with_new_token })
      end
      assert.same(policy.code_group(77), { status = "failed", reason = "unclassified", retry_with_new_token = false })
    end)

    it("counts only IsNeedCharge == true as billable", function()
      local o = policy.default_outcome { Text = { ErrCode = 2006, LivenessDetail = {
        { IsNeedCharge = true }, { IsNeedCharge = false }, { IsNeedCharge = "true" }, { IsNeedCharge = null },
        { IsNeedCharge = true } } } }
      assert.same({ true, 2, 5 }, { o.billable, o.charges, o.attempts })
    end)

    it("needs the intention result named by IntentionVerifyType", function()
      local function r(t, field, body, code)
        local res = { Text = { ErrCode = code or 0 }, IsVerifyIntention = true, IntentionVerifyType = t }
        if field then res[field] = body end
        return res
      end
      local cases = {
        { r("2", "IntentionVerifyData", { ErrorCode = 0 }), "passed", "read_aloud", true },
        { r("2", "IntentionVerifyData", { ErrorCode = -12 }), "failed", "read_aloud", false },
        { r("0", "IntentionQuestionResult", { FinalResultCode = "0", FinalResultDetailCode = 0 }), "passed", "qa", true },
        { r("0", "IntentionQuestionResult", { FinalResultCode = "-1", FinalResultDetailCode = -12 }), "failed", "qa", false },
        { r("1", "IntentionActionResult", { FinalResultDetailCode = 0 }), "passed", "nod", true },
        { r("1", "IntentionActionResult", { FinalResultDetailCode = -12 }), "failed", "nod", false },
        -- the result of another mode does not count
        { r("1", "IntentionVerifyData", { ErrorCode = 0 }), "pending", "nod", nil },
        { r("2", "IntentionVerifyData", null), "pending", "read_aloud", nil },
        { r("9", nil), "pending", "unknown", nil },
      }
      for i, c in ipairs(cases) do
        local o = policy.default_outcome(c[1])
        assert.equals(c[2], o.status, "case " .. i)
        assert.equals(c[3], o.intention.mode, "case " .. i)
        assert.equals(c[4], o.intention.passed, "case " .. i)
      end
      -- An identity failure stays one, whatever the intention says.
      local o = policy.default_outcome(r("2", "IntentionVerifyData", { ErrorCode = 0 }, 2016))
      assert.same({ "failed", "identity_rejected" }, { o.status, o.reason })
      -- Without IsVerifyIntention there is no intention verdict.
      assert.is_nil(policy.default_outcome({ Text = { ErrCode = 0 }, IsVerifyIntention = false }).intention)
    end)
  end)

  describe("merge", function()
    it("fills the defaults and keeps overrides", function()
      local function classify(_, o) return o end
      local p = policy.merge { classify = classify, info_type = "1" }
      assert.equals(classify, p.classify)
      assert.equals("1", p.info_type)
      assert.equals(policy.defaults.on_outcome, p.on_outcome)
      assert.is_false(p.keep_result)
      assert.equals(p, policy.merge(p))
      assert.equals("156", policy.merge().info_type)
      local callable = setmetatable({}, { __call = function() return true end })
      assert.equals(callable, policy.merge({ on_show = callable }).on_show)
    end)

    it("raises on unknown keys and wrong kinds", function()
      assert.has_error(function() policy.merge { on_outcom = function() end } end,
        "bad argument #1 to 'merge' (unknown policy key 'on_outcom')")
      assert.has_error(function() policy.merge { classify = true } end,
        "bad argument #1 to 'merge' (classify: expected a function, got boolean)")
      assert.has_error(function() policy.merge { info_type = "text" } end,
        "bad argument #1 to 'merge' (info_type: expected digits (e.g. \"156\") or a function, got string)")
      assert.has_error(function() policy.merge { keep_result = 1 } end,
        "bad argument #1 to 'merge' (keep_result: expected a boolean, got number)")
      assert.has_error(function() policy.merge(5) end,
        "bad argument #1 to 'merge' (expected a table of policy hooks)")
    end)

    it("has safe defaults: refuse authorize, drop subjects from events", function()
      local ok, why = policy.defaults.authorize { headers = { ["X-User"] = "admin" } }
      assert.is_false(ok)
      assert.is_string(why)
      local ev = { event = "x", subject = "user-1", EidToken = "t" }
      assert.same({ event = "x", EidToken = "t" }, policy.defaults.redact(ev))
      assert.equals("user-1", ev.subject) -- the event itself is left alone
      assert.is_nil(policy.defaults.retry({ code = "timeout" }, 1))
    end)
  end)
end)
