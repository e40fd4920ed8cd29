-- eidkit.client_params: what the typed API methods accept, for both clients:
-- eidkit.client on the Lua 5.4 host and eidkit.openresty.client in nginx.
-- One list of fields and one check, so the two cannot drift apart.
--
--   params.check("get_eid_result", p)  -- raises "bad argument #1 to ..."
--
-- Loaded by both hosts: keeps to what Lua 5.4 and LuaJIT both run.
local cjson = require "cjson.safe"
local compat = require "eidkit.compat"

local type, pairs, ipairs, error, format = type, pairs, ipairs, error, string.format
-- Lua 5.4 tells integers from floats; LuaJIT has only doubles, where an
-- integral value is the integer a field asks for.
local math_type = math.type -- luacheck: ignore 143 (absent under LuaJIT, checked below)
local null = cjson.null

local _M = {}

-- method name -> the action it calls, its required non-empty strings and its
-- optional fields with their Lua types ("integer": a whole number).
_M.methods = {
  get_eid_token = { action = "GetEidToken", required = { "MerchantId" }, types = {
    Name = "string", IdCard = "string", Extra = "string", RedirectUrl = "string", Config = "table",
    Encryption = "table" } },
  get_eid_result = { action = "GetEidResult", required = { "EidToken" }, types = {
    InfoType = "string", BestFramesCount = "integer", IsCutIdCardImage = "boolean",
    IsNeedIdCardAvatar = "boolean" } },
  check_eid_token_status = { action = "CheckEidTokenStatus", required = { "EidToken" }, types = {} },
}

local function is_integer(v)
  if math_type then return math_type(v) == "integer" end
  return compat.is_integer(v)
end

-- The caller's caller gets the blame: level 4 is the code that called the
-- client's method (argerr <- check <- method <- caller).
local function argerr(fname, msg)
  error(format("bad argument #1 to '%s' (%s)", fname, msg), 4)
end

-- check(fname, p): p is a table of request fields for method fname, its
-- required strings present and non-empty, its optional fields (when not nil
-- or JSON null) of their types. Raises naming the field, never its value.
function _M.check(fname, p)
  local m = _M.methods[fname]
  if not m then error("eidkit.client_params: no method " .. tostring(fname), 2) end
  if type(p) ~= "table" then argerr(fname, "expected a table of request fields") end
  for _, k in ipairs(m.required) do
    if type(p[k]) ~= "string" or p[k] == "" then argerr(fname, k .. ": expected a non-empty string") end
  end
  for k, want in pairs(m.types) do
    local v = p[k]
    if v ~= nil and v ~= null then
      if want == "integer" then
        if not is_integer(v) then argerr(fname, k .. ": expected an integer") end
      elseif type(v) ~= want then
        argerr(fname, format("%s: expected %s, got %s", k, want, type(v)))
      end
    end
  end
end

return _M
