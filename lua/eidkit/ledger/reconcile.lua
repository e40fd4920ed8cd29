-- eidkit.ledger.reconcile: one day of the ledger as Tencent bills it, by the
-- day of each attempt's ReqTime in a time zone (Beijing by default), for
-- `eidkit ledger export` and `eidkit ledger reconcile` (docs/internals/ledger.md).
--
--   local rc = require "eidkit.ledger.reconcile"
--   local day, err = rc.day(ledger, "2026-12-01", "Asia/Shanghai")
--   -- day.tokens: records created that day or with an attempt that day, each
--   --   with day_attempts = {attempt...} (ReqTime in the day)
--   -- day.attempts: every attempt of the day, each with its token's record as .token
--   local totals = rc.totals(day)
local core = require "eidkit.core"
local ledger_mod = require "eidkit.ledger"

local type, ipairs, pairs, tonumber, format = type, ipairs, pairs, tonumber, string.format
local sort, date = table.sort, os.date

local _M = {}

_M.DEFAULT_TZ = "Asia/Shanghai"

-- The zones --tz accepts, by name, as fixed offsets from UTC. Asia/Shanghai
-- (China Standard Time) is UTC+8 all year and has had no daylight saving
-- time since 1991, so it needs no time zone database; a zone that changes
-- its offset (Europe/Berlin, America/New_York) would, and is refused rather
-- than guessed. A fixed offset (+08:00, -05:00) is taken as given.
local ZONES = { ["Asia/Shanghai"] = 8 * 3600, ["Asia/Chongqing"] = 8 * 3600, PRC = 8 * 3600,
  UTC = 0, ["Etc/UTC"] = 0 }

-- tz_offset(name) -> seconds east of UTC | nil, why
function _M.tz_offset(tz)
  if type(tz) ~= "string" then return nil, "expected a time zone" end
  local off = ZONES[tz]
  if off then return off end
  local sign, hh, mm = tz:match("^([+-])(%d%d):(%d%d)$")
  if sign then
    hh, mm = tonumber(hh), tonumber(mm)
    if hh <= 14 and mm < 60 then return (sign == "-" and -1 or 1) * (hh * 3600 + mm * 60) end
  end
  return nil, "only Asia/Shanghai (the default; also Asia/Chongqing, PRC), UTC and fixed offsets "
    .. "such as +08:00 are supported: other zones change their offset with daylight saving time"
end

-- Unix seconds t as ISO 8601 in the zone offset off ("Z" for UTC).
function _M.iso(t, off, ms)
  if not t then return "" end
  local s = date("!%Y-%m-%dT%H:%M:%S", t + off)
  if ms then s = s .. format(".%03d", ms) end
  if off == 0 then return s .. "Z" end
  local a = off < 0 and -off or off
  return s .. format("%s%02d:%02d", off < 0 and "-" or "+", a // 3600, a % 3600 // 60)
end

-- Attempts happen while a token lives, and Tencent keeps results for its
-- result window: a token created earlier than that before the day cannot
-- have an attempt in it.
local LOOKBACK = core.limits.result_window

-- day(ledger, date, tz) -> day | nil, err (err: a string for a bad date or
-- zone, else the ledger's error)
function _M.day(ledger, ymd, tz)
  local off, why = _M.tz_offset(tz or _M.DEFAULT_TZ)
  if not off then return nil, "--tz: " .. why end
  local from, to = ledger_mod.day_range(ymd)
  if not from then return nil, format("--date: %s, got '%s'", to, tostring(ymd)) end
  from, to = from - off, to - off
  local recs, err = ledger:export { from = from - LOOKBACK, to = to }
  if not recs then return nil, err end
  local day = { date = ymd, tz = tz or _M.DEFAULT_TZ, offset = off, from = from, to = to,
    tokens = {}, attempts = {} }
  local from_ms, to_ms = from * 1000, to * 1000
  for _, rec in ipairs(recs) do
    local mine = {}
    if rec.attempts > 0 then
      local list, aerr = ledger:attempts(rec.EidToken)
      if not list then return nil, aerr end
      for _, a in ipairs(list) do
        if a.ReqTime >= from_ms and a.ReqTime < to_ms then
          mine[#mine + 1] = a
          a.token = rec
          day.attempts[#day.attempts + 1] = a
        end
      end
    end
    rec.day_attempts = mine
    rec.issued_today = rec.created_at >= from and rec.created_at < to
    if rec.issued_today or #mine > 0 then day.tokens[#day.tokens + 1] = rec end
  end
  sort(day.attempts, function(a, b)
    if a.ReqTime ~= b.ReqTime then return a.ReqTime < b.ReqTime end
    if a.token.EidToken ~= b.token.EidToken then return a.token.EidToken < b.token.EidToken end
    return a.Seq < b.Seq
  end)
  return day
end

-- The verdicts billing is split by (eid-api.md §4.3: the billed ones).
local BILLED = {}
for _, e in ipairs(core.errcode_table) do
  if e.billed then BILLED[#BILLED + 1] = e.code end
end
_M.BILLED_CODES = BILLED

-- totals(day) -> {tokens_issued, attempts, billable, billable_by_code =
-- {["0"] =, ["2006"] =, ["2016"] =, other =}, billable_by_intention = {on =,
-- off =}, open = {EidToken...}, changed = {{EidToken, settled_billable,
-- billable}...}}
function _M.totals(day)
  local t = { date = day.date, tz = day.tz, tokens_issued = 0, attempts = #day.attempts, billable = 0,
    billable_by_code = { other = 0 }, billable_by_intention = { on = 0, off = 0 }, open = {}, changed = {} }
  for _, c in ipairs(BILLED) do t.billable_by_code[tostring(c)] = 0 end
  for _, a in ipairs(day.attempts) do
    if a.IsNeedCharge then
      t.billable = t.billable + 1
      local k = tostring(a.Errcode)
      if t.billable_by_code[k] == nil or k == "other" then k = "other" end
      t.billable_by_code[k] = t.billable_by_code[k] + 1
      local i = a.token.intention and "on" or "off"
      t.billable_by_intention[i] = t.billable_by_intention[i] + 1
    end
  end
  for _, rec in ipairs(day.tokens) do
    if rec.issued_today then t.tokens_issued = t.tokens_issued + 1 end
    if rec.open then t.open[#t.open + 1] = rec.EidToken end
    if rec.state == "consumed" and rec.billable > (rec.settled_billable or 0) then
      t.changed[#t.changed + 1] = { EidToken = rec.EidToken, settled_billable = rec.settled_billable,
        billable = rec.billable }
    end
  end
  return t
end

-- Keys of a table, sorted (for stable output).
function _M.sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  return keys
end

return _M
