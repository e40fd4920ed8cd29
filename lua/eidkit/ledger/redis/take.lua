-- eidkit ledger, Redis backend: take one token from a token bucket, or give
-- one back (atomic).
-- luacheck: std lua51, read globals redis KEYS ARGV ERR_EXPIRED ERR_PENDING
-- The rule is eid__ledger_bucket_take in core/src/ledger.c, with the same
-- arithmetic in the same order, so both backends answer alike.
-- KEYS[1]  the bucket's hash, "<prefix>bucket:<key>"
-- ARGV     now (the caller's Unix time in ms), rate (tokens a second), burst,
--          key_ttl (ms; longer than an empty bucket takes to fill), cost
--          ("1": take one, "-1": give one back, never above burst; absent: 1)
-- Returns  {1} (one token taken, or given back) or {0, retry_after}
--          (seconds, as a string so no digit is lost). A refusal writes
--          nothing. Time is the caller's, not the server's, so a frozen test
--          clock works; a caller whose clock is behind the last refill
--          refills nothing.
local key = KEYS[1]
local now, rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local cur = redis.call("HMGET", key, "tokens", "last")
local tokens, last = tonumber(cur[1]), tonumber(cur[2])
if not tokens or not last then tokens, last = burst, now end
if now > last then
  tokens = tokens + (now - last) * rate / 1000
  last = now
end
if tokens > burst then tokens = burst end
local cost = tonumber(ARGV[5]) or 1
if tokens < cost then return { 0, string.format("%.17g", (cost - tokens) / rate) } end
tokens = tokens - cost
if tokens > burst then tokens = burst end
redis.call("HSET", key, "tokens", string.format("%.17g", tokens), "last", string.format("%.17g", last))
redis.call("PEXPIRE", key, ARGV[4])
return { 1 }
