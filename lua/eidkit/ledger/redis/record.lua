-- eidkit ledger, Redis backend: apply one GetEidResult outcome (atomic).
-- luacheck: std lua51, read globals redis cjson KEYS ARGV ERR_EXPIRED NO_VERDICT FIELDS F
-- The rules are those of eid__ledger_apply in core/src/ledger.c:
-- idempotent, attempts and billable only grow, passed is final, a failed
-- verdict yields only to a response that saw at least as many attempts; on a
-- consumed failure such a verdict is kept as late_err_code.
-- KEYS[1]  the token's hash; KEYS[2] its attempts hash (one field per Seq,
--          in the same slot: "<prefix>{<EidToken>}:attempts")
-- ARGV     now, has_verdict (0|1), err_code, attempts, billable, request_id
--          ("" none), max_ids, intention (0|1), n, then n pairs Seq, value
--          (ledger_redis.c encodes the value), [payload] (sealed bytes;
--          absent: keep)
-- Returns  {"ok", record, payload length, late} or {"unknown_token"};
--          record is the JSON array RECORD would give (the FIELDS values
--          after this call); late is 1 when this call stored a late pass,
--          else 0.
-- ERR_EXPIRED: Tencent's ErrCode for "token expired"; NO_VERDICT: the
-- ErrCodes that are no verdict (only a pull), from eid_errcode_table;
-- FIELDS, F: a record's field names, and each one's index in FIELDS. The prologue
-- the loader puts before every script defines them (EID_ERRCODE_* in
-- core/include/eidkit/ledger.h, the field list in core/src/ledger_redis.c).
local ISSUED, PASSED, FAILED, CONSUMED, EXPIRED, ABANDONED = 0, 1, 2, 3, 4, 5

local key = KEYS[1]
-- The whole record in one read: every change below goes both to the HSET
-- and into rec, so rec is what HMGET would answer afterwards, and the
-- answer needs no second read (one EVALSHA of this script is on the path of
-- every poll of a pending token: two calls fewer and no table of ids took
-- 15-28 % off its cost in Redis, docs/BENCHMARKS.md).
local rec = redis.call("HMGET", key, unpack(FIELDS))
if not rec[F.token] then return { "unknown_token" } end
local now, has_verdict, code = ARGV[1], ARGV[2] == "1", tonumber(ARGV[3])
local attempts, billable, rid, max_ids = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6],
  tonumber(ARGV[7])

local state, old_attempts, old_billable = tonumber(rec[F.state]), tonumber(rec[F.attempts]),
  tonumber(rec[F.billable])
local told, late = tonumber(rec[F.err_code]), tonumber(rec[F.late_err_code])
local set, n = {}, 0
-- Values are stored as the text HMGET gives back.
local function put(field, value)
  value = tostring(value)
  set[n + 1], set[n + 2] = field, value
  n = n + 2
  rec[F[field]] = value
end

put("pulls", tonumber(rec[F.pulls]) + 1)
put("last_pull_at", now)

-- The ids are ','-separated, oldest first; a repeated one is kept once.
local function has_id(ids, id)
  local from = 1
  while true do
    local a, b = string.find(ids, id, from, true)
    if not a then return false end
    if (a == 1 or string.byte(ids, a - 1) == 44) and (b == #ids or string.byte(ids, b + 1) == 44) then
      return true
    end
    from = a + 1
  end
end

if rid ~= "" then
  local ids = rec[F.request_ids] or ""
  if not has_id(ids, rid) then
    ids = ids == "" and rid or ids .. "," .. rid
    local count, at = 1, string.find(ids, ",", 1, true)
    while at do
      count = count + 1
      at = string.find(ids, ",", at + 1, true)
    end
    while count > max_ids do -- the oldest go
      local comma = string.find(ids, ",", 1, true)
      ids = comma and string.sub(ids, comma + 1) or ""
      count = count - 1
    end
    put("request_ids", ids)
  end
end
-- Consumed before settled_billable existed: it had every charge then, so
-- fix that before this call adds any.
if state == CONSUMED and not rec[F.settled_billable] then put("settled_billable", old_billable) end
if attempts > old_attempts then put("attempts", attempts) end
if billable > old_billable then put("billable", billable) end

local late_pass = 0
if has_verdict and not NO_VERDICT[code] then
  if code == ERR_EXPIRED then
    -- Settled by Tencent (no last pull needed), also after our TTL expiry.
    if state == ISSUED or (state == EXPIRED and not told) then
      put("state", EXPIRED)
      put("err_code", ERR_EXPIRED)
    end
  elseif state == CONSUMED then
    -- A consumed failure (not Tencent's expiry) still takes a later verdict,
    -- beside the one the merchant was told, until a late pass.
    local current = late or told
    if told and told ~= 0 and told ~= ERR_EXPIRED and late ~= 0 and attempts >= old_attempts
      and code ~= current then
      put("late_err_code", code)
      if code == 0 then late_pass = 1 end
    end
  else
    local free = state == ISSUED or state == EXPIRED or state == ABANDONED
    local replace = state == FAILED and attempts >= old_attempts and told ~= code
    if free or replace then
      put("state", code == 0 and PASSED or FAILED)
      put("err_code", code)
      put("finished_at", now)
    end
  end
end
if ARGV[8] == "1" then put("intention", 1) end
-- "Look again later": an answer without a verdict keeps the token due.
put("retry_later", (has_verdict and NO_VERDICT[code]) and 1 or 0)
local nd = tonumber(ARGV[9])
local payload = ARGV[10 + 2 * nd]
if payload then set[n + 1], set[n + 2] = "payload", payload end
redis.call("HSET", key, unpack(set))
-- Each attempt once per Seq, however often it is pulled; kept as long as the token.
if nd > 0 then
  for i = 0, nd - 1 do redis.call("HSETNX", KEYS[2], ARGV[10 + 2 * i], ARGV[11 + 2 * i]) end
  local ttl = redis.call("PTTL", key)
  if ttl > 0 then redis.call("PEXPIRE", KEYS[2], ttl) end
end

return { "ok", cjson.encode(rec), redis.call("HSTRLEN", key, "payload"), late_pass }
