-- eidkit ledger, Redis backend: apply one GetEidResult outcome (atomic).
-- luacheck: std lua51, read globals redis KEYS ARGV ERR_EXPIRED NO_VERDICT RECORD
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
--          record is RECORD's JSON array of the FIELDS values; late is 1
--          when this call stored a late pass, else 0.
-- ERR_EXPIRED: Tencent's ErrCode for "token expired"; NO_VERDICT: the
-- ErrCodes that are no verdict (only a pull), from eid_errcode_table;
-- RECORD(key): a record's fields packed into one JSON array. The prologue
-- the loader puts before every script defines them (EID_ERRCODE_* in
-- core/include/eidkit/ledger.h, the field list in core/src/ledger_redis.c).
local ISSUED, PASSED, FAILED, CONSUMED, EXPIRED, ABANDONED = 0, 1, 2, 3, 4, 5

local key = KEYS[1]
if redis.call("EXISTS", key) == 0 then return { "unknown_token" } end
local now, has_verdict, code = ARGV[1], ARGV[2] == "1", tonumber(ARGV[3])
local attempts, billable, rid, max_ids = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6],
  tonumber(ARGV[7])

local cur = redis.call("HMGET", key, "state", "attempts", "billable", "pulls", "err_code",
  "request_ids", "late_err_code", "settled_billable")
local state, old_attempts, old_billable = tonumber(cur[1]), tonumber(cur[2]), tonumber(cur[3])
local set = { "pulls", tonumber(cur[4]) + 1, "last_pull_at", now }

if rid ~= "" then
  local ids, seen = {}, false
  for id in string.gmatch(cur[6] or "", "[^,]+") do
    ids[#ids + 1] = id
    if id == rid then seen = true end
  end
  if not seen then
    ids[#ids + 1] = rid
    while #ids > max_ids do table.remove(ids, 1) end
    set[#set + 1] = "request_ids"
    set[#set + 1] = table.concat(ids, ",")
  end
end
-- Consumed before settled_billable existed: it had every charge then, so
-- fix that before this call adds any.
if state == CONSUMED and not cur[8] then
  set[#set + 1] = "settled_billable"; set[#set + 1] = old_billable
end
if attempts > old_attempts then
  set[#set + 1] = "attempts"; set[#set + 1] = attempts
end
if billable > old_billable then
  set[#set + 1] = "billable"; set[#set + 1] = billable
end

local late_pass = 0
if has_verdict and not NO_VERDICT[code] then
  if code == ERR_EXPIRED then
    -- Settled by Tencent (no last pull needed), also after our TTL expiry.
    if state == ISSUED or (state == EXPIRED and not cur[5]) then
      set[#set + 1] = "state"; set[#set + 1] = EXPIRED
      set[#set + 1] = "err_code"; set[#set + 1] = ERR_EXPIRED
    end
  elseif state == CONSUMED then
    -- A consumed failure (not Tencent's expiry) still takes a later verdict,
    -- beside the one the merchant was told, until a late pass.
    local told, late = tonumber(cur[5]), tonumber(cur[7])
    local current = late or told
    if told and told ~= 0 and told ~= ERR_EXPIRED and late ~= 0 and attempts >= old_attempts
      and code ~= current then
      set[#set + 1] = "late_err_code"; set[#set + 1] = code
      if code == 0 then late_pass = 1 end
    end
  else
    local free = state == ISSUED or state == EXPIRED or state == ABANDONED
    local replace = state == FAILED and attempts >= old_attempts and tonumber(cur[5]) ~= code
    if free or replace then
      set[#set + 1] = "state"; set[#set + 1] = code == 0 and PASSED or FAILED
      set[#set + 1] = "err_code"; set[#set + 1] = code
      set[#set + 1] = "finished_at"; set[#set + 1] = now
    end
  end
end
if ARGV[8] == "1" then set[#set + 1] = "intention"; set[#set + 1] = 1 end
-- "Look again later": an answer without a verdict keeps the token due.
set[#set + 1] = "retry_later"; set[#set + 1] = (has_verdict and NO_VERDICT[code]) and 1 or 0
local n = tonumber(ARGV[9])
local payload = ARGV[10 + 2 * n]
if payload then set[#set + 1] = "payload"; set[#set + 1] = payload end
redis.call("HSET", key, unpack(set))
-- Each attempt once per Seq, however often it is pulled; kept as long as the token.
if n > 0 then
  for i = 0, n - 1 do redis.call("HSETNX", KEYS[2], ARGV[10 + 2 * i], ARGV[11 + 2 * i]) end
  local ttl = redis.call("PTTL", key)
  if ttl > 0 then redis.call("PEXPIRE", KEYS[2], ttl) end
end

return { "ok", RECORD(key), redis.call("HSTRLEN", key, "payload"), late_pass }
