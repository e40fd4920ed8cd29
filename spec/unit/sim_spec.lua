-- The simulator's behaviour, driven in-process: every documented error
-- path, the token lifecycle and the fault plans. Requests are signed with
-- eidkit's own signer; the Node SDK conformance spec covers a client we did
-- not write, and spec/integration/sim_http_spec.lua the HTTP transport.
local core = require "eidkit.core"
local cjson = require "cjson"
local sim_mod = require "eidkit.sim"
local faults = require "eidkit.sim.faults"
local control = require "eidkit.sim.control"
local S = require "support.simcall"

local demo = sim_mod.demo
local null = cjson.null

local function new_sim(opts)
  opts = opts or {}
  opts.seed = opts.seed or 42
  opts.base_url = opts.base_url or "http://127.0.0.1:8790"
  return sim_mod.new(opts)
end

local function merchant(extra)
  local p = { MerchantId = demo.MerchantId }
  for k, v in pairs(extra or {}) do p[k] = v end
  return p
end

describe("sim envelope", function()
  it("answers HTTP 200 JSON with a RequestId and a Date from the simulated clock", function()
    local sim = new_sim { clock_offset = -86400 * 365 }
    -- the clock read on both sides: the call may cross a second's edge
    local before = os.date("!%a, %d %b %Y %H:%M:%S GMT", sim:now())
    local r, resp = S.call(sim, "CheckEidTokenStatus", { EidToken = "x" })
    local after = os.date("!%a, %d %b %Y %H:%M:%S GMT", sim:now())
    assert.equal(200, resp.status)
    assert.equal("application/json", resp.headers["Content-Type"])
    assert.matches("^%x+%-%x+%-4%x+%-[89ab]%x+%-%x+$", r.RequestId)
    assert.is_true(resp.headers.Date == before or resp.headers.Date == after,
      resp.headers.Date .. " is neither " .. before .. " nor " .. after)
    assert.equal("InvalidParameterValue.BizTokenIllegal", r.Error.Code)
  end)

  it("gives each response its own RequestId, replayable with a seed", function()
    local a, b = new_sim { seed = 9 }, new_sim { seed = 9 }
    local ra = S.call(a, "CheckEidTokenStatus", { EidToken = "x" })
    local ra2 = S.call(a, "CheckEidTokenStatus", { EidToken = "x" })
    local rb = S.call(b, "CheckEidTokenStatus", { EidToken = "x" })
    assert.are_not.equal(ra.RequestId, ra2.RequestId)
    assert.equal(ra.RequestId, rb.RequestId)
  end)

  it("logs a line per request unless log_requests is false, and internal errors either way", function()
    for _, quiet in ipairs { false, true } do
      local lines = {}
      local sim = new_sim { log = function(l) lines[#lines + 1] = l end, log_requests = not quiet }
      S.call(sim, "CheckEidTokenStatus", { EidToken = "x" })
      sim.api_with_faults = function() error("boom") end
      sim:handle(S.request(sim, "CheckEidTokenStatus", { EidToken = "x" }))
      local want = { "internal error: " }
      if not quiet then
        want = { "POST / CheckEidTokenStatus 200", "internal error: " }
      end
      assert.equals(#want, #lines)
      for i, w in ipairs(want) do assert.equals(w, lines[i]:sub(1, #w)) end
    end
  end)

  it("answers 404 JSON for paths that are neither the API nor /sim/", function()
    local status, body = S.control(new_sim(), "GET", "/nope")
    assert.equal(404, status)
    assert.equal("NotFound", body.Error.Code)
  end)
end)

describe("sim signature checks", function()
  local sim
  before_each(function() sim = new_sim() end)

  it("accepts a request signed with eidkit's signer", function()
    assert.is_nil((S.code(sim, "GetEidToken", merchant())))
  end)

  it("refuses a missing Authorization: AuthFailure.InvalidAuthorization", function()
    assert.equal("AuthFailure.InvalidAuthorization",
      (S.code(sim, "GetEidToken", merchant(), { drop = { "authorization" } })))
  end)

  it("refuses a garbled Authorization: AuthFailure.InvalidAuthorization naming the part", function()
    local code, r = S.code(sim, "GetEidToken", merchant(),
      { headers = { Authorization = "TC3-HMAC-SHA256 Credential=abc" } })
    assert.equal("AuthFailure.InvalidAuthorization", code)
    assert.matches("Credential", r.Error.Message)
  end)

  it("refuses an unknown SecretId: AuthFailure.SecretIdNotFound", function()
    assert.equal("AuthFailure.SecretIdNotFound",
      (S.code(sim, "GetEidToken", merchant(), { secret_id = "AKIDunknown" })))
  end)

  it("refuses a wrong SecretKey: AuthFailure.SignatureFailure, never echoing secrets", function()
    local code, r = S.code(sim, "GetEidToken", merchant(), { secret_key = "wrong-key" })
    assert.equal("AuthFailure.SignatureFailure", code)
    assert.is_nil(r.Error.Message:find(demo.SecretKey, 1, true))
  end)

  it("refuses a body changed after signing", function()
    local body = cjson.encode(merchant())
    assert.equal("AuthFailure.SignatureFailure", (S.code(sim, "GetEidToken", nil,
      { body = body .. " ", sign_body = body })))
  end)

  it("refuses a timestamp more than 300 s from its clock: AuthFailure.SignatureExpire", function()
    local now = sim:now()
    assert.equal("AuthFailure.SignatureExpire",
      (S.code(sim, "GetEidToken", merchant(), { timestamp = now - 301 })))
    assert.equal("AuthFailure.SignatureExpire",
      (S.code(sim, "GetEidToken", merchant(), { timestamp = now + 301 })))
    assert.is_nil((S.code(sim, "GetEidToken", merchant(), { timestamp = now - 290 })))
    assert.is_nil((S.code(sim, "GetEidToken", merchant(), { timestamp = now + 290 })))
  end)

  it("checks the timestamp against its own clock, which can be moved", function()
    local real = os.time()
    S.control(sim, "POST", "/sim/clock", { Advance = 3600 })
    assert.equal("AuthFailure.SignatureExpire",
      (S.code(sim, "GetEidToken", merchant(), { timestamp = real })))
    assert.is_nil((S.code(sim, "GetEidToken", merchant(), { timestamp = real + 3600 })))
  end)

  it("refuses a malformed X-TC-Timestamp and a missing one", function()
    assert.equal("InvalidParameter",
      (S.code(sim, "GetEidToken", merchant(), { headers = { ["X-TC-Timestamp"] = "12ab" } })))
    assert.equal("MissingParameter",
      (S.code(sim, "GetEidToken", merchant(), { drop = { "x-tc-timestamp" } })))
  end)

  it("refuses a wrong X-TC-Version with NoSuchVersion, a missing one with MissingParameter", function()
    assert.equal("NoSuchVersion", (S.code(sim, "GetEidToken", merchant(), { version = "2017-03-12" })))
    assert.equal("MissingParameter",
      (S.code(sim, "GetEidToken", merchant(), { drop = { "x-tc-version" } })))
  end)

  it("refuses an unknown action with InvalidAction, a missing one with MissingParameter", function()
    assert.equal("InvalidAction", (S.code(sim, "DescribeInstances", {})))
    assert.equal("MissingParameter",
      (S.code(sim, "GetEidToken", merchant(), { drop = { "x-tc-action" } })))
  end)

  it("checks X-TC-Token for temporary credentials: AuthFailure.TokenFailure", function()
    local s = new_sim { credentials = { { SecretId = "AKIDtemp", SecretKey = "tempkey", Token = "sts-token-1" } },
      merchants = { demo.MerchantId } }
    local creds = { secret_id = "AKIDtemp", secret_key = "tempkey" }
    assert.equal("AuthFailure.TokenFailure", (S.code(s, "GetEidToken", merchant(), creds)))
    creds.token = "sts-token-2"
    assert.equal("AuthFailure.TokenFailure", (S.code(s, "GetEidToken", merchant(), creds)))
    creds.token = "sts-token-1"
    assert.is_nil((S.code(s, "GetEidToken", merchant(), creds)))
  end)

  it("recomputes the signature for whatever SignedHeaders the client chose", function()
    assert.is_nil((S.code(sim, "GetEidToken", merchant(),
      { signed_headers = { "content-type", "host", "x-tc-action", "x-tc-timestamp", "x-tc-version" } })))
    -- A signed header changed in transit breaks it.
    local now = sim:now()
    assert.equal("AuthFailure.SignatureFailure", (S.code(sim, "GetEidToken", merchant(),
      { signed_headers = { "content-type", "host", "x-tc-timestamp" }, timestamp = now,
        headers = { ["X-TC-Timestamp"] = tostring(now + 1) } })))
  end)

  it("accepts header values signed as sent (not lower-cased) as well as lower-cased", function()
    -- Build an Authorization by hand over "x-tc-action:GetEidToken".
    local body = cjson.encode(merchant())
    local req = S.request(sim, "GetEidToken", nil, { body = body })
    local ts = req.headers["x-tc-timestamp"]
    local date = core.utc_date(tonumber(ts))
    local sig = assert(core.compute {
      secret_key = demo.SecretKey, date = date, service = "faceid", timestamp = ts,
      signed_headers = "content-type;host;x-tc-action",
      values = { "application/json", S.HOST, "GetEidToken" }, lower_values = false, body = body })
    req.headers.authorization = ("TC3-HMAC-SHA256 Credential=%s/%s/faceid/tc3_request, "
      .. "SignedHeaders=content-type;host;x-tc-action, Signature=%s"):format(demo.SecretId, date, sig)
    local r = cjson.decode(sim:handle(req).body).Response
    assert.is_nil(r.Error)
    assert.truthy(r.EidToken)
  end)

  it("accepts the host signed without its port, as the official SDKs do", function()
    assert.is_nil((S.code(sim, "GetEidToken", merchant(), { sign_host = "127.0.0.1",
      host = "127.0.0.1:8790" })))
    assert.equal("AuthFailure.SignatureFailure", (S.code(sim, "GetEidToken", merchant(),
      { sign_host = "127.0.0.2", host = "127.0.0.1:8790" })))
  end)

  it("accepts the service the SDKs derive from the endpoint's first label", function()
    assert.is_nil((S.code(sim, "GetEidToken", merchant(), { service = "127" })))
    -- The Node SDK given endpoint localhost:8790 puts "localhost:8790" in
    -- the scope, which eidkit's signer refuses to produce: sign by hand.
    local body = cjson.encode(merchant())
    local req = S.request(sim, "GetEidToken", nil, { body = body, host = "localhost:8790" })
    local ts = req.headers["x-tc-timestamp"]
    local date = core.utc_date(tonumber(ts))
    local sig = assert(core.compute {
      secret_key = demo.SecretKey, date = date, service = "localhost:8790", timestamp = ts,
      signed_headers = "content-type;host", values = { "application/json", "localhost" },
      body = body })
    req.headers.authorization = ("TC3-HMAC-SHA256 Credential=%s/%s/localhost:8790/tc3_request, "
      .. "SignedHeaders=content-type;host, Signature=%s"):format(demo.SecretId, date, sig)
    assert.is_nil(cjson.decode(sim:handle(req).body).Response.Error)
    assert.equal("AuthFailure.SignatureFailure", (S.code(sim, "GetEidToken", merchant(), { service = "cvm" })))
  end)

  it("refuses a credential date that is not the timestamp's UTC date", function()
    local req = S.request(sim, "GetEidToken", merchant())
    req.headers.authorization = req.headers.authorization:gsub("/(%d%d%d%d%-%d%d%-%d%d)/", "/2001-01-01/")
    local r = cjson.decode(sim:handle(req).body).Response
    assert.equal("AuthFailure.SignatureFailure", r.Error.Code)
    assert.matches("UTC date", r.Error.Message)
  end)

  it("refuses methods other than POST, non-JSON bodies and other content types", function()
    assert.equal("UnsupportedProtocol", (S.code(sim, "GetEidToken", merchant(), { method = "GET" })))
    assert.equal("InvalidParameter", (S.code(sim, "GetEidToken", nil, { body = "{nope" })))
    assert.equal("InvalidParameter", (S.code(sim, "GetEidToken", nil, { body = "[1,2]" })))
    assert.equal("InvalidParameter", (S.code(sim, "GetEidToken", nil, { body = '"text"' })))
  end)
end)

describe("GetEidToken", function()
  local sim
  before_each(function() sim = new_sim() end)

  local function code(p) return (S.code(sim, "GetEidToken", p)) end

  it("returns an EidToken the mini-program SDK accepts and an H5 Url on the simulator", function()
    local r = S.call(sim, "GetEidToken", merchant { Name = "韦小宝", IdCard = "11204416541220243X",
      Extra = "order-1", Config = { InputType = "4" } })
    assert.matches("^[a-zA-Z0-9-]+$", r.EidToken)
    assert.equal(36, #r.EidToken)
    assert.equal("http://127.0.0.1:8790/sim/h5?token=" .. r.EidToken, r.Url)
  end)

  it("requires a registered MerchantId", function()
    assert.equal("MissingParameter", code {})
    assert.equal("InvalidParameterValue", code { MerchantId = "0NSJ-someone-else" })
    assert.equal("InvalidParameter", code { MerchantId = 12 })
  end)

  it("checks IdCard: letters and digits, at most 32", function()
    assert.equal("InvalidParameterValue", code(merchant { Name = "张三", IdCard = "1120-4416" }))
    assert.equal("InvalidParameterValue", code(merchant { Name = "张三", IdCard = ("1"):rep(33) }))
    assert.is_nil(code(merchant { Name = "张三", IdCard = ("1"):rep(32) }))
  end)

  it("checks Name: at most 32 UTF-8 characters, valid UTF-8", function()
    assert.is_nil(code(merchant { Name = ("韦"):rep(32), IdCard = "1" }))
    assert.equal("InvalidParameterValue", code(merchant { Name = ("韦"):rep(33), IdCard = "1" }))
    assert.equal("InvalidParameterValue", code(merchant { Name = "\xff\xfe", IdCard = "1" }))
  end)

  it("wants Name and IdCard together, and both for InputType 4", function()
    assert.equal("MissingParameter", code(merchant { Name = "张三" }))
    assert.equal("MissingParameter", code(merchant { Config = { InputType = "4" } }))
    assert.is_nil(code(merchant { Config = { InputType = "3" } }))
  end)

  it("checks Extra and RedirectUrl lengths, and that RedirectUrl is http(s)", function()
    assert.is_nil(code(merchant { Extra = ("x"):rep(1024) }))
    assert.equal("InvalidParameterValue", code(merchant { Extra = ("x"):rep(1025) }))
    local long = "https://example.com/" .. ("a"):rep(1004)
    assert.is_nil(code(merchant { RedirectUrl = long }))
    assert.equal("InvalidParameterValue", code(merchant { RedirectUrl = long .. "a" }))
    assert.equal("InvalidParameterValue", code(merchant { RedirectUrl = "ftp://example.com/" }))
  end)

  it("checks Config enums, types and limits", function()
    assert.equal("InvalidParameterValue", code(merchant { Config = { InputType = "9" } }))
    assert.equal("InvalidParameter", code(merchant { Config = { InputType = 1 } }))
    assert.equal("InvalidParameter", code(merchant { Config = { UseIntentionVerify = "yes" } }))
    assert.equal("InvalidParameterValue", code(merchant { Config = { IntentionMode = "4" } }))
    assert.equal("InvalidParameterValue", code(merchant { Config = { Speed = 4 } }))
    assert.equal("InvalidParameter", code(merchant { Config = { Speed = 1.5 } }))
    assert.equal("InvalidParameterValue", code(merchant { Config = { IntentionVerifyText = ("字"):rep(121) } }))
    assert.equal("UnknownParameter", code(merchant { Config = { CompareLib = "x" } }))
    assert.equal("UnknownParameter", code(merchant { SubType = "x" }))
  end)

  it("checks intention rounds", function()
    local q = { Question = "是否本人操作？", Answers = { "是" } }
    local eleven = {}
    for i = 1, 11 do eleven[i] = q end
    assert.is_nil(code(merchant { Config = { UseIntentionVerify = true, IntentionMode = "2",
      IntentionQuestions = { q } } }))
    assert.equal("InvalidParameterValue", code(merchant { Config = { UseIntentionVerify = true,
      IntentionMode = "2" } }))
    assert.equal("InvalidParameterValue", code(merchant { Config = { IntentionQuestions = eleven } }))
    assert.equal("InvalidParameterValue", code(merchant { Config = { IntentionQuestions = {
      { Question = "q", Answers = { ("长"):rep(11) } } } } }))
    assert.equal("InvalidParameterValue", code(merchant { Config = { IntentionActions = {
      { Text = ("t"):rep(251) } } } }))
    assert.equal("InvalidParameterValue", code(merchant { Config = { UseIntentionVerify = true } }))
  end)

  it("checks the Encryption block's shape", function()
    local enc = { EncryptList = { "Name", "IdCard" }, CiphertextBlob = "blob", Iv = "aXY=" }
    -- Encrypted values are not checked as plain text.
    assert.is_nil(code(merchant { Name = "bm90IHBsYWlu+/==", IdCard = "Y2lwaGVy+/==", Encryption = enc }))
    assert.equal("InvalidParameter.UnsupportEncryptField", code(merchant { Encryption = {
      EncryptList = { "Mobile" }, CiphertextBlob = "b", Iv = "i" } }))
    assert.equal("MissingParameter", code(merchant { Encryption = { EncryptList = { "Name" }, Iv = "i" } }))
    assert.equal("InvalidParameterValue", code(merchant { Encryption = { EncryptList = { "Name" },
      CiphertextBlob = "b", Iv = "i", Algorithm = "DES" } }))
    assert.equal("InvalidParameter", code(merchant { Encryption = { EncryptList = { "Name" },
      CiphertextBlob = "b", Iv = "i", Algorithm = "SM4-GCM" } }))
    assert.equal("InvalidParameterValue", code(merchant { Encryption = { EncryptList = { "Name" },
      CiphertextBlob = "b", Iv = "i", Algorithm = "SM4-GCM", TagList = { "a", "b" } } }))
  end)

  it("treats JSON nulls as absent fields", function()
    assert.is_nil(code(merchant { Extra = null, Config = { InputType = null } }))
  end)

  it("keeps a bounded store: LimitExceeded when full", function()
    local s = new_sim { max_tokens = 2 }
    S.new_token(s)
    S.new_token(s)
    assert.equal("LimitExceeded", (S.code(s, "GetEidToken", merchant())))
  end)

  it("forgets tokens a day after their result window, freeing room", function()
    local s = new_sim { max_tokens = 1 }
    local tok = S.new_token(s)
    S.control(s, "POST", "/sim/clock", { Advance = 3 * 86400 + 10 })
    assert.equal("InvalidParameterValue.BizTokenExpired",
      (S.code(s, "GetEidResult", { EidToken = tok })))
    S.control(s, "POST", "/sim/clock", { Advance = 86400 })
    S.new_token(s)
    assert.equal("InvalidParameterValue.BizTokenIllegal",
      (S.code(s, "GetEidResult", { EidToken = tok })))
  end)
end)

describe("GetEidResult", function()
  local sim
  before_each(function() sim = new_sim() end)

  it("returns null fields before the user finishes", function()
    local tok = S.new_token(sim, { Extra = "o-1" })
    local r = S.call(sim, "GetEidResult", { EidToken = tok })
    assert.is_nil(r.Error)
    for _, f in ipairs { "Text", "IdCardData", "BestFrame", "EidInfo", "IntentionVerifyData" } do
      assert.equal(null, r[f], f)
    end
  end)

  it("reports a pass with one billable LivenessDetail and Extra echoed", function()
    local tok = S.new_token(sim, { Extra = "order-7" })
    assert.equal(200, (S.finish(sim, tok, 0)))
    local t = S.call(sim, "GetEidResult", { EidToken = tok }).Text
    assert.equal(0, t.ErrCode)
    assert.equal(0, t.LiveStatus)
    assert.equal(0, t.Comparestatus)
    assert.equal("order-7", t.Extra)
    assert.equal("string", type(t.Sim))
    assert.equal(1, #t.LivenessDetail)
    assert.is_true(t.LivenessDetail[1].IsNeedCharge)
    assert.equal(0, t.LivenessDetail[1].Errcode)
  end)

  it("keeps one LivenessDetail per attempt; only 0, 2006 and 2016 are billable", function()
    local tok = S.new_token(sim)
    for _, c in ipairs { 1001, 2006, 2016, 2005, 0 } do S.finish(sim, tok, c) end
    local t = S.call(sim, "GetEidResult", { EidToken = tok, InfoType = "1" }).Text
    assert.equal(0, t.ErrCode)
    local charge = {}
    for i, d in ipairs(t.LivenessDetail) do charge[i] = d.IsNeedCharge end
    assert.same({ false, true, true, false, true }, charge)
  end)

  it("answers re-pulls with the latest state (regression: the cached encoding)", function()
    local tok = S.new_token(sim)
    assert.equal(null, S.call(sim, "GetEidResult", { EidToken = tok }).Text)
    S.finish(sim, tok, 1001)
    local a = S.call(sim, "GetEidResult", { EidToken = tok })
    assert.equal(1001, a.Text.ErrCode)
    S.finish(sim, tok, 0)
    local b = S.call(sim, "GetEidResult", { EidToken = tok })
    assert.equal(0, b.Text.ErrCode)
    assert.equal(2, #b.Text.LivenessDetail)
    assert.are_not.equal(a.RequestId, b.RequestId)
    assert.equal(null, S.call(sim, "GetEidResult", { EidToken = tok, InfoType = "3" }).Text)
    local s2 = new_sim { token_ttl = 600 }
    local t2 = S.new_token(s2)
    assert.equal(null, S.call(s2, "GetEidResult", { EidToken = t2 }).Text)
    S.control(s2, "POST", "/sim/clock", { Advance = 600 })
    assert.equal(15, S.call(s2, "GetEidResult", { EidToken = t2 }).Text.ErrCode)
  end)

  it("reports the last attempt's ErrCode with the stage that failed", function()
    local tok = S.new_token(sim)
    S.finish(sim, tok, 1001)
    local t = S.call(sim, "GetEidResult", { EidToken = tok }).Text
    assert.equal(1001, t.ErrCode)
    assert.equal(1001, t.LiveStatus)
    tok = S.new_token(sim)
    S.finish(sim, tok, 2016)
    t = S.call(sim, "GetEidResult", { EidToken = tok }).Text
    assert.equal(2016, t.ErrCode)
    assert.equal(0, t.LiveStatus)
    assert.equal(2016, t.Comparestatus)
  end)

  it("returns only the parts InfoType asks for", function()
    local tok = S.new_token(sim, { Config = { InputType = "1" } })
    S.finish(sim, tok, 0)
    local r = S.call(sim, "GetEidResult", { EidToken = tok, InfoType = "1" })
    assert.equal("table", type(r.Text))
    assert.equal(null, r.IdCardData)
    assert.equal(null, r.BestFrame)
    r = S.call(sim, "GetEidResult", { EidToken = tok, InfoType = "23" })
    assert.equal(null, r.Text)
    assert.matches("^iVBORw0KGgo", r.IdCardData.OcrFront) -- base64 of the PNG signature
    assert.equal(null, r.IdCardData.ProcessedFrontImage)
    assert.equal(null, r.IdCardData.Avatar)
    assert.matches("^iVBORw0KGgo", r.BestFrame.BestFrame)
    r = S.call(sim, "GetEidResult", { EidToken = tok, InfoType = "0", IsCutIdCardImage = true,
      IsNeedIdCardAvatar = true, BestFramesCount = 2 })
    assert.equal("table", type(r.Text))
    assert.matches("^iVBORw0KGgo", r.IdCardData.ProcessedFrontImage)
    assert.matches("^iVBORw0KGgo", r.IdCardData.Avatar)
    assert.equal(2, #r.BestFrame.BestFrames)
  end)

  it("caps BestFramesCount at 3", function()
    local tok = S.new_token(sim)
    S.finish(sim, tok, 0)
    local r = S.call(sim, "GetEidResult", { EidToken = tok, InfoType = "3", BestFramesCount = 9 })
    assert.equal(3, #r.BestFrame.BestFrames)
  end)

  it("refuses bad InfoType and parameter types", function()
    local tok = S.new_token(sim)
    for _, v in ipairs { "4", "", "1a", "01 " } do
      assert.equal("InvalidParameterValue", (S.code(sim, "GetEidResult", { EidToken = tok, InfoType = v })), v)
    end
    assert.equal("InvalidParameter", (S.code(sim, "GetEidResult", { EidToken = tok, InfoType = 0 })))
    assert.equal("InvalidParameter", (S.code(sim, "GetEidResult", { EidToken = tok, BestFramesCount = "1" })))
    assert.equal("InvalidParameterValue", (S.code(sim, "GetEidResult", { EidToken = tok, BestFramesCount = -1 })))
    assert.equal("MissingParameter", (S.code(sim, "GetEidResult", {})))
    assert.equal("UnknownParameter", (S.code(sim, "GetEidResult", { EidToken = tok, Foo = 1 })))
  end)

  it("answers BizTokenIllegal for an unknown token", function()
    assert.equal("InvalidParameterValue.BizTokenIllegal",
      (S.code(sim, "GetEidResult", { EidToken = "CE661F1A-0F1E-45BD-BE13-34C05CEA7681" })))
  end)

  it("keeps results pullable for 3 days, then BizTokenExpired", function()
    local tok = S.new_token(sim)
    S.finish(sim, tok, 0)
    S.control(sim, "POST", "/sim/clock", { Advance = 3 * 86400 - 60 })
    local r = S.call(sim, "GetEidResult", { EidToken = tok, InfoType = "1" })
    assert.equal(0, r.Text.ErrCode)
    S.control(sim, "POST", "/sim/clock", { Advance = 61 })
    assert.equal("InvalidParameterValue.BizTokenExpired", (S.code(sim, "GetEidResult", { EidToken = tok })))
  end)

  it("reports ErrCode 15 for a token whose lifetime ended unfinished", function()
    local s = new_sim { token_ttl = 600 }
    local tok = S.new_token(s)
    S.control(s, "POST", "/sim/clock", { Advance = 601 })
    local t = S.call(s, "GetEidResult", { EidToken = tok }).Text
    assert.equal(15, t.ErrCode)
    assert.equal(null, t.LivenessDetail)
  end)

  describe("intention", function()
    it("is absent without UseIntentionVerify", function()
      local tok = S.new_token(sim)
      S.finish(sim, tok, 0)
      local r = S.call(sim, "GetEidResult", { EidToken = tok })
      assert.is_false(r.IsVerifyIntention)
      assert.equal(null, r.IntentionVerifyData)
    end)

    it("reports read-aloud results (mode 1, InfoType 5)", function()
      local tok = S.new_token(sim, { Config = { UseIntentionVerify = true, IntentionVerifyText = "本人自愿" } })
      S.finish(sim, tok, 0, -3)
      local r = S.call(sim, "GetEidResult", { EidToken = tok, InfoType = "5" })
      assert.is_true(r.IsVerifyIntention)
      assert.equal("2", r.IntentionVerifyType)
      assert.equal(-3, r.IntentionVerifyData.ErrorCode)
      assert.equal(null, r.Text)
    end)

    it("reports Q&A (mode 2) and nod (mode 3) results under InfoType 6", function()
      local q = { Question = "是否本人？", Answers = { "是" } }
      local tok = S.new_token(sim, { Config = { UseIntentionVerify = true, IntentionMode = "2",
        IntentionQuestions = { q } } })
      S.finish(sim, tok, 0)
      local r = S.call(sim, "GetEidResult", { EidToken = tok, InfoType = "6" })
      assert.equal("0", r.IntentionVerifyType)
      assert.equal("0", r.IntentionQuestionResult.FinalResultCode)
      tok = S.new_token(sim, { Config = { UseIntentionVerify = true, IntentionMode = "3",
        IntentionActions = { { Text = "请点头" } } } })
      S.finish(sim, tok, 0, 1)
      r = S.call(sim, "GetEidResult", { EidToken = tok, InfoType = "6" })
      assert.equal("1", r.IntentionVerifyType)
      assert.equal(1, r.IntentionActionResult.FinalResultDetailCode)
    end)
  end)
end)

describe("CheckEidTokenStatus", function()
  local sim
  before_each(function() sim = new_sim { token_ttl = 600 } end)

  local function status(tok)
    local r = S.call(sim, "CheckEidTokenStatus", { EidToken = tok })
    return r.Status or r.Error.Code
  end

  it("walks init -> doing -> finished", function()
    local tok = S.new_token(sim)
    assert.equal("init", status(tok))
    assert.equal(200, (S.control(sim, "POST", "/sim/tokens/" .. tok .. "/start")))
    assert.equal("doing", status(tok))
    S.finish(sim, tok, 2016)
    assert.equal("finished", status(tok))
  end)

  it("says timeout once the lifetime passes unfinished, BizTokenExpired after 3 days", function()
    local tok = S.new_token(sim)
    S.control(sim, "POST", "/sim/clock", { Advance = 600 })
    assert.equal("timeout", status(tok))
    S.control(sim, "POST", "/sim/clock", { Advance = 3 * 86400 })
    assert.equal("InvalidParameterValue.BizTokenExpired", status(tok))
  end)

  it("answers BizTokenIllegal for an unknown token and checks its parameters", function()
    assert.equal("InvalidParameterValue.BizTokenIllegal", status("nope"))
    assert.equal("MissingParameter", (S.code(sim, "CheckEidTokenStatus", {})))
    assert.equal("InvalidParameter", (S.code(sim, "CheckEidTokenStatus", { EidToken = 5 })))
  end)
end)

describe("sim control API", function()
  local sim
  before_each(function() sim = new_sim { token_ttl = 600 } end)

  it("answers 404 JSON for an unknown token", function()
    for _, p in ipairs { "/sim/tokens/nope", "/sim/tokens/nope/start", "/sim/tokens/nope/finish" } do
      local status, body = S.control(sim, p == "/sim/tokens/nope" and "GET" or "POST", p)
      assert.equal(404, status)
      assert.equal("NotFound", body.Error.Code)
    end
  end)

  it("lists tokens and shows one with its attempts", function()
    local status, body = S.control(sim, "GET", "/sim/tokens")
    assert.equal(200, status)
    assert.same({ Tokens = {} }, body)
    local tok = S.new_token(sim)
    S.finish(sim, tok, 1001)
    S.finish(sim, tok, 0, 0)
    status, body = S.control(sim, "GET", "/sim/tokens/" .. tok)
    assert.equal(200, status)
    assert.equal("finished", body.Status)
    assert.equal(2, #body.Attempts)
    assert.equal(1001, body.Attempts[1].ErrCode)
    local _, list = S.control(sim, "GET", "/sim/tokens")
    assert.equal(tok, list.Tokens[1].EidToken)
  end)

  it("finishes from init, refuses after a pass, after the lifetime, and bad codes", function()
    local tok = S.new_token(sim)
    assert.equal(200, (S.finish(sim, tok, 0)))
    local status, body = S.finish(sim, tok, 2016)
    assert.equal(409, status)
    assert.equal("AlreadyPassed", body.Error.Code)
    local late = S.new_token(sim)
    S.control(sim, "POST", "/sim/clock", { Advance = 600 })
    assert.equal(409, (S.finish(sim, late, 0)))
    assert.equal(400, (S.control(sim, "POST", "/sim/tokens/" .. tok .. "/finish", { ErrCode = "0" })))
    assert.equal(400, (S.control(sim, "POST", "/sim/tokens/" .. tok .. "/finish", { ErrCode = 1.5 })))
    assert.equal(405, (S.control(sim, "GET", "/sim/tokens/" .. tok .. "/finish")))
  end)

  it("moves the clock and reports it", function()
    local _, c = S.control(sim, "POST", "/sim/clock", { Now = 1700000000 })
    assert.equal(1700000000, c.Now)
    _, c = S.control(sim, "POST", "/sim/clock", { Advance = 5 })
    assert.equal(1700000005, c.Now)
    assert.equal(400, (S.control(sim, "POST", "/sim/clock", { Now = "soon" })))
    assert.equal(400, (S.control(sim, "POST", "/sim/clock", { Frozen = "yes" })))
  end)

  it("freezes the clock: the same second however long the test runs, until told otherwise", function()
    local _, c = S.control(sim, "POST", "/sim/clock", { Now = 1700000000, Frozen = true })
    assert.same({ 1700000000, true }, { c.Now, c.Frozen })
    core.sleep(1.1) -- a running clock would have ticked by now
    _, c = S.control(sim, "GET", "/sim/clock")
    assert.same({ 1700000000, true }, { c.Now, c.Frozen })
    _, c = S.control(sim, "POST", "/sim/clock", { Advance = 60 }) -- stays frozen
    assert.same({ 1700000060, true }, { c.Now, c.Frozen })
    _, c = S.control(sim, "POST", "/sim/clock", { Frozen = false }) -- runs on from where it stood
    assert.is_false(c.Frozen)
    assert.is_true(c.Now >= 1700000060 and c.Now <= 1700000061)
    assert.equal(200, (S.control(sim, "POST", "/sim/clock", { Now = 1800000000, Frozen = true })))
    _, c = S.control(sim, "POST", "/sim/clock", { Now = 1800000000 }) -- Now alone: running
    assert.is_false(c.Frozen)
  end)

  it("replaces, lists and clears fault rules, refusing bad ones", function()
    local status, body = S.control(sim, "PUT", "/sim/faults",
      { { Action = "GetEidResult", Kind = "throttle", First = 2 } })
    assert.equal(200, status)
    assert.equal("throttle", body.Faults[1].Kind)
    status, body = S.control(sim, "PUT", "/sim/faults", { { Kind = "explode" } })
    assert.equal(400, status)
    assert.matches("Kind", body.Error.Message)
    assert.equal(400, (S.control(sim, "PUT", "/sim/faults", { { Kind = "latency" } })))
    assert.equal(400, (S.control(sim, "PUT", "/sim/faults", { { Kind = "throttle", Rate = 2 } })))
    local _, cleared = S.control(sim, "DELETE", "/sim/faults")
    assert.same({ Faults = {} }, cleared)
  end)

  it("takes the fault rules exactly as docs/SIMULATOR.md shows them", function()
    local f = assert(io.open("docs/SIMULATOR.md", "rb"))
    local doc = f:read("a")
    f:close()
    local body = assert(doc:match("PUT http://127%.0%.0%.1:PORT/sim/faults %-d '(%b[])'"),
      "the PUT /sim/faults example is gone from docs/SIMULATOR.md")
    local status, res = S.control(sim, "PUT", "/sim/faults", require("cjson").decode(body))
    assert.equal(200, status)
    assert.same({
      { Action = "GetEidResult", Kind = "latency", Ms = 200, Jitter = 50 },
      { Action = "GetEidToken", Kind = "reset", First = 1 },
      { Action = "*", Kind = "http", Status = 503, Rate = 0.1 },
    }, res.Faults)
    -- A refused rule names itself and leaves the rules in effect as they were.
    status, res = S.control(sim, "PUT", "/sim/faults", { { Kind = "reset" }, { Kind = "reset", Rate = 2 } })
    assert.equal(400, status)
    assert.equal("rule 2: Rate must be between 0 and 1", res.Error.Message)
    status, res = S.control(sim, "GET", "/sim/faults")
    assert.same({ 200, 3 }, { status, #res.Faults })
    S.control(sim, "DELETE", "/sim/faults")
  end)

  it("resets the token store", function()
    local tok = S.new_token(sim)
    assert.equal(200, (S.control(sim, "POST", "/sim/reset")))
    assert.equal("InvalidParameterValue.BizTokenIllegal", (S.code(sim, "GetEidResult", { EidToken = tok })))
  end)
end)

describe("sim H5 page", function()
  local sim
  before_each(function() sim = new_sim() end)

  local function get(tok)
    return sim:handle { method = "GET", path = "/sim/h5", args = { token = tok }, headers = {}, body = "" }
  end
  local function post(tok, code, in_body)
    local args = { token = tok }
    if not in_body then args.ErrCode = tostring(code) end
    return sim:handle { method = "POST", path = "/sim/h5/finish", args = args, headers = {},
      body = in_body and ("ErrCode=" .. code) or "" }
  end

  it("shows pass and fail buttons and marks the token doing", function()
    local tok = S.new_token(sim)
    local resp = get(tok)
    assert.equal(200, resp.status)
    assert.matches('id="pass"', resp.body)
    assert.matches('id="fail"', resp.body)
    assert.equal("doing", S.call(sim, "CheckEidTokenStatus", { EidToken = tok }).Status)
  end)

  it("redirects to RedirectUrl with token= added, keeping query and fragment", function()
    local tok = S.new_token(sim, { RedirectUrl = "https://shop.example/eid/return?o=1#top" })
    local resp = post(tok, 0)
    assert.equal(302, resp.status)
    assert.equal("https://shop.example/eid/return?o=1&token=" .. tok .. "#top", resp.headers.Location)
    assert.equal(0, S.call(sim, "GetEidResult", { EidToken = tok }).Text.ErrCode)
  end)

  it("records the failure code chosen in the form body", function()
    local tok = S.new_token(sim, { RedirectUrl = "https://shop.example/r" })
    local resp = post(tok, 2016, true)
    assert.equal("https://shop.example/r?token=" .. tok, resp.headers.Location)
    assert.equal(2016, S.call(sim, "GetEidResult", { EidToken = tok }).Text.ErrCode)
  end)

  it("shows a done page without RedirectUrl and 404 for unknown tokens", function()
    local tok = S.new_token(sim)
    local resp = post(tok, 0)
    assert.equal(200, resp.status)
    assert.matches("ErrCode 0", resp.body)
    assert.equal(404, get("nope").status)
  end)

  it("escapes what it echoes into HTML", function()
    local m = "<script>alert(1)</script>"
    local s = new_sim { merchants = { m } }
    local tok = assert(S.call(s, "GetEidToken", { MerchantId = m })).EidToken
    local body = s:handle { method = "GET", path = "/sim/h5", args = { token = tok }, headers = {},
      body = "" }.body
    assert.is_nil(body:find("<script", 1, true))
    assert.truthy(body:find("&lt;script&gt;", 1, true))
  end)

  it("builds redirect URLs as Tencent does", function()
    assert.equal("https://a/b?token=T", control.redirect_url("https://a/b", "T"))
    assert.equal("https://a/b?x=1&token=T", control.redirect_url("https://a/b?x=1", "T"))
    assert.equal("https://a/b?token=T", control.redirect_url("https://a/b?", "T"))
    assert.equal("https://a/b?token=T#f", control.redirect_url("https://a/b#f", "T"))
  end)
end)

describe("sim faults", function()
  local function rules(...) return { ... } end

  it("throttles the first N calls of one action with RequestLimitExceeded", function()
    local sim = new_sim { faults = rules(assert(faults.parse("GetEidResult:throttle:first=2"))) }
    local tok = S.new_token(sim)
    local codes = {}
    for i = 1, 3 do codes[i] = S.code(sim, "GetEidResult", { EidToken = tok }) or "ok" end
    assert.same({ "RequestLimitExceeded", "RequestLimitExceeded", "ok" }, codes)
    assert.is_nil((S.code(sim, "CheckEidTokenStatus", { EidToken = tok })))
  end)

  it("replays the same rate-based faults for the same seed", function()
    local function run(seed)
      local sim = new_sim { seed = seed, faults = rules(assert(faults.parse("*:error:rate=0.5"))) }
      local out = {}
      for i = 1, 40 do out[i] = S.code(sim, "CheckEidTokenStatus", { EidToken = "x" }) end
      return table.concat(out, ",")
    end
    assert.equal(run(5), run(5))
    assert.are_not.equal(run(5), run(6))
    local n = select(2, run(5):gsub("InternalError", ""))
    assert.is_true(n > 8 and n < 32, "about half: " .. n)
  end)

  it("answers injected errors, gateway pages, resets, truncation, bad JSON and slow bodies", function()
    local sim = new_sim()
    local function with(spec)
      sim.faults:set { assert(faults.parse(spec)) }
      return sim:handle(S.request(sim, "CheckEidTokenStatus", { EidToken = "x" }))
    end
    local resp = with("*:error:code=FailedOperation.UnKnown")
    assert.equal("FailedOperation.UnKnown", cjson.decode(resp.body).Response.Error.Code)
    resp = with("CheckEidTokenStatus:http:status=503")
    assert.equal(503, resp.status)
    assert.matches("Service Unavailable", resp.body)
    assert.equal("reset", with("*:reset").fault)
    resp = with("*:truncate")
    assert.equal("truncate", resp.fault)
    assert.truthy(cjson.decode(resp.body)) -- the server, not the body, cuts it short
    resp = with("*:malformed")
    assert.is_false((pcall(cjson.decode, resp.body)))
    resp = with("*:slow:ms=1500")
    assert.equal("slow", resp.fault)
    assert.equal(1500, resp.slow_ms)
  end)

  it("adds latency with seeded jitter, composing with other faults", function()
    local sim = new_sim { faults = rules(assert(faults.parse("*:latency:ms=200,jitter=50")),
      assert(faults.parse("*:throttle:first=1"))) }
    local resp = sim:handle(S.request(sim, "CheckEidTokenStatus", { EidToken = "x" }))
    assert.is_true(resp.delay_ms >= 200 and resp.delay_ms <= 250)
    assert.matches("RequestLimitExceeded", resp.body)
  end)

  it("parses command-line specs and refuses bad ones with the reason", function()
    local r = assert(faults.parse("GetEidToken:http:status=502,rate=0.25"))
    assert.same({ Action = "GetEidToken", Kind = "http", Status = 502, Rate = 0.25 }, r)
    assert.same({ nil, "--fault 'x': expected ACTION:KIND[:key=value,...]" }, { faults.parse("x") })
    assert.matches("unknown parameter", select(2, faults.parse("*:latency:speed=3")))
    assert.matches("not a number", select(2, faults.parse("*:latency:ms=fast")))
    assert.matches("Status", select(2, faults.parse("*:http:status=200")))
  end)

  it("enforces Tencent's per-action QPS when asked", function()
    local t = 1000
    local allow = faults.limiter(faults.tencent_limits, function() return t end)
    local ok = 0
    for _ = 1, 150 do if allow("GetEidResult") then ok = ok + 1 end end
    assert.equal(100, ok)
    assert.is_true(allow("CheckEidTokenStatus"))
    t = 1001
    assert.is_true(allow("GetEidResult"))
    local sim = new_sim { tencent_limits = true }
    local codes = {}
    for i = 1, 101 do codes[i] = S.code(sim, "CheckEidTokenStatus", { EidToken = "x" }) end
    assert.equal("InvalidParameterValue.BizTokenIllegal", codes[101])
  end)
end)

describe("sim options", function()
  it("uses the demo identity only when none is given", function()
    local s = sim_mod.new { seed = 1 }
    assert.is_true(s.using_demo_credential)
    assert.is_true(s.using_demo_merchant)
    s = sim_mod.new { seed = 1, credentials = { { SecretId = "a", SecretKey = "b" } }, merchants = { "m" } }
    assert.is_nil(s.using_demo_credential)
    assert.is_nil(s.credentials[demo.SecretId])
  end)

  it("raises on malformed credentials without echoing the key", function()
    local ok, err = pcall(sim_mod.new, { credentials = { { SecretId = "a", SecretKey = "" } } })
    assert.is_false(ok)
    assert.matches("credentials%[1%]", err)
  end)
end)
