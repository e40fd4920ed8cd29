-- Request validation for the simulated actions, with Tencent's error codes:
-- MissingParameter for an absent required field, UnknownParameter for a
-- field the model does not have, InvalidParameter for a wrong JSON type and
-- InvalidParameterValue for a value outside the documented limits (the
-- API gateway's common behaviour, eid-api.md §4.1).
local util = require "eidkit.sim.util"

local format, type, pairs, ipairs = string.format, type, pairs, ipairs
local utf8_len = util.utf8_len

local _M = {}

-- Raises Tencent's {Code, Message}: the simulator answers it as Response.Error.
local function raise_api_error(code, fmt, ...)
  error({ Code = code, Message = format(fmt, ...) }, 0)
end

local function lua_type(v)
  if v == util.null then return "null" end
  if type(v) == "table" then return (#v > 0 or next(v) == nil) and "array" or "object" end
  return type(v)
end

local function want(name, v, t)
  local got = lua_type(v)
  if t == "integer" then
    if got ~= "number" or not util.is_integer(v) then
      raise_api_error("InvalidParameter", "The value type of parameter `%s` is not valid: expected Integer, got %s.",
        name, got)
    end
  elseif t == "array" then
    if got ~= "array" then
      raise_api_error("InvalidParameter", "The value type of parameter `%s` is not valid: expected Array, got %s.",
        name, got)
    end
  elseif t == "object" then
    if got ~= "object" and not (got == "array" and next(v) == nil) then
      raise_api_error("InvalidParameter", "The value type of parameter `%s` is not valid: expected Object, got %s.",
        name, got)
    end
  elseif got ~= t then
    local names = { string = "String", boolean = "Boolean" }
    raise_api_error("InvalidParameter", "The value type of parameter `%s` is not valid: expected %s, got %s.",
      name, names[t] or t, got)
  end
  return v
end

local function max_chars(name, v, n)
  local len = utf8_len(v)
  if not len then raise_api_error("InvalidParameterValue", "`%s` is not valid UTF-8.", name) end
  if len > n then
    raise_api_error("InvalidParameterValue", "`%s` is longer than %d characters (%d).", name, n, len)
  end
end

-- Reject fields the model does not define. Nulls count as absent: the
-- official SDKs strip them, others send them.
local function only(name_prefix, t, allowed)
  for k, v in pairs(t) do
    if type(k) ~= "string" or not allowed[k] then
      raise_api_error("UnknownParameter", "The parameter `%s%s` is not recognized.", name_prefix, tostring(k))
    end
    if v == util.null then t[k] = nil end
  end
end

local function set(list)
  local s = {}
  for _, v in ipairs(list) do s[v] = true end
  return s
end

local token_fields = set { "MerchantId", "IdCard", "Name", "Extra", "Config", "RedirectUrl",
  "Encryption" }
local config_fields = set { "InputType", "UseIntentionVerify", "IntentionMode",
  "IntentionVerifyText", "IntentionQuestions", "IntentionActions", "IntentionRecognition",
  "IsSupportHMTResidentPermitOCR", "MouthOpenRecognition", "Speed" }
local encryption_fields = set { "EncryptList", "CiphertextBlob", "Iv", "Algorithm", "TagList" }

local function check_config(c)
  want("Config", c, "object")
  only("Config.", c, config_fields)
  if c.InputType ~= nil then
    want("Config.InputType", c.InputType, "string")
    if not set { "1", "2", "3", "4" }[c.InputType] then
      raise_api_error("InvalidParameterValue", "`Config.InputType` must be \"1\", \"2\", \"3\" or \"4\".")
    end
  end
  for _, b in ipairs { "UseIntentionVerify", "IntentionRecognition",
    "IsSupportHMTResidentPermitOCR", "MouthOpenRecognition" } do
    if c[b] ~= nil then want("Config." .. b, c[b], "boolean") end
  end
  if c.IntentionMode ~= nil then
    want("Config.IntentionMode", c.IntentionMode, "string")
    if not set { "1", "2", "3" }[c.IntentionMode] then
      raise_api_error("InvalidParameterValue", "`Config.IntentionMode` must be \"1\", \"2\" or \"3\".")
    end
  end
  if c.IntentionVerifyText ~= nil then
    max_chars("Config.IntentionVerifyText", want("Config.IntentionVerifyText",
      c.IntentionVerifyText, "string"), 120)
  end
  if c.IntentionQuestions ~= nil then
    local qs = want("Config.IntentionQuestions", c.IntentionQuestions, "array")
    if #qs < 1 or #qs > 10 then
      raise_api_error("InvalidParameterValue", "`Config.IntentionQuestions` must have 1 to 10 rounds.")
    end
    for i, q in ipairs(qs) do
      local n = format("Config.IntentionQuestions[%d]", i - 1)
      want(n, q, "object")
      only(n .. ".", q, set { "Question", "Answers" })
      max_chars(n .. ".Question", want(n .. ".Question", q.Question, "string"), 250)
      local answers = want(n .. ".Answers", q.Answers, "array")
      if #answers < 1 or #answers > 50 then
        raise_api_error("InvalidParameterValue", "`%s.Answers` must have 1 to 50 answers.", n)
      end
      for j, a in ipairs(answers) do
        max_chars(format("%s.Answers[%d]", n, j - 1), want(format("%s.Answers[%d]", n, j - 1), a,
          "string"), 10)
      end
    end
  end
  if c.IntentionActions ~= nil then
    local as = want("Config.IntentionActions", c.IntentionActions, "array")
    if #as < 1 or #as > 10 then
      raise_api_error("InvalidParameterValue", "`Config.IntentionActions` must have 1 to 10 rounds.")
    end
    for i, a in ipairs(as) do
      local n = format("Config.IntentionActions[%d]", i - 1)
      want(n, a, "object")
      only(n .. ".", a, set { "Text" })
      max_chars(n .. ".Text", want(n .. ".Text", a.Text, "string"), 250)
    end
  end
  if c.Speed ~= nil then
    want("Config.Speed", c.Speed, "integer")
    if c.Speed < 0 or c.Speed > 3 then
      raise_api_error("InvalidParameterValue", "`Config.Speed` must be 0, 1, 2 or 3.")
    end
  end
  if c.UseIntentionVerify then
    local mode = c.IntentionMode or "1"
    if mode == "1" and c.IntentionVerifyText == nil then
      raise_api_error("InvalidParameterValue", "`Config.IntentionVerifyText` is required for IntentionMode \"1\".")
    elseif mode == "2" and c.IntentionQuestions == nil then
      raise_api_error("InvalidParameterValue", "`Config.IntentionQuestions` is required for IntentionMode \"2\".")
    elseif mode == "3" and c.IntentionActions == nil then
      raise_api_error("InvalidParameterValue", "`Config.IntentionActions` is required for IntentionMode \"3\".")
    end
  end
end

local function check_encryption(e)
  want("Encryption", e, "object")
  only("Encryption.", e, encryption_fields)
  local list = want("Encryption.EncryptList", e.EncryptList, "array")
  if #list == 0 then raise_api_error("InvalidParameterValue", "`Encryption.EncryptList` must not be empty.") end
  local encrypted = {}
  for i, f in ipairs(list) do
    want(format("Encryption.EncryptList[%d]", i - 1), f, "string")
    if f ~= "Name" and f ~= "IdCard" then
      raise_api_error("InvalidParameter.UnsupportEncryptField", "Field `%s` cannot be encrypted in GetEidToken.",
        f)
    end
    encrypted[f] = true
  end
  if e.CiphertextBlob == nil then
    raise_api_error("MissingParameter", "The request is missing a required parameter `Encryption.CiphertextBlob`.")
  end
  want("Encryption.CiphertextBlob", e.CiphertextBlob, "string")
  if e.Iv == nil then
    raise_api_error("MissingParameter", "The request is missing a required parameter `Encryption.Iv`.")
  end
  want("Encryption.Iv", e.Iv, "string")
  local alg = e.Algorithm or "AES-256-CBC"
  want("Encryption.Algorithm", alg, "string")
  if alg ~= "AES-256-CBC" and alg ~= "SM4-GCM" then
    raise_api_error("InvalidParameterValue", "`Encryption.Algorithm` must be \"AES-256-CBC\" or \"SM4-GCM\".")
  end
  if alg == "SM4-GCM" then
    local tags = want("Encryption.TagList", e.TagList, "array")
    if #tags ~= #list then
      raise_api_error("InvalidParameterValue", "`Encryption.TagList` needs one tag per EncryptList entry.")
    end
  elseif e.TagList ~= nil then
    want("Encryption.TagList", e.TagList, "array")
  end
  return encrypted
end

-- Validate a GetEidToken request table in place. Raises {Code, Message};
-- returns the normalised request (InputType defaulted, set of encrypted fields).
function _M.get_eid_token(p, merchants)
  only("", p, token_fields)
  if p.MerchantId == nil then
    raise_api_error("MissingParameter", "The request is missing a required parameter `MerchantId`.")
  end
  want("MerchantId", p.MerchantId, "string")
  if not merchants[p.MerchantId] then
    raise_api_error("InvalidParameterValue", "MerchantId is not registered for this account.")
  end
  local encrypted = {}
  if p.Encryption ~= nil then encrypted = check_encryption(p.Encryption) end
  if p.Config ~= nil then check_config(p.Config) end
  local input_type = p.Config and p.Config.InputType or "1"
  if p.IdCard ~= nil then
    want("IdCard", p.IdCard, "string")
    if not encrypted.IdCard and (#p.IdCard > 32 or not p.IdCard:match("^[A-Za-z0-9]+$")) then
      raise_api_error("InvalidParameterValue", "`IdCard` must be 1 to 32 letters and digits.")
    end
  end
  if p.Name ~= nil then
    want("Name", p.Name, "string")
    if not encrypted.Name then
      if p.Name == "" then raise_api_error("InvalidParameterValue", "`Name` must not be empty.") end
      max_chars("Name", p.Name, 32)
    end
  end
  if input_type == "4" and (p.Name == nil or p.IdCard == nil) then
    raise_api_error("MissingParameter", "`Name` and `IdCard` are required when Config.InputType is \"4\".")
  end
  if (p.Name == nil) ~= (p.IdCard == nil) then
    raise_api_error("MissingParameter", "`Name` and `IdCard` must be passed together.")
  end
  if p.Extra ~= nil then max_chars("Extra", want("Extra", p.Extra, "string"), 1024) end
  if p.RedirectUrl ~= nil then
    local u = want("RedirectUrl", p.RedirectUrl, "string")
    max_chars("RedirectUrl", u, 1024)
    if not u:match("^[Hh][Tt][Tt][Pp][Ss]?://[^%s/?#]+") then
      raise_api_error("InvalidParameterValue", "`RedirectUrl` must be an http or https URL.")
    end
  end
  return { input_type = input_type, encrypted = encrypted }
end

local result_fields = set { "EidToken", "InfoType", "BestFramesCount", "IsCutIdCardImage",
  "IsNeedIdCardAvatar" }

local function check_token_field(p)
  if p.EidToken == nil then
    raise_api_error("MissingParameter", "The request is missing a required parameter `EidToken`.")
  end
  want("EidToken", p.EidToken, "string")
end

-- GetEidResult: returns the set of requested parts and the frame count.
function _M.get_eid_result(p)
  only("", p, result_fields)
  check_token_field(p)
  local info = p.InfoType or "0"
  want("InfoType", info, "string")
  local parts = {}
  if info == "" or not info:match("^[012356]+$") then
    raise_api_error("InvalidParameterValue", "`InfoType` must be digits from 0, 1, 2, 3, 5, 6 (e.g. \"0\", \"13\").")
  end
  for d in info:gmatch(".") do parts[d] = true end
  if parts["0"] then
    for _, d in ipairs { "1", "2", "3", "5", "6" } do parts[d] = true end
  end
  local frames = 0
  if p.BestFramesCount ~= nil then
    want("BestFramesCount", p.BestFramesCount, "integer")
    if p.BestFramesCount < 0 then
      raise_api_error("InvalidParameterValue", "`BestFramesCount` must be 0 to 3.")
    end
    frames = math.min(p.BestFramesCount, 3) -- documented: values above 3 are capped
  end
  for _, b in ipairs { "IsCutIdCardImage", "IsNeedIdCardAvatar" } do
    if p[b] ~= nil then want(b, p[b], "boolean") end
  end
  return { parts = parts, frames = frames, cut = p.IsCutIdCardImage == true,
    avatar = p.IsNeedIdCardAvatar == true }
end

function _M.check_eid_token_status(p)
  only("", p, set { "EidToken" })
  check_token_field(p)
end

_M.raise_api_error = raise_api_error
_M.want = want

return _M
