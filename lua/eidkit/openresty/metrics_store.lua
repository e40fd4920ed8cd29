-- eidkit.openresty.metrics_store: eidkit.metrics' values in an
-- lua_shared_dict, so every nginx worker counts into the same numbers and
-- GET /metrics on any worker renders the sums (eidkit.metrics renders; this
-- only stores).
--
--   lua_shared_dict eidkit_metrics 4m;            # nginx/eidkit.conf
--   local store = require("eidkit.openresty.metrics_store").new(ngx.shared.eidkit_metrics)
--   local reg = require("eidkit.metrics").new{ store = store }
--
-- Each worker declares the same metrics (its own Lua state); a series is
-- claimed in the dict once (dict:add is atomic across workers), the count
-- of series per metric is a dict counter, so max_series holds over all
-- workers together. Size the dict so it never fills (nginx/eidkit.conf
-- says how): a full dict evicts its least recently used values, and a
-- write it cannot hold at all is counted under
-- eidkit_metrics_store_failures (store:failures()), never raised into a
-- request. The dict is for metrics alone: series(name) walks its keys.
local type, error, setmetatable, ipairs, pcall = type, error, setmetatable, ipairs, pcall
local find, sub = string.find, string.sub

local _M = {}

local mt = { __index = {} }
local methods = mt.__index

local SERIES, COUNT = "s\1", "n\1"
local FAILURES = "eidkit_metrics_store_failures"

-- new(dict) -> store
function _M.new(dict)
  if type(dict) ~= "table" and type(dict) ~= "userdata" then
    error("bad argument #1 to 'new' (expected an ngx.shared dict)", 2)
  end
  local ok = pcall(function() return dict.incr end)
  if not ok then error("bad argument #1 to 'new' (expected an ngx.shared dict)", 2) end
  return setmetatable({ dict = dict }, mt)
end

local function failed(self)
  self.dict:incr(FAILURES, 1, 0)
end

function methods.claim(self, name, key, max)
  local dict = self.dict
  local id = SERIES .. name .. "\1" .. key
  if dict:get(id) then return true end
  local n = dict:incr(COUNT .. name, 1, 0)
  if not n then
    failed(self)
    return false
  end
  if n > max then
    dict:incr(COUNT .. name, -1)
    return false
  end
  local ok, err = dict:add(id, true)
  if not ok then
    -- Another worker claimed it first ("exists"): it counted it.
    dict:incr(COUNT .. name, -1)
    if err ~= "exists" then
      failed(self)
      return false
    end
  end
  return true
end

function methods.add(self, id, n)
  if not self.dict:incr(id, n, 0) then failed(self) end
end

function methods.set(self, id, v)
  if not self.dict:set(id, v) then failed(self) end
end

function methods.get(self, id)
  return self.dict:get(id)
end

-- The label keys claimed for name. Walks the dict's keys (get_keys locks
-- the dict while it copies them): fine for a scrape, not for a request.
function methods.series(self, name)
  local prefix = SERIES .. name .. "\1"
  local n = #prefix
  local out = {}
  for _, k in ipairs(self.dict:get_keys(0)) do
    if sub(k, 1, n) == prefix and find(k, prefix, 1, true) == 1 then out[#out + 1] = sub(k, n + 1) end
  end
  return out
end

-- How many samples the dict could not hold (nothing reads this but a spec
-- and an operator's curiosity: GET /metrics shows nothing of it yet).
function methods.failures(self)
  return self.dict:get(FAILURES) or 0
end

mt.__name = "eidkit.MetricsStore"

return _M
