-- eidkit.ledger: the EidToken ledger (issue -> result -> consume), on SQLite
-- or Redis. The transitions are C (libeidkit); this file is the class: a Lua
-- table wrapping the C object (docs/internals/classes.md), opened with the
-- payload key from config or the environment, with the sweep written here.
--
--   local ledger = require("eidkit.ledger").open("sqlite:./eidkit.db")
--   assert(ledger:issue{ EidToken = tok, MerchantId = mid, subject = "user-42" })
--   local rec, err = ledger:claim(tok, "user-42")
--   local rec, err = ledger:record(tok, response)         -- GetEidResult's Response
--   local rec, err = ledger:consume(tok, "user-42")       -- once; then err.code == "consumed"
--   local t = ledger:now()                                -- its clock: integer Unix seconds
--   local list = ledger:due(100)
local core = require "eidkit.core"
local pool_backend = require "eidkit.ledger.pool"

local type, tostring, getenv = type, tostring, os.getenv
local setmetatable = setmetatable
local format, char, tonumber = string.format, string.char, tonumber

local ledger_open, ledger_pool = core.ledger_open, core.ledger_pool
local host_now, floor = core.now, math.floor
local json_encode = require("cjson").new().encode

local _M = {}

-- The environment variable read for the payload key when opts.keep_payloads
-- is set and no key is given: 64 hex digits (32 bytes).
_M.PAYLOAD_KEY_ENV = "EIDKIT_LEDGER_KEY"

-- A ledger is { c = <the backend object> }: the C object from
-- core.ledger_open; or, with `workers`/`await`, eidkit.ledger.pool over
-- core.ledger_pool (worker threads); under OpenResty a Lua backend with the
-- same methods.
local mt = { __index = {} }
local methods = mt.__index

local function from_hex(s)
  if type(s) ~= "string" or #s ~= 64 or s:find("[^%x]") then return nil end
  return (s:gsub("%x%x", function(h) return char(tonumber(h, 16)) end))
end

-- open(url [, opts]) -> ledger | nil, err
-- opts: token_ttl (s, default 7200), result_window (s, default 3 days),
-- retention (Redis: s kept after the window, default 7 days), timeout_ms,
-- clock (function returning Unix seconds), keep_payloads (record and
-- sweep store each response, JSON-encoded and encrypted), payload_key (32 bytes) or payload_key_hex (64 hex
-- digits); with keep_payloads and neither, $EIDKIT_LEDGER_KEY (hex).
-- request_ids = false: records come back without their request_ids list
-- (the ledger still keeps it; for hosts that never read it, such as the
-- flow, which saves building up to 32 strings per record on every pull).
-- workers (1..64) and/or await (function(pool, id), see eidkit.ledger.pool):
-- run every call on worker threads, each with its own connection, so an
-- event loop can wait for them without blocking (eidkit serve).
function _M.open(url, opts)
  if type(url) ~= "string" then error("bad argument #1 to 'open' (url: expected string)", 2) end
  if opts ~= nil and type(opts) ~= "table" then
    error("bad argument #2 to 'open' (expected table of options)", 2)
  end
  opts = opts or {}
  local key = opts.payload_key
  if opts.payload_key_hex ~= nil then
    key = from_hex(opts.payload_key_hex)
    if not key then error("bad argument #2 to 'open' (payload_key_hex: expected 64 hex digits)", 2) end
  end
  if opts.keep_payloads and not key then
    local env = getenv(_M.PAYLOAD_KEY_ENV)
    if not env or env == "" then
      error(format("bad argument #2 to 'open' (keep_payloads: no payload key; set %s to 64 hex digits)",
        _M.PAYLOAD_KEY_ENV), 2)
    end
    key = from_hex(env)
    if not key then error(format("bad argument #2 to 'open' (%s: expected 64 hex digits)", _M.PAYLOAD_KEY_ENV), 2) end
  end
  local copts = {
    token_ttl = opts.token_ttl, result_window = opts.result_window, retention = opts.retention,
    timeout_ms = opts.timeout_ms, clock = opts.clock, payload_key = key, request_ids = opts.request_ids,
    -- record then stores each response it is given, JSON-encoded.
    payload_encoder = opts.keep_payloads and key and json_encode or nil,
  }
  if opts.workers ~= nil or opts.await ~= nil then
    if opts.await ~= nil and type(opts.await) ~= "function" then
      error("bad argument #2 to 'open' (await: expected function(pool, id))", 2)
    end
    if opts.workers ~= nil and (math.type(opts.workers) ~= "integer" or opts.workers < 1 or opts.workers > 64) then
      error("bad argument #2 to 'open' (workers: expected an integer 1..64)", 2)
    end
    local pool, err = ledger_pool(url, copts, opts.workers)
    if not pool then return nil, err end
    return setmetatable({ c = pool_backend.new(pool, opts.await), clock = opts.clock }, mt)
  end
  local c, err = ledger_open(url, copts)
  if not c then return nil, err end
  return setmetatable({ c = c, clock = opts.clock }, mt)
end

-- ledger:now() -> the ledger's time (integer Unix seconds): the clock
-- option's, or the system's, as the backend reads it for every call.
function methods.now(self)
  local clock = self.clock
  if clock then return clock() end
  return floor(host_now())
end

-- The backend's operations, one call each (core/include/eidkit/ledger.h has
-- the rules). Arguments pass through untouched, so the backend's argument
-- errors name the method and the position the caller wrote.
-- ledger:issue{EidToken=, MerchantId=, subject= [, Extra=, created_at=, expires_at=, intention=]}
--   -> true | nil, err
function methods.issue(self, ...) return self.c:issue(...) end
-- ledger:claim(EidToken, subject) -> record | nil, err; changes nothing
function methods.claim(self, ...) return self.c:claim(...) end
-- ledger:record(EidToken, response [, payload]) -> record | nil, err;
-- response is the Response table or its JSON text (record_text says so).
function methods.record(self, ...) return self.c:record(...) end
methods.record_text = true
-- ledger:consume(EidToken, subject) -> record | nil, err; once per token
function methods.consume(self, ...) return self.c:consume(...) end
-- ledger:get(EidToken) -> record | nil, err
function methods.get(self, ...) return self.c:get(...) end
-- ledger:due([limit]) -> {record...}: the tokens whose result must be pulled
function methods.due(self, ...) return self.c:due(...) end
-- ledger:export([{from =, to =}]) -> {record...} created in [from, to)
function methods.export(self, ...) return self.c:export(...) end
-- ledger:expire([now]) -> {expired = n, abandoned = n}
function methods.expire(self, ...) return self.c:expire(...) end
-- ledger:stats() -> {issued =, passed =, ..., total =, billable =, due =}
function methods.stats(self) return self.c:stats() end
-- ledger:attempts(EidToken) -> {attempt...} | nil, err: every LivenessDetail
-- entry recorded, once per Seq, by ReqTime then Seq: {Seq, ReqTime (Unix ms),
-- Errcode, IsNeedCharge, Sim, LivenessMode, CompareLibType}
function methods.attempts(self, ...) return self.c:attempts(...) end
-- ledger:payload(EidToken) -> the decrypted payload | nil, err
function methods.payload(self, ...) return self.c:payload(...) end
-- ledger:backend() -> "sqlite" | "redis"
function methods.backend(self) return self.c:backend() end
-- ledger:close(): frees the backend; again is a no-op, any other call raises
function methods.close(self) self.c:close() end

mt.__tostring = function(self) return tostring(self.c) end
mt.__close = function(self) self.c:close() end

-- ledger:sweep(pull [, opts]) -> report | nil, err: eidkit.ledger.sweep,
-- the one sweep both hosts run (eidkit.openresty.ledger too).
methods.sweep = require "eidkit.ledger.sweep"

-- The UTC day [from, to) of "YYYY-MM-DD", for export{from, to}.
function _M.day_range(date)
  local y, m, d = tostring(date):match("^(%d%d%d%d)%-(%d%d)%-(%d%d)$")
  if not y then return nil, "expected a date YYYY-MM-DD" end
  y, m, d = tonumber(y), tonumber(m), tonumber(d)
  if m < 1 or m > 12 or d < 1 or d > 31 then return nil, "expected a date YYYY-MM-DD" end
  -- Days from civil (Howard Hinnant's algorithm), independent of TZ.
  local yy = m <= 2 and y - 1 or y
  local era = yy // 400
  local yoe = yy - era * 400
  local mp = (m + 9) % 12
  local doy = (153 * mp + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  local days = era * 146097 + doe - 719468
  local from = days * 86400
  if core.utc_date(from) ~= date then return nil, "no such date" end
  return from, from + 86400
end

-- ledger:take(key, rate, burst [, now_ms]) -> true | false, retry_after_s | nil, err:
-- one token from the token bucket `key` (Unix ms; absent: the ledger's
-- clock), shared by every process on this ledger; eidkit.limiter.ledger
-- gives the gateway its buckets here.
function methods.take(self, ...) return self.c:take(...) end

-- ledger:give(key, rate, burst [, now_ms]) -> true | nil, err: one token
-- back into the bucket `key` (never above burst), for a take whose work
-- never happened; the arguments as take's.
function methods.give(self, ...) return self.c:give(...) end

return _M
