-- Reliability of the ledger with real processes: racing consumers, a writer
-- killed with SIGKILL, a Redis server killed and restarted under load, and a
-- full disk. Workers run spec/ledger/fixtures/worker.lua under the eidkit
-- program ($EIDKIT_BIN).
local ledger_mod = require "eidkit.ledger"
local proc = require "support.proc"
local redis = require "support.redis"

local q = proc.quote
local WORKER = "spec/ledger/fixtures/worker.lua"

local sh, read = proc.sh, proc.output

-- Complete lines only: a writer killed mid-write leaves a torn last line,
-- which was never acknowledged.
local function lines(path)
  local t = {}
  local f = io.open(path)
  if not f then return t end
  local data = f:read("a")
  f:close()
  for l in data:gmatch("([^\n]*)\n") do t[#t + 1] = l end
  return t
end

local function worker(...)
  local words = { q(proc.bin()), "run", WORKER }
  for _, a in ipairs({ ... }) do words[#words + 1] = q(a) end
  return table.concat(words, " ")
end

local tmp = read("mktemp -d /tmp/eidkit-ledger-rel-XXXXXX"):gsub("%s+$", "")
local srv = redis.available and redis.start() or nil
teardown(function()
  if srv then srv:destroy() end
  sh("rm -rf " .. q(tmp))
end)

local urls = { sqlite = "sqlite:" .. tmp .. "/race.db" }
if srv then urls.redis = srv:url(1, "race:") end

describe("consume racing in two processes", function()
  for name, url in pairs(urls) do
    it("has exactly one winner per token on " .. name, function()
      local l = assert(ledger_mod.open(url))
      local pass = { Text = { ErrCode = 0 }, RequestId = "r" }
      for i = 1, 1000 do
        assert(l:issue { EidToken = "R" .. i, MerchantId = "m", subject = "u" })
        assert(l:record("R" .. i, pass))
      end
      local a, b = tmp .. "/" .. name .. "-a", tmp .. "/" .. name .. "-b"
      assert.is_true(sh(("%s & %s & wait"):format(worker("consume", url, 1000, a) .. " 2>" .. a .. ".err",
        worker("consume", url, 1000, b) .. " 2>" .. b .. ".err")))
      assert.equals("", read("cat " .. a .. ".err " .. b .. ".err"))
      local won, total = {}, 0
      for _, path in ipairs({ a, b }) do
        for _, tok in ipairs(lines(path)) do
          assert.is_nil(won[tok], tok .. " consumed twice")
          won[tok] = true
          total = total + 1
        end
      end
      assert.equals(1000, total)
      assert.equals(1000, l:stats().consumed)
      l:close()
    end)
  end
end)

describe("a writer killed with SIGKILL", function()
  it("loses no acknowledged transition and leaves an intact SQLite file", function()
    local db = tmp .. "/killed.db"
    local ack = tmp .. "/killed.ack"
    local pid = tonumber(read(worker("transitions", "sqlite:" .. db, 10000, ack) .. " >/dev/null 2>&1 & echo $!"))
    -- Let it get well into the run, then kill it mid-flight.
    for _ = 1, 400 do
      if #lines(ack) >= 1500 then break end
      sh("sleep 0.01")
    end
    sh("kill -9 " .. pid)
    sh("sleep 0.05")
    local acked = lines(ack)
    assert.is_true(#acked >= 1500 and #acked < 9999, "killed mid-run (" .. #acked .. " acked)")
    assert.equals("ok\n", read("sqlite3 " .. q(db) .. " 'PRAGMA integrity_check'"))
    local l = assert(ledger_mod.open("sqlite:" .. db))
    local rank = { issued = 1, passed = 2, consumed = 3 }
    for _, line in ipairs(acked) do
      local tok, state = line:match("^(%S+) (%S+)$")
      local rec = l:get(tok)
      assert.is_truthy(rec, tok .. " lost")
      assert.is_true(rank[rec.state] >= rank[state], tok .. " went back to " .. rec.state)
    end
    l:close()
  end)
end)

describe("a Redis server killed and restarted under load", function()
  it("loses no acknowledged transition; the client reconnects", function()
    if not srv then pending("redis-server is not installed") return end
    local url = srv:url(2, "restart:")
    local ack = tmp .. "/restart.ack"
    local done = tmp .. "/restart.done"
    sh(worker("transitions", url, 1500, ack) .. " >" .. done .. ".out 2>&1; echo $? >" .. done .. " &")
    for _ = 1, 400 do
      if #lines(ack) >= 300 then break end
      sh("sleep 0.01")
    end
    srv:stop("KILL") -- no shutdown save: only the AOF (fsync always) survives
    assert.is_true(srv:launch(), "redis-server did not come back")
    for _ = 1, 1500 do
      if #lines(done) > 0 then break end
      sh("sleep 0.02")
    end
    assert.equals("0", lines(done)[1], read("cat " .. done .. ".out"))
    local acked = lines(ack)
    assert.equals(1500, #acked)
    local l = assert(ledger_mod.open(url))
    for i = 1, 500 do
      local rec = l:get("K" .. i)
      assert.is_truthy(rec, "K" .. i .. " lost")
      assert.equals("consumed", rec.state)
    end
    l:close()
  end)
end)

describe("a full disk", function()
  it("is a clear storage error with no partial record", function()
    local db = tmp .. "/full.db"
    -- 200 KiB file size limit; SIGXFSZ ignored so writes fail with EFBIG.
    local out = read(("bash -c %s 2>&1"):format(q(("trap '' XFSZ; ulimit -f 200; exec %s"):format(
      worker("fill", "sqlite:" .. db)))))
    local i, code, msg = out:match("^(%d+) (%S+) (.-)\n")
    assert.is_truthy(i, out)
    assert.equals("storage", code)
    assert.matches("^sqlite: ", msg)
    assert.is_nil(msg:find("F" .. i, 1, true), "the message names the token")
    i = tonumber(i)
    assert.equals("ok\n", read("sqlite3 " .. q(db) .. " 'PRAGMA integrity_check'"))
    local l = assert(ledger_mod.open("sqlite:" .. db))
    assert.is_truthy(l:get("F" .. (i - 1)))
    assert.same({ nil, "unknown_token" }, { nil, select(2, l:get("F" .. i)).code })
    l:close()
  end)
end)
