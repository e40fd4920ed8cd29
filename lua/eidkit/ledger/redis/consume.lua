-- eidkit ledger, Redis backend: consume a token exactly once (atomic).
-- luacheck: std lua51, read globals redis KEYS ARGV RECORD
-- The rules are those of eid__ledger_check_consume and
-- eid__ledger_apply_consume in core/src/ledger.c.
-- KEYS[1]  the token's hash
-- ARGV     now, subject, nonce
-- Returns  {"ok", record, payload length} (record: RECORD's JSON array)
--          or {code}: unknown_token, wrong_subject, consumed, expired,
--          pending. The nonce makes a retry after a lost
--          reply see its own win rather than "consumed".
-- The subject is compared through SHA-1 so the comparison time says nothing
-- about the stored value.
local ISSUED, PASSED, FAILED, CONSUMED, EXPIRED = 0, 1, 2, 3, 4

local key = KEYS[1]
local now, subject, nonce = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local cur = redis.call("HMGET", key, "state", "subject", "expires_at", "consume_nonce", "err_code",
  "billable")
if not cur[1] then return { "unknown_token" } end
if redis.sha1hex(cur[2]) ~= redis.sha1hex(subject) then return { "wrong_subject" } end
local state = tonumber(cur[1])
local function record()
  return { "ok", RECORD(key), redis.call("HSTRLEN", key, "payload") }
end
if state == CONSUMED then
  if cur[4] == nonce then return record() end
  return { "consumed" }
end
if state == ISSUED then
  if now >= tonumber(cur[3]) then return { "expired" } end
  return { "pending" }
end
-- Expired with Tencent's ERR_EXPIRED is a verdict: consumed once, like the others.
local settled_expiry = state == EXPIRED and cur[5]
if state ~= PASSED and state ~= FAILED and not settled_expiry then return { "expired" } end
redis.call("HSET", key, "state", CONSUMED, "consumed_at", now, "consume_nonce", nonce,
  "settled_billable", cur[6])
return record()
