-- What GetEidResult returns for a token, built from the attempts the
-- simulated user made (eid-api.md §3.2, §4.3). Field names and types follow
-- the official SDK's models (faceid_models.d.ts).
local core = require "eidkit.core"
local util = require "eidkit.sim.util"

local null = util.null
local format = string.format
local ipairs = ipairs

local _M = {}

-- ErrMsg for the E证通 outcome codes (doc 1007/115318). Descriptive only:
-- clients must branch on ErrCode, so the words here are ours.
local messages = {
  [0] = "success",
  [1] = "wrong call style", [2] = "wrong call style", [3] = "wrong call style",
  [4] = "service error, retry later", [8] = "service error, retry later",
  [10] = "service error, retry later", [12] = "service error, retry later",
  [13] = "service error, retry later",
  [14] = "verification already completed", [15] = "token expired",
  [16] = "retry limit reached", [17] = "flow not finished",
  [201] = "failed to fetch the image from WeChat", [202] = "failed to get the video",
  [203] = "no API permission", [204] = "mini-program not authorised",
  [301] = "ID number differs from the one passed in", [302] = "ID card expired",
  [303] = "scan failed, please re-shoot",
  [1001] = "liveness engine timeout", [1002] = "suspected non-live recording",
  [1003] = "face verification failed", [1004] = "face verification failed",
  [1005] = "face verification failed", [1006] = "certificate database error",
  [1007] = "liveness result not pulled", [1008] = "unstable network",
  [2001] = "compare engine timeout", [2002] = "bad name", [2003] = "bad ID number",
  [2004] = "frame extraction error", [2005] = "identity not found",
  [2006] = "name and ID number do not match", [2007] = "no photo on record",
  [2008] = "no photo on record", [2009] = "record photo resolution too low",
  [2010] = "face not fully visible", [2011] = "not the same person (suspected non-live)",
  [2012] = "multiple faces", [2013] = "face not fully exposed",
  [2014] = "video resolution too low", [2015] = "compare failed",
  [2016] = "not the same person, similarity below threshold",
  [2017] = "authority source upgrading",
}
_M.messages = messages

-- The outcomes billed for E证通 (eid-api.md §4.3, §9: 0, 2006, 2016), from
-- the ErrCode table in C (core/src/errcode.c).
local billable = {}
for _, e in ipairs(core.errcode_table) do
  if e.billed then billable[e.code] = true end
end
_M.billable = billable

-- Flow states, not liveness attempts: finishing with one adds no
-- LivenessDetail entry and no charge (14 already completed, 15 expired, 16
-- retry limit, 17 not finished).
_M.FLOW_STATES = { [14] = true, [15] = true, [16] = true, [17] = true }

-- Tencent bills by Beijing time: UTC+8 all year (no DST since 1991).
_M.BEIJING_OFFSET = 8 * 3600

-- Is the recorded attempt a billed liveness attempt?
function _M.charged(a)
  return not a.flow_state and billable[a.ErrCode] == true
end

function _M.message(code)
  return messages[code] or format("verification failed (%d)", code)
end

-- Small generated PNGs (4x4, one colour each), so clients can decode them.
local png = {
  front = "iVBORw0KGgoAAAANSUhEUgAAAAQAAAAECAIAAAAmkwkpAAAAEElEQVR4nGNwav0CRwzEcQDFEhuxecpXugAAAABJRU5ErkJggg==",
  back = "iVBORw0KGgoAAAANSUhEUgAAAAQAAAAECAIAAAAmkwkpAAAAEElEQVR4nGMwWREMRwzEcQDqsxLxE+NR0AAAAABJRU5ErkJggg==",
  avatar = "iVBORw0KGgoAAAANSUhEUgAAAAQAAAAECAIAAAAmkwkpAAAAEUlEQVR4nGP4vYcVjhiI4wAA4TIbwZ0UoRYAAAAASUVORK5CYII=",
  frame = "iVBORw0KGgoAAAANSUhEUgAAAAQAAAAECAIAAAAmkwkpAAAAEElEQVR4nGN45WwKRwzEcQBK4hYhf4sikgAAAABJRU5ErkJggg==",
  video = "iVBORw0KGgoAAAANSUhEUgAAAAQAAAAECAIAAAAmkwkpAAAADklEQVR4nGOIQgIMxHEAtwMQ4U4xecsAAAAASUVORK5CYII=",
}
_M.png = png

local function stage_codes(code)
  -- Liveness codes fail the first stage; compare codes fail the second
  -- after a passed liveness; anything else is outside both stages.
  if code == 0 then return 0, 0 end
  if code >= 1000 and code < 2000 then return code, null end
  if code >= 2000 and code < 3000 then return 0, code end
  return null, null
end

local function similarity(code)
  if code == 0 then return "95.27" end
  if code == 2016 or code == 2011 then return "41.08" end
  return "0.00"
end

local function ms(t) return format("%d", t * 1000) end

-- An attempt's ReqTime as Tencent writes it: Unix milliseconds, a string.
function _M.req_time(a) return ms(a.time) end

local function detail(a)
  local live, compare = stage_codes(a.ErrCode)
  return {
    ReqTime = ms(a.time), Seq = a.seq, Idcard = null, Name = null,
    Sim = similarity(a.ErrCode), IsNeedCharge = _M.charged(a),
    Errcode = a.ErrCode, Errmsg = _M.message(a.ErrCode),
    Livestatus = live, Livemsg = live == null and null or _M.message(live),
    Comparestatus = compare, Comparemsg = compare == null and null or _M.message(compare),
    CompareLibType = "公安库", LivenessMode = 3,
  }
end

local function text(tok, now)
  local last = tok.attempts[#tok.attempts]
  if not last then
    if now >= tok.expires then
      -- Never finished and the token is past its lifetime: the flow ended
      -- with "token expired" and no liveness attempt to bill.
      return { ErrCode = 15, ErrMsg = _M.message(15), Extra = tok.extra or null,
        LiveStatus = null, LiveMsg = null, Comparestatus = null, Comparemsg = null,
        Sim = null, LivenessDetail = null, UseIDType = 0 }
    end
    return null
  end
  local live, compare = stage_codes(last.ErrCode)
  local details = {}
  for _, a in ipairs(tok.attempts) do
    if not a.flow_state then details[#details + 1] = detail(a) end
  end
  if #details == 0 then details = null end -- only flow states: no liveness attempt
  local ocr = tok.input_type == "1" or tok.input_type == "2"
  return {
    ErrCode = last.ErrCode, ErrMsg = _M.message(last.ErrCode),
    IdCard = null, Name = null, -- returned only encrypted, in EidInfo (§3.2)
    UseIDType = 0,
    OcrNation = ocr and "汉" or null, OcrAddress = ocr and "广东省深圳市南山区模拟路1号" or null,
    OcrBirth = ocr and "1990/1/1" or null, OcrAuthority = ocr and "深圳市公安局南山分局" or null,
    OcrValidDate = ocr and "2020.01.01-2040.01.01" or null,
    OcrName = null, OcrIdCard = null, OcrGender = ocr and "男" or null,
    IdInfoFrom = ocr and "OCR" or (tok.input_type == "3" and "手动输入" or "其他"),
    LiveStatus = live, LiveMsg = live == null and null or _M.message(live),
    Comparestatus = compare, Comparemsg = compare == null and null or _M.message(compare),
    Sim = similarity(last.ErrCode), Location = null, Extra = tok.extra or null,
    LivenessDetail = details, Mobile = "", CompareLibType = "公安库", LivenessMode = 3,
    NFCRequestIds = null, NFCBillingCounts = null, PassNo = null, VisaNum = null,
    LivenessActionSequence = null, LivenessInfoTag = null,
  }
end

-- Intention results follow the mode the token was issued with.
local intention_type = { ["1"] = "2", ["2"] = "0", ["3"] = "1" }

local function intention(tok, opts, r)
  if not tok.intention then
    r.IsVerifyIntention = false
    r.IntentionVerifyType = null
    return
  end
  r.IsVerifyIntention = true
  local mode = tok.intention_mode
  r.IntentionVerifyType = intention_type[mode]
  local last = tok.attempts[#tok.attempts]
  if not last then return end
  local code = last.IntentionErrCode
  if code == nil then code = last.ErrCode == 0 and 0 or -12 end
  if mode == "1" and opts.parts["5"] then
    r.IntentionVerifyData = {
      IntentionVerifyVideo = png.video, AsrResult = tok.intention_text or "", ErrorCode = code,
      ErrorMessage = code == 0 and "success" or "intention not confirmed",
      IntentionVerifyBestFrame = png.frame, AsrResultSimilarity = code == 0 and "0.98" or "0.10",
      IntentionVerifyAudio = null,
    }
  elseif mode ~= "1" and opts.parts["6"] then
    local final = code == 0 and "0" or "-1"
    local detail_r = {
      FinalResultDetailCode = code, FinalResultMessage = code == 0 and "success" or "not confirmed",
    }
    if mode == "2" then
      -- One ResultCode, AsrResult and audio per question asked.
      local n = tok.questions > 0 and tok.questions or 1
      local codes, asr, audios = {}, {}, {}
      for i = 1, n do
        codes[i], asr[i], audios[i] = final, code == 0 and "是" or "否", png.video
      end
      detail_r.Video = png.video
      detail_r.ScreenShot = { png.frame }
      detail_r.ResultCode = codes
      detail_r.AsrResult = asr
      detail_r.Audios = audios
      detail_r.FinalResultCode = final
      r.IntentionQuestionResult = detail_r
    else
      detail_r.Details = { { Video = png.video, ScreenShot = { png.frame } } }
      r.IntentionActionResult = detail_r
    end
  end
end

-- The Response fields for GetEidResult (RequestId added by the caller).
-- opts: validate.get_eid_result's output.
function _M.build(tok, opts, now)
  local r = {
    Text = null, IdCardData = null, BestFrame = null, EidInfo = null,
    IntentionVerifyData = null, IntentionQuestionResult = null, IntentionActionResult = null,
    IsVerifyIntention = null, IntentionVerifyType = null,
  }
  local finished = #tok.attempts > 0
  if opts.parts["1"] then r.Text = text(tok, now) end
  if not finished then return r end -- fields stay null until the user finishes
  local ocr = tok.input_type == "1" or tok.input_type == "2"
  local last_real
  for _, a in ipairs(tok.attempts) do
    if not a.flow_state then last_real = a end
  end
  if opts.parts["2"] and ocr then
    r.IdCardData = {
      OcrFront = png.front, OcrBack = tok.input_type == "1" and png.back or null,
      ProcessedFrontImage = opts.cut and png.front or null,
      ProcessedBackImage = (opts.cut and tok.input_type == "1") and png.back or null,
      Avatar = opts.avatar and png.avatar or null,
      WarnInfos = last_real and last_real.warn or null,
      BackWarnInfos = last_real and last_real.back_warn or null,
    }
  end
  if opts.parts["3"] then
    local frames = null
    if opts.frames > 0 then
      frames = {}
      for i = 1, opts.frames do frames[i] = png.frame end
    end
    r.BestFrame = { BestFrame = png.frame, BestFrames = frames }
  end
  intention(tok, opts, r)
  return r
end

return _M
