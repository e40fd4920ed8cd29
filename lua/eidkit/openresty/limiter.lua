-- eidkit.openresty.limiter: eidkit.gateway's token buckets in an
-- lua_shared_dict, so every worker of one nginx takes from the same bucket
-- per key. (Across nginx instances: eidkit.limiter.ledger over the Redis
-- ledger's take, the same as on the Lua 5.4 host.)
--
--   lua_shared_dict eidkit_limits 1m;             # nginx/eidkit.conf
--   local lim = require("eidkit.openresty.limiter").new(ngx.shared.eidkit_limits)
--   lim:take("upstream:GetEidResult", 80, 20, ngx.now())  -- true | false, retry_after | nil, err
--
-- The refill rule is eidkit.limiter.step, the one the memory limiter uses.
-- A take reads and writes the bucket under a per-key lock (dict:add with a
-- short expiry, so a worker that dies holding it frees it within
-- LOCK_TTL); while another worker holds it, the caller yields (ngx.sleep)
-- and tries again, at most LOCK_WAIT seconds, then answers nil, err (the
-- gateway refuses, 503). A bucket's entry expires once it would be full
-- again, so idle keys leave the dict by themselves.
local limiter = require "eidkit.limiter"

local type, error, setmetatable, pcall, tonumber = type, error, setmetatable, pcall, tonumber
local format, match = string.format, string.match
local ngx = ngx

local _M = {}

_M.LOCK_TTL = 0.1
_M.LOCK_WAIT = 1

local mt = { __index = {} }
local methods = mt.__index
local step, check_take = limiter.step, limiter.check_take

-- new(dict) -> limiter
function _M.new(dict)
  local ok = (type(dict) == "table" or type(dict) == "userdata") and pcall(function() return dict.add end)
  if not ok then error("bad argument #1 to 'new' (expected an ngx.shared dict)", 2) end
  return setmetatable({ dict = dict }, mt)
end

local function lock(dict, key)
  local waited, pause = 0, 0.001
  while true do
    local ok, err = dict:add(key, true, _M.LOCK_TTL)
    if ok then return true end
    if err ~= "exists" then return nil, "the limits dict refused the lock: " .. tostring(err) end
    if waited >= _M.LOCK_WAIT then return nil, "the limits dict's lock stayed taken" end
    ngx.sleep(pause)
    waited = waited + pause
    if pause < 0.01 then pause = pause * 2 end
  end
end

-- One step (cost 1: take, -1: give) on the bucket under its lock.
local function bucket(self, key, rate, burst, now, cost)
  local dict = self.dict
  local lkey, bkey = "l\1" .. key, "b\1" .. key
  local ok, err = lock(dict, lkey)
  if not ok then return nil, err end
  local tokens, last
  local v = dict:get(bkey)
  if type(v) == "string" then
    local t, l = match(v, "^([^ ]+) ([^ ]+)$")
    tokens, last = tonumber(t), tonumber(l)
  end
  if tokens == nil and cost < 0 then -- gone: full, nothing to give back to
    dict:delete(lkey)
    return true
  end
  local allowed, t, l, retry = step(tokens, tokens and last, rate, burst, now, cost)
  -- Gone once full again: a missing bucket and a full one are the same.
  local ttl = (burst - t) / rate + 1
  local sok, serr = dict:set(bkey, format("%.17g %.17g", t, l), ttl)
  dict:delete(lkey)
  if not sok then return nil, "the limits dict refused the bucket: " .. tostring(serr) end
  if allowed then return true end
  return false, retry
end

-- limiter:take(key, rate_per_s, burst, now) -> true | false, retry_after_s | nil, err
function methods.take(self, key, rate, burst, now)
  check_take(key, rate, burst, now)
  return bucket(self, key, rate, burst, now, 1)
end

-- limiter:give(key, rate_per_s, burst, now) -> true | nil, err: one token
-- back, never above burst.
function methods.give(self, key, rate, burst, now)
  check_take(key, rate, burst, now, "give")
  return bucket(self, key, rate, burst, now, -1)
end

mt.__name = "eidkit.Limiter"
mt.__tostring = function() return "eidkit.limiter shared dict" end

return _M
