-- eidkit.gateway.settings: the gateway settings a host reads as text (a
-- flag, an nginx env value) turned into eidkit.gateway's options, and the
-- simulator's demo authorize. One copy for both hosts: `eidkit serve`
-- (lua/eidkit/cli/serve.lua, Lua 5.4) and OpenResty's configure
-- (lua/eidkit/openresty/gateway.lua, LuaJIT), so the two accept and refuse
-- the same values with the same words.
--
-- Each parser takes the value and the label the host names the setting by
-- ("--token-limit" on the command line, "token_limit" in nginx) and returns
-- the option (nil when the value is nil: unset), or nil and "LABEL: what was
-- expected; got 'value'". What the gateway checks on the options themselves
-- (h5_return_url's form, the token_fields names, the limits' ranges) stays
-- in eidkit.gateway.new, which both hosts call.
local compat = require "eidkit.compat"

local type, tostring, tonumber = type, tostring, tonumber
local format, max = string.format, math.max

local _M = {}

-- The request header the demo authorize reads (lower case, as both hosts
-- hand headers to the gateway).
_M.DEMO_HEADER = "x-eidkit-demo-user"

-- A ledger URL as an error message may show it: the user and password of
-- redis://USER:PASSWORD@HOST are secrets, so that part reads "***".
function _M.shown_url(url)
  return (tostring(url):gsub("^(%a[%w+.-]*://)[^/?]*@", "%1***@"))
end

-- Where a command takes its ledger URL from, and the label its errors name
-- it by: the flag when given (an empty one is an error, not the default: a
-- mistyped `--ledger "$VAR"` must not open another ledger), else
-- $EIDKIT_LEDGER (empty counts as unset, as shells leave it), else the
-- default. `eidkit serve` and `eidkit ledger` both ask here.
_M.DEFAULT_LEDGER = "sqlite:./eidkit.db"
function _M.ledger_source(flag, getenv)
  if flag ~= nil then return flag, "--ledger" end
  local env = (getenv or os.getenv)("EIDKIT_LEDGER")
  if env and env ~= "" then return env, "EIDKIT_LEDGER" end
  return _M.DEFAULT_LEDGER, "--ledger"
end

-- The ledger URL a host was given, or nil and "LABEL: ...". check(url) ->
-- true | nil, message is libeidkit's eid_ledger_check_url as the host
-- reaches it (core.ledger_check_url, or through the FFI): the whole URL
-- read as the ledger will read it, before anything is opened, in its words.
_M.LEDGER_FORMS = "sqlite:PATH or redis://[[USER]:PASSWORD@]HOST:PORT[/DB][?prefix=P]"
function _M.ledger_url(v, label, check)
  if not (type(v) == "string" and (v:find("^sqlite:.") or v:find("^redis://"))) then
    return nil, format("%s: expected %s, got '%s'", label, _M.LEDGER_FORMS, _M.shown_url(v))
  end
  local ok, why = check(v)
  if not ok then return nil, format("%s: %s", label, tostring(why)) end
  return v
end

-- The demo authorize for the simulator: whoever sends the header is that
-- user. Never in production; each host warns when it runs with it.
function _M.demo_authorize(req)
  local u = req.headers and req.headers[_M.DEMO_HEADER]
  if type(u) == "string" and u ~= "" then return u end
  return false, "no X-Eidkit-Demo-User header"
end

-- A policy table with that authorize, for eidkit.flow's `policy`.
_M.DEMO_POLICY = { authorize = _M.demo_authorize }

-- What each host says on stderr when it runs with the demo authorize,
-- after its own name ("eidkit serve: ", "examples/openresty/run: ").
_M.DEMO_WARNING = "warning: demo authorize: the subject is whatever the X-Eidkit-Demo-User header says; "
  .. "for the simulator only, never use in production (give --policy FILE)"

-- "COUNT/SECONDS" (tokens per subject) or "off": eidkit.gateway's
-- token_limit, { count = n, per = seconds } or false. A table or false is
-- already the option (a Lua configuration may give one): the gateway
-- checks it.
function _M.token_limit(v, label)
  if v == nil then return nil end
  if v == "off" or v == false then return false end
  if type(v) == "table" then return v end
  local count, per = tostring(v):match("^(%d+)/(%d+%.?%d*)$")
  count, per = compat.tointeger(tonumber(count)), tonumber(per)
  if not count or count < 1 or not per or per <= 0 then
    return nil, format("%s: expected COUNT/SECONDS such as 5/600, or off; got '%s'", label, tostring(v))
  end
  return { count = count, per = per }
end

-- Calls per second per API action, or "off": eidkit.gateway's
-- upstream_limits. A bucket lets burst + rate through in any one second:
-- 0.8 n + 0.2 n, as the gateway's default 80 + 20 (a burst is at least one
-- call).
function _M.upstream_rate(v, label)
  if v == nil then return nil end
  if v == "off" or v == false then return { GetEidToken = false, GetEidResult = false } end
  local n = tonumber(v)
  -- n ~= n: LuaJIT's tonumber reads "nan" (Lua 5.4's does not).
  if not n or n ~= n or n <= 0 or n > 100000 then
    return nil, format("%s: expected calls per second > 0, or off; got '%s'", label, tostring(v))
  end
  local l = { rate = n * 0.8, burst = max(1, n * 0.2) }
  return { GetEidToken = l, GetEidResult = l }
end

-- Seconds, from min up to a day (86400): nil when v is nil (unset: the
-- host's default, or for upstream_timeout and upstream_deadline the API
-- client's own), the number, or nil and "LABEL: expected seconds > 0 ...".
-- min > 0 reads as "> 0" (the least such setting is a millisecond).
function _M.seconds(v, label, min)
  if v == nil then return nil end
  local n = tonumber(v)
  if not n or n ~= n or n < min or n > 86400 then
    return nil, format("%s: expected seconds %s, at most 86400; got '%s'", label,
      min > 0 and "> 0" or format(">= %g", min), tostring(v))
  end
  return n
end

-- The least value of each time setting both hosts read (through seconds).
_M.SECONDS_MIN = { upstream_timeout = 0.001, upstream_deadline = 0.001, sweep_interval = 0 }

-- A comma-separated list of field names (token_fields, result_fields), or
-- a list already. Never fails: the gateway checks the names.
function _M.fields(v)
  if v == nil or type(v) == "table" then return v end
  local out = {}
  for f in tostring(v):gmatch("[^,%s]+") do out[#out + 1] = f end
  return out
end

-- The --config file of both hosts (`eidkit serve`, examples/openresty/run):
-- Lua run in an empty environment that returns a table of the host's options,
-- named with _ for - (kinds[key]: "arg", a string or number, read as text;
-- "list", a string or a list of strings; "flag", a boolean) or of keys only a
-- file can set (config_only[key] = "table"). Returns the options as text,
-- lists and true (a false flag is left out), or nil and "--config PATH: ...".
function _M.read_config(path, kinds, config_only)
  local f, ferr = io.open(path, "rb")
  if not f then return nil, format("--config: %s", tostring(ferr)) end
  local text = f:read("*a")
  f:close()
  if not text then return nil, format("--config: cannot read %s", path) end
  local chunk, lerr = load(text, "@" .. path, "t", {})
  if not chunk then return nil, format("--config %s: %s", path, lerr) end
  local ok, cfg = pcall(chunk)
  if not ok then return nil, format("--config %s: %s", path, tostring(cfg)) end
  if type(cfg) ~= "table" then return nil, format("--config %s: must return a table, got %s", path, type(cfg)) end
  local out = {}
  for k, v in pairs(cfg) do
    local kind = type(k) == "string" and kinds[k]
    if type(k) == "string" and config_only and config_only[k] then
      if type(v) ~= config_only[k] then return nil, format("--config %s: %s: expected a table", path, k) end
      out[k] = v
    elseif not kind then
      return nil, format("--config %s: unknown key '%s'", path, tostring(k))
    elseif kind == "list" then
      if type(v) == "string" then v = { v } end
      if type(v) ~= "table" then return nil, format("--config %s: %s: expected a list of strings", path, k) end
      local list = {}
      for i, x in ipairs(v) do
        if type(x) ~= "string" then return nil, format("--config %s: %s[%d]: expected a string", path, k, i) end
        list[i] = x
      end
      out[k] = list
    elseif kind == "arg" then
      if type(v) ~= "string" and type(v) ~= "number" then
        return nil, format("--config %s: %s: expected a string or a number", path, k)
      end
      out[k] = (compat.is_integer(v) and v > -2 ^ 53 and v < 2 ^ 53) and format("%d", v) or tostring(v)
    else
      if type(v) ~= "boolean" then return nil, format("--config %s: %s: expected true or false", path, k) end
      out[k] = v or nil
    end
  end
  return out
end

return _M
