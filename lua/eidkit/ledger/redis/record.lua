-- eidkit ledger, Redis backend: apply one GetEidResult outcome (atomic).
-- luacheck: std lua51, read globals redis KEYS ARGV ERR_EXPIRED ERR_PENDING
-- The rules are those of eid__ledger_apply in core/src/ledger.c:
-- idempotent, attempts and billable only grow, passed is final, a failed
-- verdict yields only to a response that saw at least as many attempts.
-- KEYS[1]  the token's hash
-- ARGV     now, has_verdict (0|1), err_code, attempts, billable, request_id
--          ("" none), max_ids, [payload] (sealed bytes; absent: keep)
-- Returns  {"ok", record...} or {"unknown_token"}; record is the field list
--          of FIELDS below followed by the payload's length.
-- ERR_EXPIRED, ERR_PENDING: Tencent's ErrCodes for "token expired" and "flow
-- not finished", defined by the prologue the loader puts before every
-- script (EID_ERRCODE_* in core/include/eidkit/ledger.h).
local FIELDS = { "token", "merchant_id", "subject", "extra", "state", "created_at", "expires_at",
  "result_deadline", "finished_at", "consumed_at", "last_pull_at", "pulls", "attempts",
  "billable", "err_code", "request_ids" }
local ISSUED, PASSED, FAILED, EXPIRED, ABANDONED = 0, 1, 2, 4, 5

local key = KEYS[1]
if redis.call("EXISTS", key) == 0 then return { "unknown_token" } end
local now, has_verdict, code = ARGV[1], ARGV[2] == "1", tonumber(ARGV[3])
local attempts, billable, rid, max_ids = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6],
  tonumber(ARGV[7])

local cur = redis.call("HMGET", key, "state", "attempts", "billable", "pulls", "err_code",
  "request_ids")
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
if attempts > old_attempts then
  set[#set + 1] = "attempts"; set[#set + 1] = attempts
end
if billable > old_billable then
  set[#set + 1] = "billable"; set[#set + 1] = billable
end

if has_verdict and code ~= ERR_PENDING then
  if code == ERR_EXPIRED then
    -- Settled by Tencent (no last pull needed), also after our TTL expiry.
    if state == ISSUED or (state == EXPIRED and not cur[5]) then
      set[#set + 1] = "state"; set[#set + 1] = EXPIRED
      set[#set + 1] = "err_code"; set[#set + 1] = ERR_EXPIRED
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
if ARGV[8] then set[#set + 1] = "payload"; set[#set + 1] = ARGV[8] end
redis.call("HSET", key, unpack(set))

local out = redis.call("HMGET", key, unpack(FIELDS))
table.insert(out, 1, "ok")
out[#out + 1] = redis.call("HSTRLEN", key, "payload")
return out
