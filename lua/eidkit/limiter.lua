-- eidkit.limiter: token buckets for eidkit.gateway (docs/internals/gateway.md).
--
--   local limiter = require "eidkit.limiter"
--   local lim = limiter.memory{ max_keys = 10000 }
--   local ok, retry_after = lim:take("upstream:GetEidToken", 80, 20, now)
--   -- true, or false and the seconds until one token is back
--   local shared = limiter.ledger(ledger)     -- buckets in an eidkit.ledger
--
-- The interface a gateway needs is this one method:
--
--   limiter:take(key, rate_per_s, burst, now) -> true | false, retry_after_s | nil, err
--
-- and, optionally, its undo (every limiter here has it):
--
--   limiter:give(key, rate_per_s, burst, now) -> true | nil, err
--
-- which puts back one token a take took, never above burst: the gateway
-- gives the per-subject token back when the upstream bucket then refuses,
-- so a request that never reached Tencent costs the caller nothing.
--
-- key is a string, rate_per_s > 0 tokens a second, burst >= 1 the bucket's
-- size, now Unix seconds (fractions allowed) from the caller's clock, so a
-- test freezes time by passing it. A bucket starts full. `nil, err` means
-- the limiter itself failed (a store that does not answer); the gateway
-- then refuses the request (503) rather than letting it through unlimited.
--
-- memory{} keeps its buckets in this Lua state: one process, one worker, so
-- N processes each allow the full rate. ledger(l) keeps them in a ledger
-- (ledger:take, eid_ledger_take): every process on the same Redis server (or
-- SQLite file) shares one bucket per key.
--
-- Loaded by OpenResty too: only what Lua 5.4 and LuaJIT both run.
local compat = require "eidkit.compat"

local type, error, pairs, setmetatable, tostring = type, error, pairs, setmetatable, tostring
local format, sort, floor = string.format, table.sort, math.floor
local pcall = pcall

local _M = {}

-- Default bound on the keys one memory limiter remembers.
_M.MAX_KEYS = 10000

local mt = { __index = {} }
local methods = mt.__index

local is_integer, finite = compat.is_integer, compat.finite

-- memory{max_keys = 10000} -> limiter
function _M.memory(opts)
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then
    error("bad argument #1 to 'memory' (expected a table of options)", 2)
  end
  for k in pairs(opts) do
    if k ~= "max_keys" then error(format("bad option '%s' (unknown option)", tostring(k)), 2) end
  end
  local max_keys = opts.max_keys
  if max_keys == nil then max_keys = _M.MAX_KEYS end
  if not is_integer(max_keys) or max_keys < 1 then
    error("bad option 'max_keys' (expected a positive integer)", 2)
  end
  return setmetatable({ buckets = {}, count = 0, max_keys = max_keys }, mt)
end

-- The tokens a bucket holds at `now` (step's refill, without a take).
local function level(b, rate, burst, now)
  local dt = now - b.last
  if dt < 0 then dt = 0 end
  local t = b.tokens + dt * rate
  if t > burst then t = burst end
  return t
end

-- Make room for one more key. First forget the buckets that are full again
-- (a full bucket and a missing one behave the same, so nothing is lost);
-- if that frees nothing, forget the least recently used half, whose
-- buckets have had the longest to refill.
local function make_room(self, now)
  local buckets = self.buckets
  for k, b in pairs(buckets) do
    if level(b, b.rate, b.burst, now) >= b.burst then
      buckets[k] = nil
      self.count = self.count - 1
    end
  end
  if self.count < self.max_keys then return end
  local keys = {}
  for k in pairs(buckets) do keys[#keys + 1] = k end
  sort(keys, function(a, b) return buckets[a].last < buckets[b].last end)
  local drop = #keys - self.max_keys + 1
  if drop < #keys / 2 then drop = #keys / 2 end
  for i = 1, drop do buckets[keys[i]] = nil end
  self.count = 0
  for _ in pairs(buckets) do self.count = self.count + 1 end
end

-- The arguments of take (or give: op), checked the same way for every
-- limiter (raises at the caller of take).
local function check_take(key, rate, burst, now, op)
  op = op or "take"
  if type(key) ~= "string" then error(format("bad argument #1 to '%s' (key: expected string)", op), 3) end
  if not finite(rate) or rate <= 0 then
    error(format("bad argument #2 to '%s' (rate_per_s: expected a positive number)", op), 3)
  end
  if not finite(burst) or burst < 1 then
    error(format("bad argument #3 to '%s' (burst: expected a number >= 1)", op), 3)
  end
  if not finite(now) then error(format("bad argument #4 to '%s' (now: expected seconds)", op), 3) end
end
_M.check_take = check_take -- for another limiter's take (eidkit.openresty.limiter)

-- limiter.step(tokens, last, rate, burst, now [, cost]) -> allowed, tokens,
-- last, retry_after: one take (cost 1, the default) from a bucket that held
-- `tokens` at `last` (a bucket never seen: tokens = nil, it starts full), or
-- one give (cost -1: a token back, never above burst; always allowed). The
-- rule every in-process bucket follows (memory here, an nginx shared dict in
-- eidkit.openresty.limiter); the ledger's take and give are the same rule in
-- its store (eid__ledger_bucket_take, take.lua).
function _M.step(tokens, last, rate, burst, now, cost)
  cost = cost or 1
  if tokens == nil then tokens, last = burst, now end
  local dt = now - last
  if dt < 0 then dt = 0 end -- a clock that stepped back refills nothing
  local t = tokens + dt * rate
  if t > burst then t = burst end
  -- `last` only moves forward.
  if now > last then last = now end
  if t < cost then return false, t, last, (cost - t) / rate end
  t = t - cost
  if t > burst then t = burst end
  return true, t, last
end
local step = _M.step

-- limiter:take(key, rate_per_s, burst, now) -> true | false, retry_after_s
function methods.take(self, key, rate, burst, now)
  check_take(key, rate, burst, now)
  local b = self.buckets[key]
  if b == nil then
    if self.count >= self.max_keys then make_room(self, now) end
    b = { tokens = burst, last = now }
    self.buckets[key] = b
    self.count = self.count + 1
  end
  -- Remember the parameters for make_room.
  b.rate, b.burst = rate, burst
  local ok, t, last, retry = step(b.tokens, b.last, rate, burst, now)
  b.tokens, b.last = t, last
  if ok then return true end
  return false, retry
end

-- limiter:give(key, rate_per_s, burst, now) -> true: one token back, never
-- above burst (a bucket forgotten is full: nothing to give back to).
function methods.give(self, key, rate, burst, now)
  check_take(key, rate, burst, now, "give")
  local b = self.buckets[key]
  if b == nil then return true end
  b.rate, b.burst = rate, burst
  local _, t, last = step(b.tokens, b.last, rate, burst, now, -1)
  b.tokens, b.last = t, last
  return true
end

-- limiter:size() -> how many keys are remembered
function methods.size(self)
  return self.count
end

mt.__name = "eidkit.Limiter"
mt.__tostring = function(self)
  return format("eidkit.limiter memory (%d/%d keys)", self.count, self.max_keys)
end

-- ledger(l) -> limiter whose buckets live in l, an eidkit.ledger (or any
-- object with take(key, rate, burst, now_ms)): ledger:take does each take
-- in one atomic step in the ledger's store, so every process and node on
-- the same Redis server (or SQLite file) shares one bucket per key.
-- take's `now` (seconds, fractions allowed) becomes whole milliseconds;
-- nodes should keep their clocks within a few ms (NTP): a node behind the
-- bucket's last refill refills nothing. The ledger's failure (`nil, err`)
-- is returned as is, so the gateway refuses (503).
local ledger_mt = { __index = {} }

function _M.ledger(ledger)
  local ok, has = pcall(function() return type(ledger.take) == "function" end)
  if not ok or not has then
    error("bad argument #1 to 'ledger' (expected an eidkit.ledger, with take)", 2)
  end
  return setmetatable({ ledger = ledger }, ledger_mt)
end

-- limiter:take(key, rate_per_s, burst, now) -> true | false, retry_after_s | nil, err
function ledger_mt.__index.take(self, key, rate, burst, now)
  check_take(key, rate, burst, now)
  -- Rounded, not truncated: 1700000000.001 * 1000 is a hair under ...001.
  return self.ledger:take(key, rate, burst, floor(now * 1000 + 0.5))
end

-- limiter:give(key, rate_per_s, burst, now) -> true | nil, err
function ledger_mt.__index.give(self, key, rate, burst, now)
  check_take(key, rate, burst, now, "give")
  return self.ledger:give(key, rate, burst, floor(now * 1000 + 0.5))
end

ledger_mt.__name = "eidkit.Limiter"
ledger_mt.__tostring = function(self)
  return "eidkit.limiter ledger (" .. tostring(self.ledger) .. ")"
end

return _M
