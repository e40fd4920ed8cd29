-- eidkit ledger, Redis backend: one record, in one string.
-- luacheck: std lua51, read globals redis KEYS RECORD
-- Not a transition: what HMGET of FIELDS and HSTRLEN payload give, shaped
-- like the transitions' answers, for a client whose reply parser runs in Lua
-- (eidkit.openresty.ledger), where an answer of twenty-odd bulk strings costs
-- two socket reads each. The C backend reads with HMGET (hiredis parses in C).
-- KEYS[1]  the token's hash
-- Returns  {"ok", record, payload length}: record is RECORD's JSON array
--          (all false when there is no such token).
local key = KEYS[1]
return { "ok", RECORD(key), redis.call("HSTRLEN", key, "payload") }
