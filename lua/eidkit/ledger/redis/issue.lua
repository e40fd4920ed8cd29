-- eidkit ledger, Redis backend: issue a token (atomic; one hash slot).
-- luacheck: std lua51, read globals redis KEYS ARGV ERR_EXPIRED ERR_PENDING
-- Used by libeidkit (EVALSHA), after the prologue that defines ERR_EXPIRED
-- and ERR_PENDING (core/src/ledger_redis.c); OpenResty must send the same.
-- KEYS[1]  the token's hash, "<prefix>{<EidToken>}"
-- ARGV     token, merchant_id, subject, extra, created_at, expires_at,
--          result_deadline, nonce, key_ttl (seconds), intention ("1" | "0")
-- Returns  {"ok"} or {"exists"}. The nonce makes a retry after a lost reply
-- succeed instead of reporting "exists" for our own write.
local key = KEYS[1]
if redis.call("EXISTS", key) == 1 then
  if redis.call("HGET", key, "issue_nonce") == ARGV[8] then return { "ok" } end
  return { "exists" }
end
redis.call("HSET", key,
  "token", ARGV[1], "merchant_id", ARGV[2], "subject", ARGV[3], "extra", ARGV[4],
  "state", 0, "created_at", ARGV[5], "expires_at", ARGV[6], "result_deadline", ARGV[7],
  "finished_at", 0, "consumed_at", 0, "last_pull_at", 0,
  "pulls", 0, "attempts", 0, "billable", 0, "request_ids", "", "issue_nonce", ARGV[8],
  "intention", ARGV[10])
redis.call("EXPIRE", key, ARGV[9])
return { "ok" }
