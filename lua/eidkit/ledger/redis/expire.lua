-- eidkit ledger, Redis backend: expire or abandon one token (atomic).
-- luacheck: std lua51, read globals redis KEYS ARGV ERR_EXPIRED ERR_PENDING
-- issued with its TTL over -> expired; issued or expired with its result
-- window over -> abandoned.
-- KEYS[1]  the token's hash
-- ARGV     now
-- Returns  {"expired"}, {"abandoned"} or {"none"}.
local ISSUED, EXPIRED, ABANDONED = 0, 4, 5
local key = KEYS[1]
local now = tonumber(ARGV[1])
local cur = redis.call("HMGET", key, "state", "expires_at", "result_deadline")
if not cur[1] then return { "none" } end
local state = tonumber(cur[1])
if (state == ISSUED or state == EXPIRED) and now >= tonumber(cur[3]) then
  redis.call("HSET", key, "state", ABANDONED)
  return { "abandoned" }
end
if state == ISSUED and now >= tonumber(cur[2]) then
  redis.call("HSET", key, "state", EXPIRED)
  return { "expired" }
end
return { "none" }
