-- eidkit.policy: the merchant's rules for eidkit.flow, and their defaults.
--
-- A policy is a plain Lua table (usually a module the merchant writes) that
-- overrides only what it needs; merge() fills in the rest:
--
--   -- my_policy.lua
--   local policy = require "eidkit.policy"
--   local P = {}
--   function P.on_outcome(outcome) audit(outcome.EidToken, outcome.status) end
--   function P.classify(result, outcome)
--     if outcome.reason == "user_retry" and outcome.attempts >= 3 then outcome.retry_with_new_token = false end
--     return outcome
--   end
--   return P
--
-- Hooks (see docs/internals/flow.md for when the flow calls each one):
--   retry(err, attempts)          -> seconds | nil      after the client gave up on a call
--   info_type                    string, or function(request) -> string: GetEidResult's InfoType
--   classify(result, outcome[, identity]) -> outcome   result: GetEidResult's Response;
--                                                      identity: the decrypted EidInfo when the
--                                                      flow has eidinfo_key (name, idtype, idnum)
--   on_outcome(outcome)                                once per settled token (outcome.identity:
--                                                      the decrypted EidInfo, with eidinfo_key)
--   authorize(request)           -> subject | false, reason   (for a gateway)
--   redact(event)                -> event | false      before the flow's logger sees an event
--   on_show(options)             -> boolean            a mini-program onShow: the return from eID?
--   keep_result                  boolean: put the Response in outcome.result
--   result_params                {BestFramesCount = 0..3, IsCutIdCardImage =, IsNeedIdCardAvatar =}:
--                                sent with every GetEidResult (they need 3 or 2 in info_type)
-- A hook that raises, or returns nil plus an error (as eidkit.sandbox's
-- wrapped hooks do), has failed: the flow call returns nil, err with
-- err.code == "policy" and err.hook naming it.
local type, pairs, ipairs, tostring, tonumber, setmetatable, getmetatable, error =
  type, pairs, ipairs, tostring, tonumber, setmetatable, getmetatable, error
local format = string.format
local host = require "eidkit.host"
local math_tointeger = require("eidkit.compat").tointeger

local _M = {}

-- The eID 数字身份 mini-program and the scene WeChat reports when a
-- mini-program is re-entered from another one (integration guide, 注意事项 2).
_M.EID_APPID = "wx0e2cb0b052a91c92"
_M.EID_SCENE = 1038

-- Text.ErrCode groups (eid-api.md §4.3-4.4): the C table in
-- core/src/errcode.c (host.errcode_table: eidkit.core's, or the same C table
-- through the FFI under LuaJIT), which the ledger reads too. Each
-- entry: status, reason, retry_with_new_token. A code not in it gets
-- UNCLASSIFIED: failed, and not worth a blind retry.
local groups = {}
for _, e in ipairs(host.errcode_table) do
  groups[e.code] = { status = e.status, reason = e.reason, retry_with_new_token = e.retry_with_new_token }
end
_M.UNCLASSIFIED = { status = "failed", reason = "unclassified", retry_with_new_token = false }

-- Is code one the table knows? (An unknown one is classified UNCLASSIFIED,
-- and eidkit.flow counts and logs it.)
function _M.is_known_code(code)
  return groups[math_tointeger(code) or code] ~= nil
end

-- A copy of the group a Text.ErrCode falls in: {status, reason, retry_with_new_token}.
function _M.code_group(code)
  local g = groups[math_tointeger(code) or code] or _M.UNCLASSIFIED
  return { status = g.status, reason = g.reason, retry_with_new_token = g.retry_with_new_token }
end

-- What IntentionVerifyType names (GetEidResult): where its result lives and
-- how that result says "passed".
local intention_kinds = {
  ["2"] = { mode = "read_aloud", field = "IntentionVerifyData" },
  ["0"] = { mode = "qa", field = "IntentionQuestionResult" },
  ["1"] = { mode = "nod", field = "IntentionActionResult" },
}

local function is_table(v) return type(v) == "table" end

-- The intention verdict of a result with IsVerifyIntention: {type, mode,
-- code, passed} with passed nil when the result object is missing.
local function intention_of(result)
  local t = result.IntentionVerifyType
  local kind = intention_kinds[t]
  local it = { type = type(t) == "string" and t or nil, mode = kind and kind.mode or "unknown" }
  local r = kind and result[kind.field]
  if not is_table(r) then return it end
  if kind.mode == "read_aloud" then
    it.code = math_tointeger(r.ErrorCode)
    it.passed = it.code == 0
  else
    -- Q&A carries FinalResultCode ("0" passed); nod only FinalResultDetailCode.
    local detail = math_tointeger(r.FinalResultDetailCode)
    if type(r.FinalResultCode) == "string" then
      it.code = r.FinalResultCode
      it.passed = r.FinalResultCode == "0"
    elseif detail then
      it.code = detail
      it.passed = detail == 0
    end
    it.detail_code = detail
  end
  return it
end

-- The default outcome of a GetEidResult Response: classification from
-- Text.ErrCode only (never ErrMsg), the intention verdict when the token was
-- issued with intention checking, billing from LivenessDetail[].IsNeedCharge.
--   {status, code, reason, retry_with_new_token, billable, charges, attempts, intention}
function _M.default_outcome(result)
  local text = is_table(result) and result.Text or nil
  local out = { status = "pending", reason = "no_result", retry_with_new_token = false,
    billable = false, charges = 0, attempts = 0 }
  if is_table(result) and result.IsVerifyIntention == true then out.intention = intention_of(result) end
  if not is_table(text) then return out end
  local details = text.LivenessDetail
  if is_table(details) then
    out.attempts = #details
    for i = 1, #details do
      local d = details[i]
      if is_table(d) and d.IsNeedCharge == true then out.charges = out.charges + 1 end
    end
    out.billable = out.charges > 0
  end
  local code = text.ErrCode
  if type(code) ~= "number" then return out end -- absent or JSON null: no verdict yet
  code = math_tointeger(code)
  out.code = code
  local g = code and groups[code] or _M.UNCLASSIFIED
  out.status, out.reason, out.retry_with_new_token = g.status, g.reason, g.retry_with_new_token
  if code == 0 and out.intention then
    -- Tencent: with intention checking, the verdict needs the intention result.
    if out.intention.passed == nil then
      out.status, out.reason = "pending", "intention_missing"
    elseif not out.intention.passed then
      out.status, out.reason, out.retry_with_new_token = "failed", "intention_failed", true
    end
  end
  return out
end

-- The onShow exclusion rule: true when a mini-program onShow options table
-- is the return from the eID mini-program (scene 1038, referrer appId
-- wx0e2cb0b052a91c92). Anything else, including non-tables, is false.
function _M.is_eid_return(options)
  if type(options) ~= "table" then return false end
  local scene = options.scene
  if type(scene) == "string" then scene = tonumber(scene) end
  if scene ~= _M.EID_SCENE then return false end
  local ref = options.referrerInfo
  return type(ref) == "table" and ref.appId == _M.EID_APPID
end

local function copy_without(t, key)
  local c = {}
  for k, v in pairs(t) do if k ~= key then c[k] = v end end
  return c
end

-- The defaults: each is what the flow does when the merchant says nothing.
_M.defaults = {
  -- The client already retried transient failures inside its deadline.
  retry = function() return nil end,
  -- Text and both intention results; no ID-card images or frames (PII the
  -- verdict does not need). "0" asks for everything.
  info_type = "156",
  classify = function(_, outcome) return outcome end,
  on_outcome = function() end,
  -- A gateway must be told who the user is: refuse until the merchant says how.
  authorize = function() return false, "no authorize policy: every request is refused" end,
  -- Subjects are the merchant's user ids: kept out of logs unless a policy keeps them.
  redact = function(event) return copy_without(event, "subject") end,
  on_show = function(options) return _M.is_eid_return(options) end,
  keep_result = false,
  -- GetEidResult's other options: none (no frames, whole ID-card images).
  result_params = {},
}

-- What result_params may hold: GetEidResult's fields, as Tencent names
-- them, and a check for each (eid-api.md §3.2).
local result_param_kinds = {
  -- A number first: tointeger takes "2" too, and "2" >= 0 would raise.
  BestFramesCount = function(v)
    return type(v) == "number" and math_tointeger(v) ~= nil and v >= 0 and v <= 3, "an integer 0..3"
  end,
  IsCutIdCardImage = function(v) return type(v) == "boolean", "a boolean" end,
  IsNeedIdCardAvatar = function(v) return type(v) == "boolean", "a boolean" end,
}

local function check_result_params(v)
  if type(v) ~= "table" then return "expected a table, got " .. type(v) end
  for k, x in pairs(v) do
    local check = result_param_kinds[k]
    if not check then
      return format("unknown field '%s' (BestFramesCount, IsCutIdCardImage or IsNeedIdCardAvatar)", tostring(k))
    end
    local ok, want = check(x)
    if not ok then return format("%s: expected %s", k, want) end
  end
end

local function callable(v)
  if type(v) == "function" then return true end
  local mt = getmetatable(v)
  return type(mt) == "table" and mt.__call ~= nil
end

local kinds = {
  retry = "hook", classify = "hook", on_outcome = "hook", authorize = "hook",
  redact = "hook", on_show = "hook", info_type = "info_type", keep_result = "boolean",
  result_params = "result_params",
}

-- merge(overrides) -> a complete policy: the defaults with the given fields
-- replaced. Raises on an unknown key (a misspelt hook would silently do
-- nothing) or a value of the wrong kind. nil gives the defaults. A table
-- already merged is returned as is.
function _M.merge(overrides)
  if overrides == nil then overrides = {} end
  if type(overrides) ~= "table" then
    error("bad argument #1 to 'merge' (expected a table of policy hooks)", 2)
  end
  if getmetatable(overrides) == _M.merged_mt then return overrides end
  for k, v in pairs(overrides) do
    local kind = kinds[k]
    if not kind then
      error(format("bad argument #1 to 'merge' (unknown policy key '%s')", tostring(k)), 2)
    end
    if kind == "result_params" then
      local why = check_result_params(v)
      if why then error(format("bad argument #1 to 'merge' (result_params: %s)", why), 2) end
    end
    local ok
    if kind == "result_params" then ok = true
    elseif kind == "hook" then ok = callable(v)
    elseif kind == "info_type" then ok = callable(v) or (type(v) == "string" and v:match("^%d+$") ~= nil)
    else ok = type(v) == "boolean" end
    if not ok then
      local want = kind == "hook" and "a function"
        or kind == "info_type" and "digits (e.g. \"156\") or a function" or "a boolean"
      error(format("bad argument #1 to 'merge' (%s: expected %s, got %s)", k, want, type(v)), 2)
    end
  end
  local p = {}
  for k, v in pairs(_M.defaults) do p[k] = v end
  for k, v in pairs(overrides) do p[k] = v end
  return setmetatable(p, _M.merged_mt)
end
_M.merged_mt = { __name = "eidkit.Policy" }

-- load(path [, limits]) -> policy, box | nil, err
-- On the Lua 5.4 host: a merchant's policy script run in an eidkit.sandbox
-- (docs/internals/sandbox.md): its own _ENV, text only, allowed libraries
-- only, and every hook call under the instruction, memory and time limits
-- (limits: sandbox.new's options; name defaults to the script's path).
-- Under LuaJIT (OpenResty), where that sandbox does not exist: the script
-- runs as trusted code in its own environment (eidkit.policy.trusted: no
-- limits at all, see docs/OPENRESTY.md), box is nil, and limits raise.
-- The script returns a table of hooks, as a policy module does, and may
-- require "eidkit.policy" (a view with is_eid_return, code_group,
-- default_outcome, EID_APPID, EID_SCENE) and its sibling files; the result
-- is merged with the defaults.
-- A hook that breaks a limit or raises fails that one flow call (err.code
-- "policy", err.cause the sandbox's code).
function _M.load(path, limits)
  if type(path) ~= "string" then error("bad argument #1 to 'load' (path: expected string)", 2) end
  if limits ~= nil and type(limits) ~= "table" then
    error("bad argument #2 to 'load' (expected a table of sandbox limits)", 2)
  end
  local sandboxed = host.name == "lua54"
  if limits ~= nil and not sandboxed then
    host.lua54("eidkit.policy.load's sandbox limits (argument #2)", 2)
  end
  -- Scripts may require "eidkit.policy" for the default rules: a fresh view
  -- per script, so one that scribbles on it changes nothing else.
  local view = { EID_APPID = _M.EID_APPID, EID_SCENE = _M.EID_SCENE, is_eid_return = _M.is_eid_return,
    code_group = _M.code_group, default_outcome = _M.default_outcome }
  local modules = { ["eidkit.policy"] = view }
  local function load_fail(what)
    return nil, setmetatable({ code = "load", retryable = false, message = path .. ": " .. what },
      host.error_mt)
  end
  local box, mod, err
  if sandboxed then
    local sandbox = require "eidkit.sandbox"
    local o = { name = path, modules = modules }
    for k, v in pairs(limits or {}) do o[k] = v end
    local ok
    ok, box = pcall(sandbox.new, o)
    if not ok then error(tostring(box):gsub("^bad argument #1 to 'new'", "bad argument #2 to 'load'"), 2) end
    mod, err = box:loadfile(path)
  else
    mod, err = require("eidkit.policy.trusted").loadfile(path, modules)
  end
  if mod == nil then return nil, err end
  if type(mod) ~= "table" then
    return load_fail("a policy script must return a table of hooks, got " .. type(mod))
  end
  local hooks = mod
  if box then
    local werr
    hooks, werr = box:wrap(mod)
    if not hooks then return nil, werr end
  end
  local mok, p = pcall(_M.merge, hooks)
  if not mok then
    return load_fail((tostring(p):gsub("^bad argument #1 to 'merge' %((.*)%)$", "%1")))
  end
  return p, box
end

return _M
