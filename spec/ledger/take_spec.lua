-- ledger:take (eid_ledger_take), the token bucket the gateway's limits share
-- through eidkit.limiter.ledger, on SQLite and on a redis-server this spec
-- starts: the arithmetic step by step on a frozen clock, the same answers
-- from both backends, the argument checks, the ledger's own clock, where
-- the buckets live and how they vanish, and a backend that does not answer.
local ledger_mod = require "eidkit.ledger"
local limiter = require "eidkit.limiter"
local core = require "eidkit.core"
local redis = require "support.redis"
local proc = require "support.proc"

local T = 1735660800 -- s; the ledgers' frozen clock
local MS = T * 1000

local tmp = proc.output("mktemp -d /tmp/eidkit-take-XXXXXX"):gsub("%s+$", "")
local srv = redis.available and redis.start() or nil
local serial = 0

local backends = {
  sqlite = function()
    serial = serial + 1
    return ("sqlite:%s/take-%d.db"):format(tmp, serial)
  end,
}
if srv then
  backends.redis = function()
    serial = serial + 1
    return srv:url(0, ("take%d-%d:"):format(os.time(), serial))
  end
end

teardown(function()
  if srv then srv:destroy() end
  proc.sh("rm -rf " .. proc.quote(tmp))
end)

-- A fixed pseudo-random walk (no math.random: the same on every run):
-- {key, at (ms after MS), rate, burst}, with time going back now and then
-- as another node's clock would.
local function walk(n)
  local x, at, out = 12345, 0, {}
  local function nxt(m)
    x = (x * 1103515245 + 12345) % 2147483648
    return x % m
  end
  local rates = { 100, 80, 2, 5 / 600, 0.3, 7, 1000 }
  local bursts = { 20, 1, 3, 5, 2.5, 50 }
  for i = 1, n do
    at = at + nxt(40) - 5
    if at < 0 then at = 0 end
    local k = nxt(3) + 1
    out[i] = { "walk:" .. k, at, rates[k + nxt(2) * 3] or rates[k], bursts[k + nxt(2)] }
  end
  return out
end

-- Each backend as the C object and as the worker pool eidkit serve uses
-- (ledger.open with workers): the same answers either way.
local modes = { { "", {} }, { " through a worker pool", { workers = 2 } } }
for name, new_url in pairs(backends) do for _, mode in ipairs(modes) do
  describe("ledger:take on " .. name .. mode[1], function()
    local url, ledger, now

    before_each(function()
      now = T
      url = new_url()
      ledger = assert(ledger_mod.open(url, { clock = function() return now end, workers = mode[2].workers }))
    end)
    after_each(function() ledger:close() end)

    it("follows the bucket step by step on a frozen clock", function()
      -- {key, ms after MS, rate, burst, expected answer}
      local steps = {
        -- A new bucket is full: burst takes, then the exact wait for one.
        { "b", 0, 2, 3, { true } },
        { "b", 0, 2, 3, { true } },
        { "b", 0, 2, 3, { true } },
        { "b", 0, 2, 3, { false, 0.5 } },
        { "b", 250, 2, 3, { false, 0.25 } }, -- half a token back
        { "b", 500, 2, 3, { true } },
        { "b", 500, 2, 3, { false, 0.5 } },
        -- A clock behind the last refill (another node's) refills nothing.
        { "b", 400, 2, 3, { false, 0.5 } },
        { "b", 750, 2, 3, { false, 0.25 } },
        -- Ten idle seconds refill to burst, not to 20.
        { "b", 10500, 2, 3, { true } },
        { "b", 10500, 2, 3, { true } },
        { "b", 10500, 2, 3, { true } },
        { "b", 10500, 2, 3, { false, 0.5 } },
        -- Another key is another bucket.
        { "c", 10500, 2, 3, { true } },
        -- A lower burst caps what is stored (9 tokens become 2).
        { "d", 0, 1, 10, { true } },
        { "d", 0, 1, 2, { true } },
        { "d", 0, 1, 2, { true } },
        { "d", 0, 1, 2, { false, 1 } },
        -- Milliseconds count: 4 a second is half a token in 125 ms.
        { "e", 0, 4, 1, { true } },
        { "e", 125, 4, 1, { false, 0.125 } },
        { "e", 250, 4, 1, { true } },
        -- A fractional burst: two takes, then half a token.
        { "f", 0, 1, 2.5, { true } },
        { "f", 0, 1, 2.5, { true } },
        { "f", 0, 1, 2.5, { false, 0.5 } },
        -- Any text but control characters makes a key.
        { "subject:韦 小宝", 0, 1, 1, { true } },
        { "subject:韦 小宝", 0, 1, 1, { false, 1 } },
        -- give: one token back, refilled first as for a take, never above burst.
        { "h", 0, 2, 3, { true } },
        { "h", 0, 2, 3, { true } },
        { "h", 0, 2, 3, { true } },
        { "h", 250, 2, 3, { true }, "give" }, -- 0.5 + 1
        { "h", 250, 2, 3, { true } },
        { "h", 250, 2, 3, { false, 0.25 } },
        { "h", 250, 2, 3, { true }, "give" },
        { "h", 250, 2, 3, { true }, "give" },
        { "h", 250, 2, 3, { true }, "give" },
        { "h", 250, 2, 3, { true }, "give" }, -- 3.5, kept at 3
        { "h", 250, 2, 3, { true } },
        { "h", 250, 2, 3, { true } },
        { "h", 250, 2, 3, { true } },
        { "h", 250, 2, 3, { false, 0.5 } },
        -- To a bucket never seen (full), a give adds nothing.
        { "i", 0, 1, 1, { true }, "give" },
        { "i", 0, 1, 1, { true } },
        { "i", 0, 1, 1, { false, 1 } },
      }
      for i, s in ipairs(steps) do
        local op = s[6] or "take"
        assert.same(s[5], { ledger[op](ledger, s[1], s[3], s[4], MS + s[2]) }, "step " .. i)
      end
    end)

    it("gives the gateway's subject limit, 5 per 600 s, to the second", function()
      local rate = 5 / 600
      for _ = 1, 5 do assert.same({ true }, { ledger:take("subject:u", rate, 5, MS) }) end
      local ok, retry = ledger:take("subject:u", rate, 5, MS)
      assert.is_false(ok)
      assert.near(120, retry, 1e-9)
      ok, retry = ledger:take("subject:u", rate, 5, MS + 119000)
      assert.is_false(ok)
      assert.near(1, retry, 1e-9)
      assert.same({ true }, { ledger:take("subject:u", rate, 5, MS + 120000) })
    end)

    it("reads the ledger's clock (seconds, times 1000) when now is absent or 0", function()
      assert.same({ true }, { ledger:take("clock", 1, 1) })
      assert.same({ false, 1 }, { ledger:take("clock", 1, 1, 0) })
      assert.same({ false, 0.5 }, { ledger:take("clock", 1, 1, MS + 500) })
      now = T + 1
      assert.same({ true }, { ledger:take("clock", 1, 1) })
    end)

    it("is shared by every handle on the same store", function()
      local other = assert(ledger_mod.open(url))
      assert.same({ true }, { ledger:take("shared", 10, 2, MS) })
      assert.same({ true }, { other:take("shared", 10, 2, MS) })
      assert.same({ false, 0.1 }, { other:take("shared", 10, 2, MS) })
      assert.same({ false, 0.1 }, { ledger:take("shared", 10, 2, MS) })
      assert.same({ true }, { ledger:take("shared", 10, 2, MS + 100) })
      assert.same({ false, 0.1 }, { other:take("shared", 10, 2, MS + 100) })
      other:close()
    end)

    it("raises on misuse, naming the argument", function()
      local max = core.limits.bucket_key_max
      assert.equals(256, max)
      assert.equals(366 * 86400, core.limits.bucket_refill_max)
      local cases = {
        { {}, "bad argument #1 to 'take' (string expected, got no value)" },
        { { "k" }, "bad argument #2 to 'take' (number expected, got no value)" },
        { { "k", 1 }, "bad argument #3 to 'take' (number expected, got no value)" },
        { { "", 1, 1 }, "bad argument #1 to 'take' (key: must not be empty)" },
        { { ("k"):rep(max + 1), 1, 1 }, "bad argument #1 to 'take' (key: longer than 256 bytes)" },
        { { "a\nb", 1, 1 }, "bad argument #1 to 'take' (key: byte 2 is not allowed (expected no control characters))" },
        { { "a\0b", 1, 1 }, "bad argument #1 to 'take' (contains a NUL byte)" },
        { { "k", 0, 1 }, "bad argument #2 to 'take' (rate: must be a positive number per second)" },
        { { "k", -2, 1 }, "bad argument #2 to 'take' (rate: must be a positive number per second)" },
        { { "k", 0 / 0, 1 }, "bad argument #2 to 'take' (rate: must be a positive number per second)" },
        { { "k", math.huge, 1 }, "bad argument #2 to 'take' (rate: must be a positive number per second)" },
        { { "k", 1e-9, 1 }, "bad argument #2 to 'take' (rate: too slow: burst / rate must be at most 31622400 seconds)" },
        { { "k", 1, 0.5 }, "bad argument #3 to 'take' (burst: must be a number >= 1)" },
        { { "k", 1, math.huge }, "bad argument #3 to 'take' (burst: must be a number >= 1)" },
        { { "k", 1, 1, -1 }, "bad argument #4 to 'take' (now_ms: out of range)" },
        { { "k", 1, 1, 1.5 }, "bad argument #4 to 'take' (number has no integer representation)" },
        { { "k", 1, 1, "soon" }, "bad argument #4 to 'take' (number expected, got string)" },
      }
      for _, c in ipairs(cases) do
        assert.has_error(function() ledger:take(table.unpack(c[1])) end, c[2])
        -- give checks its arguments the same way, in its own name
        local gmsg = c[2]:gsub("to 'take'", "to 'give'")
        assert.has_error(function() ledger:give(table.unpack(c[1])) end, gmsg)
      end
      -- The longest key and the slowest rate are fine.
      assert.same({ true }, { ledger:take(("k"):rep(max), 1, 1, MS) })
      assert.same({ true }, { ledger:take("slow", 1 / core.limits.bucket_refill_max, 1, MS) })
      ledger:close()
      assert.has_error(function() ledger:take("k", 1, 1) end,
        mode[2].workers and "attempt to use a closed eidkit.LedgerPool" or "attempt to use a closed eidkit.Ledger")
    end)
  end)
end end

describe("ledger:take on every backend", function()
  it("gives the same answers, to the last bit, on SQLite and Redis", function()
    if not srv then pending("redis-server is not installed") return end
    local answers = {}
    for name, new_url in pairs(backends) do
      local l = assert(ledger_mod.open(new_url()))
      local got = {}
      for i, s in ipairs(walk(600)) do
        -- every seventh step gives a token back instead
        got[i] = { l[i % 7 == 0 and "give" or "take"](l, s[1], s[3], s[4], MS + s[2]) }
      end
      l:close()
      answers[name] = got
    end
    local allowed = 0
    for _, a in ipairs(answers.sqlite) do if a[1] then allowed = allowed + 1 end end
    assert.is_true(allowed > 100 and allowed < 500, "the walk both takes and is refused: " .. allowed)
    assert.same(answers.sqlite, answers.redis)
  end)
end)

describe("where the buckets live", function()
  it("SQLite: a table, whose buckets expire() deletes once they are full again", function()
    local db = tmp .. "/where.db"
    local now = T
    local l = assert(ledger_mod.open("sqlite:" .. db, { clock = function() return now end }))
    local function rows()
      return proc.output("sqlite3 " .. proc.quote(db) .. " 'SELECT key FROM buckets ORDER BY key'")
    end
    assert.is_true(l:take("upstream:GetEidToken", 1, 3, MS))
    assert.is_true(l:take("subject:u", 1, 1, MS))
    assert.equals("subject:u\nupstream:GetEidToken\n", rows())
    -- Full again after 1 s and 3 s (1 and 3 tokens at 1 a second), then
    -- kept 1 s more.
    now = T + 2
    l:expire()
    assert.equals("subject:u\nupstream:GetEidToken\n", rows())
    now = T + 3
    l:expire()
    assert.equals("upstream:GetEidToken\n", rows())
    now = T + 5
    l:expire()
    assert.equals("", rows())
    l:close()
  end)

  it("Redis: one hash under the ledger's prefix, expiring once the bucket is full again", function()
    if not srv then pending("redis-server is not installed") return end
    local l = assert(ledger_mod.open(srv:url(3, "where:")))
    assert.is_true(l:take("upstream:GetEidToken", 10, 5, MS))
    local key = "where:bucket:upstream:GetEidToken"
    assert.equals(key .. "\n", srv:cli("-n", 3, "KEYS", "*"))
    local ttl = tonumber(srv:cli("-n", 3, "PTTL", key))
    -- An empty bucket refills in 500 ms; the key lives 1 s more.
    assert.is_true(ttl > 1000 and ttl <= 1501, "PTTL " .. tostring(ttl))
    -- A refusal writes nothing.
    for _ = 1, 4 do assert.is_true(l:take("upstream:GetEidToken", 10, 5, MS)) end
    local before = srv:cli("-n", 3, "HGETALL", key)
    assert.is_false(l:take("upstream:GetEidToken", 10, 5, MS + 50))
    assert.equals(before, srv:cli("-n", 3, "HGETALL", key))
    l:close()
  end)
end)

describe("a backend that does not answer", function()
  it("is nil, err from ledger:take and from limiter.ledger", function()
    if not srv then pending("redis-server is not installed") return end
    local down = redis.start()
    local l = assert(ledger_mod.open(down:url(0, "down:"), { timeout_ms = 500 }))
    assert.is_true(l:take("k", 1, 1, MS))
    down:destroy()
    local v, err = l:take("k", 1, 1, MS)
    assert.is_nil(v)
    assert.equals("unavailable", err.code)
    assert.matches("^unavailable: redis: ", tostring(err))
    v, err = limiter.ledger(l):take("k", 1, 1, T)
    assert.is_nil(v)
    assert.equals("unavailable", err.code)
    l:close()
  end)
end)

describe("eidkit.limiter.ledger", function()
  it("raises on misuse like every limiter", function()
    assert.has_error(function() limiter.ledger() end,
      "bad argument #1 to 'ledger' (expected an eidkit.ledger, with take)")
    assert.has_error(function() limiter.ledger({}) end,
      "bad argument #1 to 'ledger' (expected an eidkit.ledger, with take)")
    local lim = limiter.ledger(assert(ledger_mod.open("sqlite::memory:")))
    assert.has_error(function() lim:take(1, 1, 1, T) end, "bad argument #1 to 'take' (key: expected string)")
    assert.has_error(function() lim:take("k", 0, 1, T) end,
      "bad argument #2 to 'take' (rate_per_s: expected a positive number)")
    assert.has_error(function() lim:take("k", 1, 0.5, T) end, "bad argument #3 to 'take' (burst: expected a number >= 1)")
    assert.has_error(function() lim:take("k", 1, 1, nil) end, "bad argument #4 to 'take' (now: expected seconds)")
    assert.matches("^eidkit%.limiter ledger %(eidkit%.Ledger %(sqlite", tostring(lim))
  end)

  it("turns the caller's seconds into whole milliseconds, rounded", function()
    local seen = {}
    local fake = { take = function(_, ...) seen[#seen + 1] = { ... } return true end }
    local lim = limiter.ledger(fake)
    assert.is_true(lim:take("k", 80, 20, 1700000000.001))
    assert.is_true(lim:take("k", 80, 20, 1700000000.0004))
    assert.is_true(lim:take("k", 80, 20, 1700000000))
    assert.same({ { "k", 80, 20, 1700000000001 }, { "k", 80, 20, 1700000000000 },
      { "k", 80, 20, 1700000000000 } }, seen)
    assert.equals("integer", math.type(seen[1][4]))
  end)

  it("answers as the memory limiter does, from the ledger's bucket", function()
    local l = assert(ledger_mod.open("sqlite::memory:"))
    local lim, mem = limiter.ledger(l), limiter.memory()
    for _, at in ipairs { 0, 0, 0, 0, 0.25, 0.5, 0.5, 10, 10, 10, 10 } do
      assert.same({ mem:take("k", 2, 3, T + at) }, { lim:take("k", 2, 3, T + at) }, "at " .. at)
    end
    -- and gives back as it does, never above burst: {op, at, the answer}
    for _, s in ipairs { { "give", 10, { true } }, { "take", 10, { true } }, { "take", 10, { false, 0.5 } },
      { "give", 10.1, { true } }, { "give", 10.1, { true } }, { "give", 10.1, { true } },
      { "give", 10.1, { true } }, -- 3.2, kept at 3
      { "take", 10.1, { true } }, { "take", 10.1, { true } }, { "take", 10.1, { true } },
      { "take", 10.1, { false, 0.5 } }, { "give", 20, { true } }, { "take", 20, { true } } } do
      local want = { mem[s[1]](mem, "k", 2, 3, T + s[2]) }
      assert.same(want, { lim[s[1]](lim, "k", 2, 3, T + s[2]) }, s[1] .. " at " .. s[2])
      assert.equals(s[3][1], want[1], s[1] .. " at " .. s[2])
      if want[2] then assert.near(s[3][2], want[2], 1e-9) end
    end
    l:close()
  end)
end)
