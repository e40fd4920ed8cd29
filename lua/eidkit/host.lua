-- eidkit.host: what the shared pure-Lua files (eidkit, eidkit.flow,
-- eidkit.policy, eidkit.errors) need from their host, chosen once here so
-- no other file asks which interpreter runs it.
--
--   local host = require "eidkit.host"
--   host.name          --> "lua54" (the eidkit program, lua5.4), "luajit", or "nginx"
--   host.now(), host.monotonic(), host.sleep(s), host.equal(a, b)
--   host.limits, host.errcodes, host.errcode_table, host.is_transport_code(code)
--   host.error_mt, host.version()
--   host.check_open_claim(bound_subject, expires_at, subject, now) -> true | nil, err
--     (eid_ledger_check_claim for an open token: the ledger's claim rule)
--   host.lua54("what")  --> eidkit.core, or raises naming what needs the Lua 5.4 host
--
-- Lua 5.4: everything comes from the C module eidkit.core. LuaJIT: from
-- libeidkit through eidkit.ffi (the same C functions and tables:
-- eidkit/host.h, eidkit/errcode.h), except the sleep inside nginx, which is
-- ngx.sleep (it yields; eid_sleep would stall the worker).
local rawget, type, error, setmetatable, tonumber, tostring =
  rawget, type, error, setmetatable, tonumber, tostring

local _M = {}

-- A misspelt field raises rather than reading as nil.
local strict = { __index = function(_, k) error("eidkit.host has no field '" .. tostring(k) .. "'", 2) end }

local jit = rawget(_G, "jit")

if not jit then
  local core = require "eidkit.core"
  _M.name = "lua54"
  _M.now, _M.monotonic, _M.sleep, _M.equal = core.now, core.monotonic, core.sleep, core.equal
  _M.limits, _M.errcodes, _M.errcode_table = core.limits, core.errcodes, core.errcode_table
  _M.is_transport_code, _M.error_mt, _M.version = core.is_transport_code, core.error_mt, core.version
  _M.check_open_claim = core.ledger_check_open_claim
  function _M.lua54() return core end
  return setmetatable(_M, strict)
end

local ffi = require "ffi"
local eidffi = require "eidkit.ffi"
local C = eidffi.lib()
local ffi_string, ffi_new = ffi.string, ffi.new
local ngx = rawget(_G, "ngx")

_M.name = ngx and "nginx" or "luajit"
_M.version = eidffi.version

function _M.now() return C.eid_clock_now() end
function _M.monotonic() return C.eid_clock_monotonic() end

-- The message and range of eidkit.core.sleep.
local function check_seconds(s)
  if type(s) ~= "number" or not (s >= 0 and s <= 86400) then
    error("bad argument #1 to 'sleep' (expected 0..86400 seconds)", 3)
  end
end
if ngx then
  local ngx_sleep = ngx.sleep
  function _M.sleep(s)
    check_seconds(s)
    ngx_sleep(s)
  end
else
  function _M.sleep(s)
    check_seconds(s)
    C.eid_sleep(s)
  end
end

function _M.equal(a, b)
  if type(a) ~= "string" or type(b) ~= "string" then
    error("bad argument to 'equal' (two strings expected)", 2)
  end
  return C.eid_ct_equal(a, #a, b, #b) == 1
end

function _M.is_transport_code(code)
  return type(code) == "string" and not code:find("\0", 1, true) and C.eid_client_is_transport_code(code) == 1
end

-- eid_ledger_check_claim for a token known to be open (as core.ledger_check_open_claim):
-- true | nil, err with the ledger's code and message.
local claim_err = ffi_new("eid_error")
function _M.check_open_claim(bound_subject, expires_at, subject, now)
  local st = C.eid_ledger_check_claim(bound_subject, C.EID_LEDGER_ISSUED, expires_at, subject, now,
    claim_err)
  if st == 0 then return true end
  return nil, setmetatable({ code = ffi_string(C.eid_status_code(st)),
    message = ffi_string(claim_err.message), retryable = false }, _M.error_mt)
end

local n = ffi_new("size_t[1]")
local function named(rows)
  local t = {}
  for i = 0, tonumber(n[0]) - 1 do t[ffi_string(rows[i].name)] = tonumber(rows[i].value) end
  return t
end
_M.limits = named(C.eid_limits(n))
_M.errcodes = named(C.eid_errcode_names(n))

local rows = C.eid_errcode_table(n)
local list = {}
for i = 0, tonumber(n[0]) - 1 do
  local r = rows[i]
  list[i + 1] = { code = tonumber(r.code), status = ffi_string(C.eid_errcode_status(r.verdict)),
    reason = ffi_string(r.reason), retry_with_new_token = r.retry_with_new_token ~= 0, billed = r.billed ~= 0 }
end
_M.errcode_table = list

-- eidkit.core's error metatable, as Lua: prints "code: message".
_M.error_mt = {
  __name = "eidkit.Error",
  __tostring = function(e)
    local code, message = e.code, e.message
    return (type(code) == "string" and code or "error") .. ": " .. (type(message) == "string" and message or "")
  end,
}

-- lua54(what [, level]): raises at level (default: the caller's caller).
function _M.lua54(what, level)
  error(what .. " needs the Lua 5.4 host (the eidkit.core C module); it is not available under "
    .. (ngx and "OpenResty's LuaJIT" or "LuaJIT") .. " (docs/OPENRESTY.md)", (level or 2) + 1)
end

return setmetatable(_M, strict)
