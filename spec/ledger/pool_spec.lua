-- core.ledger_pool (bindings/ledger_pool.c) and eidkit.ledger.open{workers,
-- await}: the ledger on worker threads, waited for on an eventfd. The
-- answers themselves are held to the C object's by conformance_spec.lua;
-- here: the Lua thread never waits, queued writes survive close, and a
-- coroutine can wait for a job while a loop runs.
local scratch = require "support.scratch"
local core = require "eidkit.core"
local ledger_mod = require "eidkit.ledger"
local redis = require "support.redis"
local cutproxy = require "support.cutproxy"
local libeidkit = require "support.libeidkit"

local tmpdir = scratch.file()
os.remove(tmpdir)
assert(os.execute("mkdir -p " .. tmpdir))
local serial = 0
local function sqlite_url()
  serial = serial + 1
  return ("sqlite:%s/pool-%d.db"):format(tmpdir, serial)
end

local function issue_params(tok)
  return { EidToken = tok, MerchantId = "0NSJ2023", subject = "user-42" }
end

-- Take every finished job from pool until want ids came back: {[id] = {a, b}}.
local function drain(pool, want, limit)
  local p <close> = core.poller()
  p:add(pool:fd())
  local out, got, t0 = {}, 0, core.monotonic()
  while got < want do
    assert(core.monotonic() - t0 < (limit or 10), "the jobs did not finish in time")
    p:wait(100)
    while true do
      local id, a, b = pool:next()
      if not id then break end
      out[id] = { a, b }
      got = got + 1
    end
  end
  return out
end

teardown(function() os.execute("rm -rf " .. tmpdir) end)

-- Writes to path a python3 script that takes SQLite's write lock on the
-- database argv[1], prints "locked", and holds it until the file argv[2]
-- exists (60 s at most): jobs posted meanwhile queue behind it. Returns path.
local function write_hold_script(path)
  local f = assert(io.open(path, "w"))
  f:write([[
import os, sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
give_up = time.monotonic() + 60
while not os.path.exists(sys.argv[2]) and time.monotonic() < give_up:
    time.sleep(0.01)
db.execute("COMMIT")
]])
  f:close()
  return path
end

-- An error message without the position luaL_where or error() put before it.
local function bare(msg) return (tostring(msg):gsub("^[^:]*:%d+: ", "")) end

describe("core.ledger_pool", function()

  it("runs jobs on its workers and hands back the results the C object would", function()
    local pool = assert(core.ledger_pool(sqlite_url(), nil, 3))
    assert.equals(3, pool:workers())
    assert.equals("sqlite", pool:backend())
    local a = pool:issue(issue_params("T1"))
    local b = pool:claim("T1", "user-42")
    assert.same({ 1, 2 }, { a, b })
    local out = drain(pool, 2)
    assert.is_true(out[a][1])
    -- b may run before a on another worker: unknown, or the entry
    assert.is_true(out[b][1] ~= nil and out[b][1].EidToken == "T1" or out[b][2].code == "unknown_token")
    local c = pool:claim("T1", "someone-else")
    out = drain(pool, 1)
    assert.same({ nil, "wrong_subject" }, { out[c][1], out[c][2].code })
    assert.equals(0, pool:pending())
    assert.is_nil(pool:next())
    pool:close()
    pool:close()
    assert.equals("eidkit.LedgerPool (closed)", tostring(pool))
    assert.has_error(function() pool:get("T1") end, "attempt to use a closed eidkit.LedgerPool")
  end)

  it("returns misuse the C ledger finds as false and the message the C object raises", function()
    local pool = assert(core.ledger_pool(sqlite_url()))
    local id = pool:issue { EidToken = "bad token!", MerchantId = "m", subject = "s" }
    assert.is_true(pool:wait(id, 5000))
    local got, flag, msg = pool:next(id)
    assert.same({ id, false }, { got, flag })
    local sync = assert(ledger_mod.open(sqlite_url()))
    local ok, err = pcall(sync.issue, sync, { EidToken = "bad token!", MerchantId = "m", subject = "s" })
    assert.is_false(ok)
    assert.equals(bare(err), msg)
    assert.matches("^bad argument #1 to 'issue' %(EidToken", msg)
    -- arguments are checked before a job is made
    assert.has_error(function() pool:claim("T1") end, "bad argument #2 to 'claim' (string expected, got no value)")
    sync:close()
    pool:close()
  end)

  it("finishes every queued write on close", function()
    local url = sqlite_url()
    local pool = assert(core.ledger_pool(url, nil, 2))
    for i = 1, 50 do pool:issue(issue_params("Q" .. i)) end
    pool:close() -- without taking a single result
    local l = assert(ledger_mod.open(url))
    assert.equals(50, l:stats().total)
    l:close()
  end)

  it("deferred, wakes no worker for a post, and one for all of them on a flush", function()
    local pool = assert(core.ledger_pool(sqlite_url(), nil, 2))
    pool:issue(issue_params("D0"))
    drain(pool, 1)
    core.sleep(0.2) -- both workers idle, waiting to be woken (a busy one takes what is queued)
    pool:defer(true)
    local ids = {}
    for i = 1, 20 do ids[i] = pool:issue(issue_params("D" .. i)) end
    core.sleep(0.2)
    assert.same({ 1, 1 }, { pool:runs() }) -- no worker was woken
    assert.is_nil(pool:next())
    pool:flush()
    local out = drain(pool, 20)
    for i = 1, 20 do assert.is_true(out[ids[i]][1]) end
    local runs, ran = pool:runs()
    assert.equals(21, ran)
    assert.equals(2, runs) -- one transaction: the wake-up took the whole queue
    -- pool:wait flushes (else it would wait for ever), and so does defer(false).
    local w = pool:claim("D1", "user-42")
    assert.is_true(pool:wait(w, 5000))
    assert.equals("D1", select(2, pool:next(w)).EidToken)
    local c = pool:claim("D2", "user-42")
    pool:defer(false)
    assert.equals("D2", drain(pool, 1)[c][1].EidToken)
    pool:close()
    pool:flush() -- closed: nothing to wake, no error
  end)

  it("gives an in-memory SQLite database one worker (each handle would be its own database)", function()
    local pool = assert(core.ledger_pool("sqlite::memory:", nil, 8))
    assert.equals(1, pool:workers())
    pool:close()
  end)

  it("fails to open as ledger_open does", function()
    local pool, err = core.ledger_pool("redis://127.0.0.1:1/0", { timeout_ms = 200 })
    assert.is_nil(pool)
    assert.equals("unavailable", err.code)
    assert.has_error(function() core.ledger_pool("ftp://x") end)
    assert.has_error(function() core.ledger_pool(sqlite_url(), nil, 0) end)
  end)

  it("reads the Lua clock on the Lua thread, when the job is made", function()
    local now = 1735660800
    local pool = assert(core.ledger_pool(sqlite_url(), { clock = function() return now end }, 2))
    local id = pool:issue(issue_params("C1"))
    now = now + 1000 -- after posting: the job keeps the time it was made with
    assert.is_true(pool:wait(id))
    pool:next(id)
    id = pool:get("C1")
    pool:wait(id)
    local _, rec = pool:next(id)
    assert.equals(1735660800, rec.created_at)
    pool:close()
  end)

  it("runs the jobs queued behind a busy one in one SQLite transaction, each as it would run alone", function()
    local url = sqlite_url()
    local setup = assert(ledger_mod.open(url))
    for i = 1, 10 do assert(setup:issue(issue_params("B" .. i))) end
    setup:close()
    -- A busy timeout no loaded machine reaches: the first job waits on it.
    local pool = assert(core.ledger_pool(url, { timeout_ms = 60000 }, 1))
    local runs0, ran0 = pool:runs()
    -- Another process holds the write lock until every job is posted (the
    -- marker file): the worker's first run waits for the lock, and every
    -- job posted meanwhile queues behind it, however slow this thread is.
    local script, marker = write_hold_script(tmpdir .. "/hold.py"), tmpdir .. "/posted"
    local holder = assert(io.popen(("python3 %s %s %s"):format(script, url:sub(#"sqlite:" + 1), marker)))
    assert.equals("locked", holder:read("l"))
    local want = {} -- id -> what the job must answer
    local function post(id, expect) want[id] = expect end
    -- A write first: the worker's first run waits for the lock. (A read
    -- would not: WAL lets it through, and the runs would depend on how
    -- fast this thread posts.)
    post(pool:issue(issue_params("FIRST")), true)
    for i = 1, 10 do
      local tok = "B" .. i
      post(pool:claim(tok, "user-42"), tok)
      post(pool:claim(tok, "intruder"), "wrong_subject")
      post(pool:issue(issue_params("N" .. i)), true)
      post(pool:issue(issue_params(tok)), "exists")
      post(pool:record(tok, { Text = { ErrCode = 0, LivenessDetail = { { Seq = "1", IsNeedCharge = true } } },
        RequestId = "req-" .. i }), tok)
      post(pool:consume(tok, "intruder"), "wrong_subject")
      post(pool:consume(tok, "user-42"), tok)
      post(pool:consume(tok, "user-42"), "consumed")
    end
    assert(io.open(marker, "w")):close()
    local out = drain(pool, 81, 90)
    holder:close()
    for id, expect in pairs(want) do
      local a, b = out[id][1], out[id][2]
      if type(expect) == "string" and expect:match("^B") then
        assert.equals(expect, a and a.EidToken, "job " .. id)
      elseif expect == true then
        assert.is_true(a, "job " .. id)
      else
        assert.is_nil(a, "job " .. id)
        assert.equals(expect, b.code, "job " .. id)
      end
    end
    local runs, ran = pool:runs()
    assert.equals(81, ran - ran0)
    -- The run waiting for the lock, then the rest, 64 at most a run.
    assert.is_true(runs - runs0 <= 3, ("81 jobs took %d runs"):format(runs - runs0))
    pool:close()
    -- Committed: another connection sees every write.
    local l = assert(ledger_mod.open(url))
    local s = l:stats()
    assert.same({ 21, 10, 11 }, { s.total, s.consumed, s.issued })
    assert.equals(1, l:get("B7").billable)
    l:close()
  end)

  it("answers every job of a batch that cannot commit with the failure, and keeps none of it", function()
    -- A child process whose files may not grow past 80 KiB (bash's ulimit
    -- -f, SIGXFSZ ignored so a write fails as on a full disk). The schema
    -- takes about 25 KB of WAL; 61 tokens with 1,000-byte Extras fill at
    -- least 21 pages (84 KB) more, so they cannot all commit, however the
    -- worker splits them. They queue behind another process's write lock,
    -- as in the case above, so at most 3 runs take them: whatever a run
    -- answered must be what the file kept.
    local dir = tmpdir .. "/full"
    assert(os.execute("mkdir -p " .. dir))
    write_hold_script(dir .. "/hold.py")
    local child = dir .. "/child.lua"
    local f = assert(io.open(child, "w"))
    f:write([[
local core = require "eidkit.core"
local dir = ...
local url = "sqlite:" .. dir .. "/full.db"
local pool = assert(core.ledger_pool(url, { timeout_ms = 60000 }, 1))
local holder = assert(io.popen(("env -u LD_PRELOAD python3 %s/hold.py %s/full.db %s/posted"):format(dir, dir, dir)))
assert(holder:read("l") == "locked")
local params = { MerchantId = "0NSJ2023", subject = "u1", Extra = ("x"):rep(1000) }
params.EidToken = "FIRST"
local ids = { pool:issue(params) }
for i = 1, 60 do
  params.EidToken = "BIG" .. i
  ids[#ids + 1] = pool:issue(params)
end
assert(io.open(dir .. "/posted", "w")):close()
for _, id in ipairs(ids) do
  assert(pool:wait(id, 60000))
  local _, ok, err = pool:next(id)
  io.write(ok and "ok" or err.code, "\n")
end
holder:close()
pool:close()
]])
    f:close()
    -- A sanitizer build's eidkit/core.so needs the ASan runtime preloaded
    -- into lua5.4 (not into python3, above).
    local pre = libeidkit.preload_env()
    local preload = pre and ("LD_PRELOAD=%s ASAN_OPTIONS=%s "):format(pre.LD_PRELOAD, pre.ASAN_OPTIONS) or ""
    local out = assert(io.popen(("bash -c \"trap '' XFSZ; ulimit -f 80; %sexec lua5.4 %s %s\" 2>&1"):format(
      preload, child, dir)))
    local lines = {}
    for line in out:lines() do lines[#lines + 1] = line end
    out:close()
    assert.equals(61, #lines, table.concat(lines, "\n"))
    local l = assert(ledger_mod.open("sqlite:" .. dir .. "/full.db"))
    local kept, failed = 0, 0
    for i, answer in ipairs(lines) do
      local tok = i == 1 and "FIRST" or "BIG" .. (i - 1)
      if answer == "ok" then
        kept = kept + 1
        assert.equals(tok, l:get(tok).EidToken)
      else
        failed = failed + 1
        assert.equals("storage", answer, tok)
        assert.is_nil(l:get(tok), tok .. " failed but was kept")
      end
    end
    assert.is_true(failed >= 1, "every job was kept: the file size limit did not bite")
    assert.equals(kept, l:stats().total)
    l:close()
  end)

  describe("with a slow Redis", function()
    local srv
    lazy_setup(function() srv = redis.available and redis.start() or nil end)
    lazy_teardown(function() if srv then srv:destroy() end end)

    it("never makes the Lua thread wait: posting returns at once, the job lands later", function()
      if not srv then pending("redis-server is not installed") return end
      local l = assert(ledger_mod.open(srv:url(0, "pool:"), { workers = 2 }))
      local pool = l.c.pool
      assert(l:issue(issue_params("R1")))
      srv:cli("CLIENT", "PAUSE", "1500", "ALL") -- every client but this one waits 1.5 s
      -- Wait until Redis is asleep: a PING cut off after 0.2 s goes unanswered.
      local asleep = ("timeout 0.2 redis-cli -h 127.0.0.1 -p %d PING 2>/dev/null | grep -q PONG"):format(srv.port)
      local t0 = core.monotonic()
      while os.execute(asleep) and core.monotonic() - t0 < 3 do end
      local posted = core.monotonic()
      local id = pool:claim("R1", "user-42")
      assert.is_true(core.monotonic() - posted < 0.05)
      assert.is_false(pool:wait(id, 100)) -- still in Redis
      local out = drain(pool, 1)
      assert.equals("R1", out[id][1].EidToken)
      l:close()
    end)

    -- Redis held asleep while jobs queue for the pool's one worker: the
    -- first job (a get, which runs alone) waits in Redis, the records
    -- posted meanwhile queue behind it and then go out as one pipeline.
    -- pause_ms: how long Redis sleeps (default 700), time enough to post.
    local function queue_behind_pause(pool, post_records, pause_ms)
      srv:cli("CLIENT", "PAUSE", tostring(pause_ms or 700), "ALL")
      local asleep = ("timeout 0.2 redis-cli -h 127.0.0.1 -p %d PING 2>/dev/null | grep -q PONG"):format(srv.port)
      local t0 = core.monotonic()
      while os.execute(asleep) and core.monotonic() - t0 < 3 do end
      local first = pool:get("P0")
      assert.is_false(pool:wait(first, 50)) -- the worker is in Redis with it
      local runs0, ran0 = pool:runs()
      local ids = post_records()
      local out = drain(pool, #ids + 1)
      local runs, ran = pool:runs()
      return out, ids, runs - runs0, ran - ran0
    end

    -- A one-worker pool on its own key prefix with tokens P0..Pn issued,
    -- and the URL that reaches Redis directly. port: where the pool
    -- connects instead (a proxy).
    local function issued_pool(prefix, n, opts, port)
      local url = srv:url(0, prefix)
      local pool = assert(core.ledger_pool(port and url:gsub(":%d+/", ":" .. port .. "/", 1) or url, opts or {}, 1))
      for i = 0, n do assert(pool:wait(pool:issue(issue_params("P" .. i)), 5000)) end
      drain(pool, n + 1)
      return pool, url
    end

    local function passed(tok, n)
      return { Text = { ErrCode = 0, LivenessDetail = { { Seq = tostring(n), ReqTime = tostring(n),
        IsNeedCharge = true } } }, RequestId = "req-" .. tok }
    end

    -- Records P1..P10 queued behind a pause go out as one pipeline through
    -- cut, armed to pass `pass` bytes of their answers; then each call's
    -- answer, seen through view(e, i), must be want(i) and what the store
    -- (at url) holds.
    local function records_through_cut(pool, url, cut, pass, view, want)
      local out, ids, runs = queue_behind_pause(pool, function()
        local ids = {}
        for i = 1, 10 do ids[#ids + 1] = pool:record("P" .. i, passed("P" .. i, i)) end
        cut:arm(pass) -- a signal and its answer: more time than posting alone
        return ids
      end, 1500)
      assert.equals(1, cut:cuts())
      assert.is_true(runs <= 3, ("11 jobs took %d runs: the records were not pipelined"):format(runs))
      local alone = assert(ledger_mod.open(url))
      for i = 1, 10 do
        local e, err = out[ids[i]][1], out[ids[i]][2]
        assert.is_table(e, "record " .. i .. ": " .. tostring(err))
        assert.same(want(i), view(e, i), "record " .. i)
        assert.same(alone:get("P" .. i), e)
      end
      alone:close()
    end

    it("sends the records queued together as one pipeline, each answered as alone", function()
      if not srv then pending("redis-server is not installed") return end
      local pool, url = issued_pool("pipe:", 30)
      local out, ids, runs, ran = queue_behind_pause(pool, function()
        local ids = {}
        for i = 1, 30 do ids[#ids + 1] = pool:record("P" .. i, passed("P" .. i, i)) end
        ids[#ids + 1] = pool:record("NEVER-ISSUED", passed("x", 1)) -- fails alone
        ids[#ids + 1] = pool:record("bad token!", passed("y", 1))   -- fails alone
        ids[#ids + 1] = pool:record("P1", passed("P1", 1))          -- a repeat changes nothing
        return ids
      end)
      assert.equals(34, ran)
      assert.is_true(runs <= 3, ("34 jobs took %d runs: the records were not pipelined"):format(runs))
      local alone = assert(ledger_mod.open(url))
      for i = 1, 30 do
        local e = out[ids[i]][1]
        assert.equals("P" .. i, e and e.EidToken, "record " .. i)
        assert.same({ "passed", 1, 1 }, { e.state, e.billable, e.attempts })
        -- What the store holds now (P1 was pulled once more after).
        if i > 1 then assert.same(alone:get("P" .. i), e) end
      end
      assert.same({ nil, "unknown_token" }, { out[ids[31]][1], out[ids[31]][2].code })
      assert.same({ nil, "unknown_token" }, { out[ids[32]][1], out[ids[32]][2].code })
      local again = out[ids[33]][1]
      assert.same({ "P1", 1, 1, 1, 2 }, { again.EidToken, again.billable, again.attempts, out[ids[1]][1].pulls, again.pulls })
      assert.same(alone:get("P1"), again)
      alone:close()
      pool:close()
    end)

    it("fails a queued pipeline at once when Redis is gone, then reconnects", function()
      if not srv then pending("redis-server is not installed") return end
      local pool = issued_pool("gone:", 5, { timeout_ms = 2000 })
      local t0
      local out, ids = queue_behind_pause(pool, function()
        local ids = {}
        for i = 1, 5 do ids[#ids + 1] = pool:record("P" .. i, passed("P" .. i, i)) end
        t0 = core.monotonic()
        srv:stop("KILL") -- the get's connection breaks; the records find no server
        return ids
      end)
      assert.is_true(core.monotonic() - t0 < 1.5, "the pipeline waited for Redis")
      for i = 1, 5 do
        assert.same({ nil, "unavailable" }, { out[ids[i]][1], out[ids[i]][2] and out[ids[i]][2].code })
      end
      assert.is_true(srv:launch())
      local id = pool:record("P1", passed("P1", 1))
      local e = drain(pool, 1)[id][1]
      assert.same({ "P1", 1, 1 }, { e and e.EidToken, e and e.billable, e and e.pulls })
      pool:close()
    end)

    it("answers every call of a pipeline whose answers were lost, running them again alone", function()
      if not srv then pending("redis-server is not installed") return end
      -- The pool reaches Redis through a proxy that, once armed, lets the
      -- next thing sent through (the pipeline) reach Redis and then closes
      -- the connection instead of passing the answers on: Redis has run
      -- the records, the worker knows none of them.
      local cut = cutproxy.start(srv.port)
      finally(function() cut:stop() end)
      local pool, url = issued_pool("cut:", 10, nil, cut.port)
      -- Each answered as alone: recorded once (a second run of the same
      -- answer adds a pull, never an attempt), as the store now holds.
      records_through_cut(pool, url, cut, 0, function(e) return { e.EidToken, e.state, e.billable, e.attempts } end,
        function(i) return { "P" .. i, "passed", 1, 1 } end)
      pool:close()
    end)

    it("keeps the answers that came before a pipeline broke and runs only the rest again", function()
      if not srv then pending("redis-server is not installed") return end
      -- As above, but the proxy passes two answers whole and the third in
      -- part before it cuts. The two calls answered stand as the pipeline
      -- answered them (one pull each); the other eight run again alone, and
      -- as Redis had run them, that second run adds a pull, never an attempt.
      local cut = cutproxy.start(srv.port)
      finally(function() cut:stop() end)
      local pool, url = issued_pool("part:", 10, nil, cut.port)
      -- How long a record's answer is: P0's alone (as long as P1's to P9's),
      -- the answer before the last (the last: the ZREM of the token it closed;
      -- before it, perhaps the script's load).
      local before = #cut:answers()
      local id0 = pool:record("P0", passed("P0", 0))
      assert.equals("P0", drain(pool, 1)[id0][1].EidToken)
      local answers = cut:answers()
      local size = answers[#answers - 1]
      assert.is_true(#answers - before >= 2 and size > 100,
        "the answers to a record alone: " .. table.concat(answers, ",", before + 1))
      local function due(tok) return (srv:cli("ZSCORE", "part:due", tok):gsub("%s+$", "")) end
      assert.matches("^%d+$", due("P5")) -- open: in the index
      local whole = 2
      records_through_cut(pool, url, cut, whole * size + size // 2,
        function(e, i)
          -- Closed: out of the index the sweep reads, those answered before the break too.
          return { e.EidToken, e.state, e.billable, e.attempts, e.pulls, due("P" .. i) }
        end,
        function(i) return { "P" .. i, "passed", 1, 1, i <= whole and 1 or 2, "" } end)
      pool:close()
    end)

    it("runs a pipeline again call by call when Redis has lost its scripts", function()
      if not srv then pending("redis-server is not installed") return end
      local pool = issued_pool("noscript:", 10)
      assert.matches("OK", srv:cli("SCRIPT", "FLUSH"))
      local out, ids = queue_behind_pause(pool, function()
        local ids = {}
        for i = 1, 10 do ids[#ids + 1] = pool:record("P" .. i, passed("P" .. i, i)) end
        return ids
      end)
      for i = 1, 10 do
        local e = out[ids[i]][1]
        assert.same({ "P" .. i, "passed", 1 }, { e and e.EidToken, e and e.state, e and e.billable })
      end
      pool:close()
    end)
  end)
end)

describe("eidkit.ledger.open{workers = n, await = f}", function()
  it("wraps the pool in the ledger class, blocking by default", function()
    local l = assert(ledger_mod.open(sqlite_url(), { workers = 2 }))
    assert.is_true(l:issue(issue_params("W1")))
    assert.equals("W1", l:claim("W1", "user-42").EidToken)
    assert.same({ nil, "unknown_token" }, { l:get("nope"), select(2, l:get("nope")).code })
    assert.matches("^eidkit%.LedgerPool %(sqlite, 2 workers", tostring(l))
    assert.equals("sqlite", l:backend())
    l:close()
    assert.has_error(function() ledger_mod.open(sqlite_url(), { workers = 0 }) end,
      "bad argument #2 to 'open' (workers: expected an integer 1..64)")
    assert.has_error(function() ledger_mod.open(sqlite_url(), { await = 1 }) end,
      "bad argument #2 to 'open' (await: expected function(pool, id))")
  end)

  it("lets coroutines wait through await while a loop hands out the results", function()
    local waiting = {}
    local l = assert(ledger_mod.open(sqlite_url(), { workers = 2, await = function(_, id)
      waiting[id] = coroutine.running()
      return coroutine.yield()
    end }))
    local results = {}
    for i = 1, 10 do
      local co = coroutine.create(function()
        assert(l:issue(issue_params("K" .. i)))
        results[i] = l:claim("K" .. i, "user-42").EidToken
        -- misuse still raises in the caller
        local ok, err = pcall(l.issue, l, { EidToken = "bad token!", MerchantId = "m", subject = "s" })
        results[i] = not ok and err:match("^bad argument #1 to 'issue'") and results[i]
      end)
      assert(coroutine.resume(co))
    end
    local pool = l.c.pool
    local p <close> = core.poller()
    p:add(pool:fd())
    local t0 = core.monotonic()
    while next(waiting) do
      assert(core.monotonic() - t0 < 10)
      p:wait(100)
      while true do
        local id, a, b = pool:next()
        if not id then break end
        local co = waiting[id]
        waiting[id] = nil
        assert(coroutine.resume(co, a, b))
      end
    end
    for i = 1, 10 do assert.equals("K" .. i, results[i]) end
    l:close()
  end)
end)
