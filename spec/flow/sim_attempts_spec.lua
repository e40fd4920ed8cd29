-- The simulator closer to Tencent (issue 14), through eidkit.flow and a real
-- `eidkit sim`: flow-state codes are no attempts, a Q&A intention answers per
-- question, GetEidResult's image options come from the flow's policy,
-- WarnInfos per attempt, and --attempt-log records every attempt with its
-- Beijing day.
local scratch = require "support.scratch"
local flowenv = require "support.flowenv"
local simctl = require "support.simctl"
local cjson = require "cjson"
local core = require "eidkit.core"

local function read_lines(path)
  local out = {}
  local f = io.open(path)
  if not f then return out end
  for line in f:lines() do out[#out + 1] = cjson.decode(line) end
  f:close()
  return out
end

describe("eidkit sim attempts", function()
  local env, log
  lazy_setup(function()
    log = scratch.file()
    env = flowenv.new { sim_args = { "--seed", "5", "--attempt-log", log } }
  end)
  lazy_teardown(function()
    if env then env:close() end
    os.remove(log)
  end)

  local function summary(tok)
    local status, s = simctl.request(env.sim, "GET", "/sim/tokens/" .. tok)
    assert.equals(200, status)
    return s
  end

  it("adds no LivenessDetail entry and no charge for the flow-state codes 14-17", function()
    for _, code in ipairs { 14, 15, 16, 17 } do
      local f = env:flow { policy = { keep_result = true, info_type = "1" } }
      local st = env:start(f, "fs-" .. code)
      env:finish_user(st.EidToken, { ErrCode = 2016 })
      env:finish_user(st.EidToken, { ErrCode = code })
      local res = assert(f.flow.client:get_eid_result { EidToken = st.EidToken, InfoType = "1" })
      assert.equals(code, res.Text.ErrCode)
      assert.equals(1, #res.Text.LivenessDetail, "ErrCode " .. code)
      assert.equals(2016, res.Text.LivenessDetail[1].Errcode)
      local s = summary(st.EidToken)
      assert.same({ true, false }, { s.Attempts[1].IsNeedCharge, s.Attempts[2].IsNeedCharge })
      assert.is_true(s.Attempts[2].FlowState)
      -- the ledger bills the one liveness attempt
      f.flow:finish { subject = "fs-" .. code, EidToken = st.EidToken }
      assert.equals(1, f.ledger:get(st.EidToken).billable, "ErrCode " .. code)
    end
  end)

  it("answers a Q&A intention of N questions with N ResultCode and AsrResult entries", function()
    local f = env:flow()
    local questions = {}
    for i = 1, 3 do questions[i] = { Question = "Q" .. i .. "?", Answers = { "是" } } end
    local st = env:start(f, "qa", { Config = { InputType = "4", UseIntentionVerify = true,
      IntentionMode = "2", IntentionQuestions = questions } })
    env:finish_user(st.EidToken, { ErrCode = 0 })
    local res = assert(f.flow.client:get_eid_result { EidToken = st.EidToken, InfoType = "6" })
    local q = res.IntentionQuestionResult
    assert.same({ "0", "0", "0" }, q.ResultCode)
    assert.equals(3, #q.AsrResult)
    assert.equals("0", q.FinalResultCode)
  end)

  it("asks for frames and ID-card images through the flow's policy, with each attempt's WarnInfos", function()
    local f = env:flow { policy = { keep_result = true, info_type = "0",
      result_params = { BestFramesCount = 2, IsCutIdCardImage = true, IsNeedIdCardAvatar = true } } }
    local st = env:start(f, "img", { Name = nil, IdCard = nil, Config = { InputType = "1" } })
    env:finish_user(st.EidToken, { ErrCode = 1001, WarnInfos = { -9101 } })
    env:finish_user(st.EidToken, { ErrCode = 0, WarnInfos = { -9103, -9107 }, BackWarnInfos = { -9100 } })
    local o = assert(f.flow:finish { subject = "img", EidToken = st.EidToken })
    assert.equals("passed", o.status)
    local r = o.result
    assert.equals(2, #r.BestFrame.BestFrames)
    assert.is_string(r.IdCardData.ProcessedFrontImage)
    assert.is_string(r.IdCardData.Avatar)
    assert.same({ -9103, -9107 }, r.IdCardData.WarnInfos)
    assert.same({ -9100 }, r.IdCardData.BackWarnInfos)
    -- the defaults ask for none of it
    local g = env:flow { policy = { keep_result = true, info_type = "0" } }
    local st2 = env:start(g, "img2", { Name = nil, IdCard = nil, Config = { InputType = "1" } })
    env:finish_user(st2.EidToken, { ErrCode = 0 })
    r = assert(g.flow:finish { subject = "img2", EidToken = st2.EidToken }).result
    assert.equals(cjson.null, r.BestFrame.BestFrames)
    assert.equals(cjson.null, r.IdCardData.Avatar)
    assert.equals(cjson.null, r.IdCardData.WarnInfos)
  end)

  it("refuses bad result_params naming the field", function()
    assert.has_error(function() env:flow { policy = { result_params = { BestFramesCount = 4 } } } end,
      "bad option 'policy' (result_params: BestFramesCount: expected an integer 0..3)")
    -- A string was let through to a comparison that raised a raw Lua error.
    assert.has_error(function() env:flow { policy = { result_params = { BestFramesCount = "2" } } } end,
      "bad option 'policy' (result_params: BestFramesCount: expected an integer 0..3)")
    assert.has_error(function() env:flow { policy = { result_params = { Foo = 1 } } } end,
      "bad option 'policy' (result_params: unknown field 'Foo' (BestFramesCount, IsCutIdCardImage or IsNeedIdCardAvatar))")
  end)

  it("refuses a WarnInfos that is not a list of integers", function()
    local f = env:flow()
    local st = env:start(f, "warn-bad")
    local status, body = simctl.request(env.sim, "POST", "/sim/tokens/" .. st.EidToken .. "/finish",
      { ErrCode = 0, WarnInfos = { "x" } })
    assert.equals(400, status)
    assert.equals("WarnInfos must be an array of integers", body.Error.Message)
  end)

  it("records every attempt with its Beijing day in --attempt-log", function()
    local f = env:flow()
    -- 15:59:59 UTC is 23:59:59 in Beijing; a second later is the next Beijing day.
    local now = os.time()
    local target = now - now % 86400 + 86400 + 15 * 3600 + 59 * 60 + 59
    -- Set, not advanced: a slow run (valgrind, ASan) must not slip a second.
    local function set_clock(t) assert(simctl.request(env.sim, "POST", "/sim/clock", { Now = t }) == 200) end
    finally(function() set_clock(os.time()) end)
    set_clock(target - 60)
    local st = env:start(f, "day")
    -- The simulator's clock is the wall clock's second plus the offset a set
    -- leaves: set it just after a wall-clock second starts, so the attempt
    -- that follows lands in that second (set late in a second, it slipped
    -- into the next one once in CI).
    core.sleep((1.02 - core.now() % 1) % 1)
    set_clock(target)
    env:finish_user(st.EidToken, { ErrCode = 2016 })
    set_clock(target + 1)
    env:finish_user(st.EidToken, { ErrCode = 17 }) -- a flow state: not logged
    env:finish_user(st.EidToken, { ErrCode = 0 })
    local mine = {}
    for _, a in ipairs(read_lines(log)) do
      if a.EidToken == st.EidToken then mine[#mine + 1] = a end
    end
    assert.equals(2, #mine)
    local d1, d2 = os.date("!%Y-%m-%d", target + 8 * 3600), os.date("!%Y-%m-%d", target + 1 + 8 * 3600)
    assert.are_not.equal(d1, d2)
    assert.same({ 2016, true, d1, tostring(target * 1000) },
      { mine[1].ErrCode, mine[1].IsNeedCharge, mine[1].BeijingDate, mine[1].ReqTime })
    assert.same({ 0, true, d2 }, { mine[2].ErrCode, mine[2].IsNeedCharge, mine[2].BeijingDate })
    assert.is_false(mine[1].UseIntentionVerify)
    local s = summary(st.EidToken)
    assert.same({ mine[1].Seq, mine[2].Seq }, { s.Attempts[1].Seq, s.Attempts[3].Seq })
    -- no identity in the log
    local text = io.open(log):read("a")
    assert.is_nil(text:find(flowenv.NAME, 1, true))
    assert.is_nil(text:find(flowenv.IDCARD, 1, true))
  end)
end)
