-- eidkit.limiter: the in-memory token bucket on a frozen clock.
local limiter = require "eidkit.limiter"

describe("eidkit.limiter", function()
  describe("memory", function()
    it("raises on misuse, naming the option", function()
      assert.has_error(function() limiter.memory(5) end, "bad argument #1 to 'memory' (expected a table of options)")
      assert.has_error(function() limiter.memory { max_key = 1 } end, "bad option 'max_key' (unknown option)")
      assert.has_error(function() limiter.memory { max_keys = 0 } end,
        "bad option 'max_keys' (expected a positive integer)")
      assert.has_error(function() limiter.memory { max_keys = 2.5 } end,
        "bad option 'max_keys' (expected a positive integer)")
    end)
  end)

  describe("take", function()
    local T = 1700000000

    it("raises on misuse, naming the argument", function()
      local lim = limiter.memory()
      assert.has_error(function() lim:take(1, 1, 1, T) end, "bad argument #1 to 'take' (key: expected string)")
      assert.has_error(function() lim:take("k", 0, 1, T) end,
        "bad argument #2 to 'take' (rate_per_s: expected a positive number)")
      assert.has_error(function() lim:take("k", 1, 0.5, T) end, "bad argument #3 to 'take' (burst: expected a number >= 1)")
      assert.has_error(function() lim:take("k", 1, 1, nil) end, "bad argument #4 to 'take' (now: expected seconds)")
    end)

    it("allows a full burst, then refuses with the seconds until one token is back", function()
      local lim = limiter.memory()
      for _ = 1, 3 do assert.same({ true }, { lim:take("k", 2, 3, T) }) end
      assert.same({ false, 0.5 }, { lim:take("k", 2, 3, T) })
      assert.same({ false, 0.25 }, { lim:take("k", 2, 3, T + 0.25) })
      assert.same({ true }, { lim:take("k", 2, 3, T + 0.5) })
      assert.same({ false, 0.5 }, { lim:take("k", 2, 3, T + 0.5) })
    end)

    it("refills at the rate up to the burst, and keys do not share buckets", function()
      local lim = limiter.memory()
      local rate = 5 / 600 -- 5 per 10 minutes
      for _ = 1, 5 do assert.is_true(lim:take("subject:a", rate, 5, T)) end
      local ok, after = lim:take("subject:a", rate, 5, T)
      assert.is_false(ok)
      assert.near(120, after, 1e-9)
      assert.is_true(lim:take("subject:b", rate, 5, T))
      assert.is_true(lim:take("subject:a", rate, 5, T + 120))
      assert.is_false(lim:take("subject:a", rate, 5, T + 120))
      -- A day later the bucket holds the burst, not more.
      for _ = 1, 5 do assert.is_true(lim:take("subject:a", rate, 5, T + 86400)) end
      assert.is_false(lim:take("subject:a", rate, 5, T + 86400))
    end)

    it("gives a token back, refilled first, never above the burst", function()
      local lim = limiter.memory()
      for _ = 1, 3 do assert.is_true(lim:take("k", 2, 3, T)) end
      assert.same({ true }, { lim:give("k", 2, 3, T + 0.25) }) -- 0.5 + 1
      assert.is_true(lim:take("k", 2, 3, T + 0.25))
      assert.same({ false, 0.25 }, { lim:take("k", 2, 3, T + 0.25) })
      for _ = 1, 5 do assert.is_true(lim:give("k", 2, 3, T + 0.25)) end
      for _ = 1, 3 do assert.is_true(lim:take("k", 2, 3, T + 0.25)) end
      assert.same({ false, 0.5 }, { lim:take("k", 2, 3, T + 0.25) })
      -- A key never seen (or forgotten) is full: a give adds nothing, keeps nothing.
      assert.is_true(lim:give("new", 1, 1, T))
      assert.equals(1, lim:size())
      assert.is_true(lim:take("new", 1, 1, T))
      assert.is_false(lim:take("new", 1, 1, T))
      assert.has_error(function() lim:give(1, 1, 1, T) end, "bad argument #1 to 'give' (key: expected string)")
      assert.has_error(function() lim:give("k", 1, 0.5, T) end, "bad argument #3 to 'give' (burst: expected a number >= 1)")
    end)

    it("refills nothing when the clock steps back", function()
      local lim = limiter.memory()
      assert.is_true(lim:take("k", 1, 1, T))
      assert.is_false(lim:take("k", 1, 1, T - 100))
      assert.same({ false, 1 }, { lim:take("k", 1, 1, T) })
      assert.is_true(lim:take("k", 1, 1, T + 1))
    end)

    it("keeps at most max_keys keys, forgetting full buckets first", function()
      local lim = limiter.memory { max_keys = 4 }
      for i = 1, 4 do assert.is_true(lim:take("k" .. i, 1, 2, T)) end
      assert.equals(4, lim:size())
      -- k1..k4 are full again a second later: forgetting them loses nothing.
      assert.is_true(lim:take("k5", 1, 2, T + 1))
      assert.equals(1, lim:size())
    end)

    it("forgets the least recently used half when no bucket is full", function()
      local lim = limiter.memory { max_keys = 4 }
      for i = 1, 4 do
        assert.is_true(lim:take("k" .. i, 0.001, 1, T + i)) -- each bucket now empty
      end
      assert.is_true(lim:take("k5", 0.001, 1, T + 5))
      assert.equals(3, lim:size())
      -- k1 and k2 (oldest) were forgotten: they start full again; k3 was kept.
      assert.is_true(lim:take("k1", 0.001, 1, T + 6))
      assert.is_false(lim:take("k3", 0.001, 1, T + 6))
      assert.is_true(lim:size() <= 4)
    end)
  end)
end)
