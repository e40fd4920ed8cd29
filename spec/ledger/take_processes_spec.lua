-- Two OS processes (the eidkit program running spec/ledger/fixtures/taker.lua,
-- started with core.spawn) hammer ledger:take on one key of one store: one
-- SQLite file, one redis-server. Together they are allowed what one bucket
-- allows, burst + rate x the window (+-1), never what two buckets would.
--
-- The window starts when the spec itself takes the first tokens, at a time
-- it chooses (the start the takers wait for), so a taker held up between
-- reading its clock and reaching the store cannot move the bucket's birth.
-- On the real clock the spec empties the bucket at its birth: refill is lost
-- only while the bucket is full, so the takers may start up to a second
-- late (the burst) without changing the total. Taking one token left it a
-- token from full, and takers that a loaded machine started 20 ms late
-- found 2 tokens fewer than one bucket allows.
local core = require "eidkit.core"
local ledger_mod = require "eidkit.ledger"
local redis = require "support.redis"
local proc = require "support.proc"

local TAKER = "spec/ledger/fixtures/taker.lua"
local RATE, BURST = 100, 100 -- Tencent's 100/s, a second of burst
local WINDOW = 2 -- s, on the real clock

local tmp = proc.output("mktemp -d /tmp/eidkit-take2-XXXXXX"):gsub("%s+$", "")
local srv = redis.available and redis.start() or nil
teardown(function()
  if srv then srv:destroy() end
  proc.sh("rm -rf " .. proc.quote(tmp))
end)

local urls = { sqlite = "sqlite:" .. tmp .. "/shared.db" }
if srv then urls.redis = srv:url(0, "two:") end

-- Take the bucket's first n tokens at born (ms), then start two takers on
-- url and key, both waiting for the same moment, start (Unix s); each gets
-- the arguments that follow. Returns their reports {allowed, refused,
-- first, last} (first and last: the times they passed to take, ms).
local function pair(url, key, n, born, start, ...)
  local ledger = assert(ledger_mod.open(url))
  for _ = 1, n do assert.is_true(ledger:take(key, RATE, BURST, born)) end
  ledger:close()
  start = string.format("%.3f", start)
  local ps = {}
  for i = 1, 2 do
    local out = ("%s/%s-%s-%d"):format(tmp, key, url:match("^%a+"), i)
    local argv = { proc.bin(), "run", TAKER, url, key, tostring(RATE), tostring(BURST), start, ... }
    ps[i] = { out = out,
      p = assert(core.spawn(argv, { stdout = out, stderr = out .. ".err", die_with_parent = true })) }
  end
  local reports = {}
  for i, t in ipairs(ps) do
    assert.same({ 0, "exit" }, { t.p:wait(60) }, proc.read(t.out .. ".err"))
    t.p:close()
    local a, r, first, last = proc.read(t.out):match("^(%d+) (%d+) (%d+) (%d+)\n$")
    assert.is_truthy(a, proc.read(t.out))
    reports[i] = { allowed = tonumber(a), refused = tonumber(r), first = tonumber(first), last = tonumber(last) }
  end
  return reports
end

for name, url in pairs(urls) do
  describe("two processes taking from one bucket on " .. name, function()
    it("are allowed the burst once, on a frozen clock", function()
      local frozen = 1735660800000
      local r = pair(url, "frozen", 1, frozen, core.now() + 0.5, "frozen", tostring(frozen), "300")
      for i = 1, 2 do assert.equals(300, r[i].allowed + r[i].refused) end
      -- One bucket: 100, the spec's token included. Two would have been 200.
      assert.equals(BURST, 1 + r[1].allowed + r[2].allowed)
    end)

    it("are allowed burst + rate x window between them, on the real clock", function()
      local start = math.floor((core.now() + 0.5) * 1000)
      local r = pair(url, "real", BURST, start, start / 1000, "real", string.format("%.3f", start / 1000 + WINDOW))
      local last = math.max(r[1].last, r[2].last)
      local one = BURST + RATE * (last - start) / 1000 -- what one bucket allows
      local total = BURST + r[1].allowed + r[2].allowed -- the spec's burst included
      for i = 1, 2 do
        -- Both hammered the bucket well past empty for the whole window.
        assert.is_true(r[i].refused > 10 * r[i].allowed, ("process %d: %d refused, %d allowed"):format(
          i, r[i].refused, r[i].allowed))
        assert.is_true(r[i].allowed > 0, "process " .. i .. " was never allowed")
      end
      assert.is_true((last - start) / 1000 > WINDOW * 0.9, "the window was " .. (last - start) .. " ms")
      assert.is_true(math.abs(total - one) <= 1, ("%d allowed, one bucket allows %.2f (two: %.2f)"):format(
        total, one, 2 * one))
    end)
  end)
end
