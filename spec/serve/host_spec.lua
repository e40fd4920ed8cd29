-- eidkit.serve in process, with a stand-in gateway: one coroutine per
-- request, answered later when it waited; a coroutine that raises is a
-- 500; timers, tasks and the drain. (The real gateway, client and ledger
-- through the `eidkit serve` process are in the other spec/serve specs.)
local core = require "eidkit.core"
local serve = require "eidkit.serve"
local client = require "fixtures.httpd_client"

local function step_until(host, cond, limit)
  local t0 = core.monotonic()
  while not cond() do
    assert(core.monotonic() - t0 < (limit or 10), "condition not reached in time")
    host:step(20)
  end
end

describe("eidkit.serve", function()
  local host, srv, errors, base
  before_each(function()
    errors = {}
    host = assert(serve.new { on_error = function(m) errors[#errors + 1] = m end })
    local gw = { handle = function(_, req)
      if req.path == "/boom" then error("the route broke") end
      if req.path == "/nothing" then return nil end
      if req.path == "/wait" then
        host.sleep(0.3)
        return { status = 201, body = "waited" }
      end
      if req.path == "/forever" then host.sleep(30) end
      if req.path == "/slow" then
        host.sleep(2)
        return { status = 202, body = "slow" }
      end
      if req.path == "/later-boom" then
        host.sleep(0.05)
        error("broke after a wait")
      end
      return { status = 200, body = "now" }
    end }
    srv = host:mount(gw, { host = "127.0.0.1", port = 0 })
    base = "http://127.0.0.1:" .. srv:port()
  end)
  after_each(function() host:close() end)

  local function serve_all(handles)
    step_until(host, function()
      for _, h in ipairs(handles) do if not h.done() then return false end end
      return true
    end)
    local out = {}
    for i, h in ipairs(handles) do out[i] = h.result() end
    return out
  end

  it("answers at once what does not wait, and later what does, without one holding the other", function()
    local slow = client.spawn { base .. "/slow" }
    step_until(host, function() return host:stats().in_flight == 1 end)
    local t0 = core.monotonic()
    local fast = serve_all { client.spawn { base .. "/" } }[1]
    assert.same({ 200, "now" }, { fast.status, fast.body })
    assert.is_false(slow.done())
    -- Half the slow one's wait: a third of a second failed once under ASan
    -- with three test runs on two cores (a curl process to start and read).
    assert.is_true(core.monotonic() - t0 < 1)
    local r = serve_all { slow }[1]
    assert.same({ 202, "slow" }, { r.status, r.body })
    assert.same({ in_flight = 0, tasks = 0, gone = 0, deferred = 0 }, host:stats())
  end)

  it("answers 500 when a request's coroutine raises, at once or after a wait, and goes on", function()
    local rs = serve_all { client.spawn { base .. "/boom" }, client.spawn { base .. "/later-boom" },
      client.spawn { base .. "/nothing" } }
    for _, r in ipairs(rs) do
      assert.equals(500, r.status)
      assert.equals('{"error":{"code":"internal","message":"internal error"}}', r.body)
    end
    table.sort(errors)
    assert.matches("the route broke", table.concat(errors, "\n"))
    assert.matches("broke after a wait", table.concat(errors, "\n"))
    assert.matches("stack traceback", errors[1])
    assert.equals(200, serve_all { client.spawn { base .. "/" } }[1].status)
  end)

  it("reuses a finished coroutine for the next request, fresh each time, never one that raised", function()
    local seen, locals = {}, {}
    local function task(i)
      seen[#seen + 1] = coroutine.running()
      local mine = { i = i } -- a fresh local per run, not left over from the last
      locals[#locals + 1] = mine
      if i == 3 then error("third broke") end
      host.sleep(0.01)
      return mine
    end
    for i = 1, 4 do
      local finished = false
      host:spawn("run " .. i, function() task(i) finished = true end)
      step_until(host, function() return finished or i == 3 end)
    end
    -- 1 and 2 ran on one coroutine; 3 raised and its coroutine is dropped,
    -- so 4 runs on another than 3.
    assert.equals(seen[1], seen[2])
    assert.equals(seen[2], seen[3])
    assert.are_not.equal(seen[3], seen[4])
    assert.equals("dead", coroutine.status(seen[3]))
    for i = 1, 4 do assert.equals(i, locals[i].i) end
    assert.matches("run 3 failed: .*third broke", errors[#errors])
    assert.same({ in_flight = 0, tasks = 0, gone = 0, deferred = 0 }, host:stats())
  end)

  it("refuses a body over 16 KiB with the gateway's 413, before the handler", function()
    local r = serve_all { client.spawn { "--data-binary", ("x"):rep(16385), base .. "/" } }[1]
    assert.same({ 413, "too_large" }, { r.status, require("cjson").decode(r.body).error.code })
  end)

  it("runs tasks and periodic tasks in coroutines that may wait", function()
    local runs, done = 0, false
    host:every(0.05, "tick", function()
      runs = runs + 1
      host.sleep(0.12) -- longer than the interval: runs never overlap
    end)
    host:spawn("once", function()
      host.sleep(0.05)
      done = true
    end)
    step_until(host, function() return done and runs >= 2 end)
    assert.is_true(host:stats().tasks <= 1)
    host:spawn("raises", function() error("task broke") end)
    assert.matches("raises failed: .*task broke", errors[#errors])
  end)

  it("drains: refuses new connections, finishes what is in flight, cuts what outlives the timeout", function()
    local finishing = client.spawn { base .. "/wait" }
    local forever = client.spawn { base .. "/forever" }
    step_until(host, function() return host:stats().in_flight == 2 end)
    local t0 = core.monotonic()
    local cut = host:drain(0.6)
    assert.equals(1, cut)
    assert.is_true(core.monotonic() - t0 < 2)
    for _ = 1, 250 do
      if finishing.done() and forever.done() then break end
      core.sleep(0.02)
    end
    local f = finishing.result()
    assert.same({ 201, "waited" }, { f.status, f.body })
    local r = forever.result()
    assert.same({ 503, serve.SHUTTING_DOWN.body }, { r.status, r.body })
    assert.equals(7, client.run { "--max-time", "2", base .. "/" }.code) -- refused
  end)
end)
