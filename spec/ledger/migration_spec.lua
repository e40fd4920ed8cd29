-- Data written by an older eidkit keeps working after an upgrade (issue 14):
-- a token consumed with a failure before late verdicts existed is due again,
-- and its charges then count as settled. SQLite files are migrated by schema
-- version (spec/c/test_ledger.c, test_migration_v2); this is the Redis side,
-- on a redis-server the spec starts.
local ledger_mod = require "eidkit.ledger"
local redis = require "support.redis"

local T0 = 1735660800

describe("ledger migration (redis)", function()
  local srv = redis.available and redis.start() or nil
  teardown(function() if srv then srv:destroy() end end)

  it("re-indexes consumed failures and reads their settled charges", function()
    if not srv then return pending("no redis-server") end
    local now = T0
    local prefix = "mig" .. os.time() .. ":"
    local function open()
      return assert(ledger_mod.open(srv:url(0, prefix), { clock = function() return now end, token_ttl = 600 }))
    end
    local l = open()
    assert(l:issue { EidToken = "OLD-1", MerchantId = "m", subject = "u" })
    assert(l:record("OLD-1", { Text = { ErrCode = 2016, LivenessDetail = { { IsNeedCharge = true } } } }))
    assert(l:consume("OLD-1", "u"))
    l:close()
    -- What the previous version left: no settled_billable, not in the due
    -- index, no schema marker.
    local key = prefix .. "{OLD-1}"
    srv:cli("HDEL", key, "settled_billable")
    srv:cli("ZREM", prefix .. "due", "OLD-1")
    srv:cli("DEL", prefix .. "schema")
    l = open()
    assert.equals("2\n", srv:cli("GET", prefix .. "schema"))
    local due = l:due(10)
    assert.equals(1, #due)
    assert.same({ "OLD-1", "consumed", 1 }, { due[1].EidToken, due[1].state, due[1].settled_billable })
    local rec = assert(l:record("OLD-1", { Text = { ErrCode = 0,
      LivenessDetail = { { IsNeedCharge = true }, { IsNeedCharge = true } } } }))
    assert.same({ 2016, 0, 2, 1, true }, { rec.ErrCode, rec.late_ErrCode, rec.billable, rec.settled_billable, rec.late })
    l:close()
  end)

  it("leaves an empty ledger without a marker", function()
    if not srv then return pending("no redis-server") end
    local prefix = "empty" .. os.time() .. ":"
    local l = assert(ledger_mod.open(srv:url(0, prefix)))
    l:close()
    assert.equals("0\n", srv:cli("EXISTS", prefix .. "schema"))
  end)
end)
