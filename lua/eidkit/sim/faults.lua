-- Fault injection for the simulator: per action, deterministic for a seed.
--
-- A rule is a table with Tencent-style keys, the same in the JSON control
-- API and (after parsing) on the command line:
--   { Action = "GetEidResult" | "*", Kind = <kind>, First = n, Rate = p,
--     Ms = n, Jitter = n, Status = n, Code = "..." }
-- Kinds: latency (Ms + uniform 0..Jitter), throttle (RequestLimitExceeded),
-- error (Code, default InternalError), http (Status 502 or 503), reset,
-- truncate, malformed, slow (body spread over Ms). First = n fires on the
-- first n calls of the action; Rate = p fires with probability p; neither
-- means every call. Each rule draws from its own random stream, seeded from
-- the simulator's seed and the rule's position, so a run replays exactly.
local util = require "eidkit.sim.util"

local format, type, ipairs, tonumber = string.format, type, ipairs, tonumber

local _M = {}

local kinds = {
  latency = true, throttle = true, error = true, http = true,
  reset = true, truncate = true, malformed = true, slow = true,
}
_M.kinds = kinds

local keys = { Action = "string", Kind = "string", First = "integer", Rate = "number",
  Ms = "number", Jitter = "number", Status = "integer", Code = "string" }

-- Check one rule table; returns a normalised copy or nil, message.
function _M.check(rule, where)
  where = where or "fault"
  if type(rule) ~= "table" then return nil, where .. ": expected an object" end
  local r = {}
  for k, v in pairs(rule) do
    local t = keys[k]
    if not t then return nil, format("%s: unknown key %s", where, tostring(k)) end
    if t == "integer" then
      if not util.is_integer(v) or v < 0 then
        return nil, format("%s: %s must be a non-negative integer", where, k)
      end
      v = math.tointeger(v)
    elseif type(v) ~= (t == "number" and "number" or "string") then
      return nil, format("%s: %s must be a %s", where, k, t)
    end
    r[k] = v
  end
  r.Action = r.Action or "*"
  if not r.Kind or not kinds[r.Kind] then
    return nil, format("%s: Kind must be one of latency, throttle, error, http, reset, truncate, "
      .. "malformed, slow", where)
  end
  if r.Rate and (r.Rate < 0 or r.Rate > 1) then
    return nil, format("%s: Rate must be between 0 and 1", where)
  end
  for _, k in ipairs { "Ms", "Jitter" } do
    if r[k] and (r[k] < 0 or r[k] > 600000) then
      return nil, format("%s: %s must be 0..600000 milliseconds", where, k)
    end
  end
  if r.Kind == "http" then
    r.Status = r.Status or 502
    if r.Status < 400 or r.Status > 599 then
      return nil, format("%s: Status must be an HTTP error status (400..599)", where)
    end
  end
  if r.Kind == "error" then r.Code = r.Code or "InternalError" end
  if r.Kind == "latency" and not r.Ms then return nil, where .. ": latency needs Ms" end
  if r.Kind == "slow" then r.Ms = r.Ms or 2000 end
  return r
end

-- Parse the command-line form ACTION:KIND[:key=value,...], e.g.
--   GetEidResult:latency:ms=200,jitter=50   *:throttle:first=3
--   GetEidToken:error:code=InternalError,rate=0.1   GetEidResult:http:status=503
function _M.parse(spec)
  local action, kind, params = spec:match("^([^:]+):([^:]+):?(.*)$")
  if not action then
    return nil, format("--fault '%s': expected ACTION:KIND[:key=value,...]", spec)
  end
  local rule = { Action = action, Kind = kind }
  local names = { first = "First", rate = "Rate", ms = "Ms", jitter = "Jitter",
    status = "Status", code = "Code" }
  for item in params:gmatch("[^,]+") do
    local k, v = item:match("^%s*([%w_]+)%s*=%s*(.-)%s*$")
    local key = k and names[k:lower()]
    if not key then
      return nil, format("--fault '%s': unknown parameter '%s' (first, rate, ms, jitter, status, "
        .. "code)", spec, item)
    end
    if key == "Code" then
      rule.Code = v
    else
      local n = tonumber(v)
      if not n then return nil, format("--fault '%s': %s is not a number", spec, k) end
      rule[key] = (key == "First" or key == "Status") and math.tointeger(n) or n
      if rule[key] == nil then return nil, format("--fault '%s': %s must be an integer", spec, k) end
    end
  end
  return _M.check(rule, "--fault '" .. spec .. "'")
end

local mt = { __index = {} }
local methods = mt.__index

-- set: rules (already checked); seed: integer.
function _M.new(rules, seed)
  local self = setmetatable({ seed = seed, counts = {} }, mt)
  self:set(rules or {})
  return self
end

function methods:set(rules)
  self.rules = {}
  for i, r in ipairs(rules) do
    self.rules[i] = { rule = r, rng = util.rng(self.seed ~ util.hash(format("%d:%s:%s", i,
      r.Action, r.Kind))) }
  end
  self.counts = {}
end

function methods:list()
  local out = {}
  for i, e in ipairs(self.rules) do out[i] = e.rule end
  return out
end

-- Decide the faults for one call of action. Returns a plan table:
-- { delay_ms = n, kind = nil|"throttle"|..., rule = r } (kind nil = answer normally).
function methods:plan(action)
  local n = (self.counts[action] or 0) + 1
  self.counts[action] = n
  local plan = { delay_ms = 0 }
  for _, e in ipairs(self.rules) do
    local r = e.rule
    if r.Action == "*" or r.Action == action then
      local fires
      if r.First then
        fires = n <= r.First
      elseif r.Rate then
        fires = e.rng.float() < r.Rate
      else
        fires = true
      end
      if fires then
        if r.Kind == "latency" then
          local jitter = r.Jitter and r.Jitter > 0 and e.rng.float() * r.Jitter or 0
          plan.delay_ms = plan.delay_ms + r.Ms + jitter
        elseif not plan.kind then
          plan.kind, plan.rule = r.Kind, r
        end
      end
    end
  end
  return plan
end

-- Per-action QPS limits (--tencent-limits): Tencent's documented defaults.
_M.tencent_limits = { GetEidToken = 100, GetEidResult = 100, CheckEidTokenStatus = 2000 }

-- A fixed one-second window per action, on the real clock: limits are
-- about request rate, not about the simulated date.
function _M.limiter(limits, clock)
  local window, counts = -1, {}
  return function(action)
    local limit = limits[action]
    if not limit then return true end
    local now = clock()
    if now ~= window then window, counts = now, {} end
    local c = (counts[action] or 0) + 1
    counts[action] = c
    return c <= limit
  end
end

return _M
