-- core.http_server's deferred responses (the handler returns false, the
-- answer comes later through srv:respond), and what an outer loop needs:
-- srv:fd(), srv:timeout(), srv:quiesce(). In process, with curl in the
-- background (spec/fixtures/httpd_client.lua).
local scratch = require "support.scratch"
local core = require "eidkit.core"
local client = require "fixtures.httpd_client"

-- Step srv until cond() holds (at most limit seconds); returns cond()'s value.
local function step_until(srv, cond, limit)
  local t0 = core.monotonic()
  while true do
    local v = cond()
    if v then return v end
    assert(core.monotonic() - t0 < (limit or 5), "condition not reached in time")
    srv:step(5)
  end
end

local function step_for(srv, seconds)
  local t0 = core.monotonic()
  while core.monotonic() - t0 < seconds do srv:step(20) end
end

describe("core.http_server deferred responses", function()
  local srv, pending, seen
  before_each(function()
    pending, seen = {}, {}
    srv = core.http_server {
      connection_timeout = 1,
      handler = function(req)
        seen[#seen + 1] = req.id
        if req.path == "/now" then return { body = "now" } end
        pending[#pending + 1] = req.id
        return false
      end,
    }
  end)
  after_each(function() srv:close() end)

  local function url(path) return "http://127.0.0.1:" .. srv:port() .. path end

  it("gives every request a fresh integer id and answers a deferred one from respond", function()
    local a = client.spawn { url("/later") }
    step_until(srv, function() return #pending == 1 end)
    local now = client.spawn { url("/now") }
    local rs = client.serve_until_done(srv, { now })
    assert.same({ 200, "now" }, { rs[1].status, rs[1].body }) -- not held up by the deferred one
    assert.same({ deferred = 1, active = 1 }, { deferred = srv:stats().deferred, active = srv:stats().active })
    assert.is_true(srv:respond(pending[1], { status = 201, headers = { ["X-A"] = "b" }, body = "later" }))
    assert.is_false(srv:respond(pending[1], { body = "twice" }))
    rs = client.serve_until_done(srv, { a })
    assert.same({ 201, "later", "b" }, { rs[1].status, rs[1].body, rs[1].headers["x-a"] })
    assert.equals(2, #seen)
    assert.is_true(math.type(seen[1]) == "integer" and seen[2] > seen[1] and seen[1] > 0)
    assert.equals(0, srv:stats().deferred)
    assert.is_false(srv:respond(seen[2] + 1000, {})) -- never issued
  end)

  it("keeps a deferred connection past connection_timeout (MHD does not time out suspended ones)", function()
    local a = client.spawn { url("/later") }
    step_until(srv, function() return #pending == 1 end)
    step_for(srv, 2.2) -- connection_timeout is 1 s
    assert.is_true(srv:respond(pending[1], { body = "still here" }))
    local rs = client.serve_until_done(srv, { a })
    assert.same({ 0, 200, "still here" }, { rs[1].code, rs[1].status, rs[1].body })
  end)

  it("forgets a request whose client hung up: respond returns false", function()
    local a = client.spawn { "--max-time", "0.5", url("/later") }
    local rs = client.serve_until_done(srv, { a })
    assert.equals(28, rs[1].code) -- curl gave up
    step_until(srv, function() return srv:stats().deferred == 0 end)
    assert.is_false(srv:respond(pending[1], { body = "too late" }))
    step_until(srv, function() return srv:stats().active == 0 end)
  end)

  -- The hang-up watch is per connection (joined once, when it opens): a
  -- later request on a kept-alive connection is watched as the first was.
  it("forgets the second request of a kept-alive connection when its client hangs up", function()
    local a = client.spawn { "--max-time", "1", url("/now"), url("/later") }
    step_until(srv, function() return #pending == 1 end)
    assert.equals(2, #seen) -- both on one connection, the first answered
    step_until(srv, function() return a.done() end, 5)
    step_until(srv, function() return srv:stats().deferred == 0 end)
    assert.is_false(srv:respond(pending[1], { body = "too late" }))
    step_until(srv, function() return srv:stats().active == 0 end)
  end)

  it("does not hold a request whose client half-closed before it was deferred", function()
    local done = scratch.file()
    -- The request and the FIN leave together, so the server sees the
    -- hang-up no later than the request.
    os.execute(("python3 -c %s %d %s >/dev/null 2>&1 &"):format(client.quote([[
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"GET /later HTTP/1.1\r\nHost: x\r\n\r\n")
s.shutdown(socket.SHUT_WR)
s.settimeout(5)
data = s.recv(4096)
open(sys.argv[2], "w").write("closed" if data == b"" else "answered")
]]), srv:port(), client.quote(done)))
    step_until(srv, function() return #pending == 1 end)
    step_until(srv, function() return srv:stats().deferred == 0 end)
    assert.is_false(srv:respond(pending[1], { body = "too late" }))
    step_until(srv, function() return client.slurp(done) == "closed" end)
    os.remove(done)
  end)

  it("honours delay_ms and faults in a deferred response", function()
    -- Two curl processes race to connect: tell their requests apart by path,
    -- never by arrival order.
    local by_path = {}
    srv:close()
    srv = core.http_server { handler = function(req) by_path[req.path] = req.id return false end }
    local a = client.spawn { url("/later-a") }
    local b = client.spawn { url("/later-b") }
    step_until(srv, function() return by_path["/later-a"] and by_path["/later-b"] end)
    assert.is_true(srv:respond(by_path["/later-a"], { body = "slowly", delay_ms = 300 }))
    assert.is_true(srv:respond(by_path["/later-b"], { fault = "reset" }))
    local t0 = core.monotonic()
    local rs = client.serve_until_done(srv, { a, b })
    assert.same({ 200, "slowly" }, { rs[1].status, rs[1].body })
    assert.is_true(core.monotonic() - t0 >= 0.25)
    assert.equals(56, rs[2].code)
  end)

  it("answers 500 and tells on_error when respond is given a malformed response", function()
    local msgs = {}
    srv:close()
    srv = core.http_server { handler = function(req) pending[#pending + 1] = req.id return false end,
      on_error = function(m) msgs[#msgs + 1] = m end }
    local a = client.spawn { url("/later") }
    step_until(srv, function() return #pending == 1 end)
    assert.is_true(srv:respond(pending[1], { status = 99 }))
    local rs = client.serve_until_done(srv, { a })
    assert.equals(500, rs[1].status)
    assert.matches("response.status: expected an integer 200..599, got 99", msgs[1], 1, true)
    assert.has_error(function() srv:respond("x", {}) end)
  end)

  it("exposes fd and timeout for an outer loop: timeout 0 right after a respond", function()
    assert.is_true(math.type(srv:fd()) == "integer" and srv:fd() >= 0)
    assert.equals(-1, srv:timeout()) -- nothing open, nothing due
    local a = client.spawn { url("/later") }
    step_until(srv, function() return #pending == 1 end)
    srv:respond(pending[1], { body = "x" })
    assert.equals(0, srv:timeout())
    srv:step(0)
    client.serve_until_done(srv, { a })
  end)

  it("stops accepting after quiesce, and still answers what it holds", function()
    local a = client.spawn { url("/later") }
    step_until(srv, function() return #pending == 1 end)
    srv:quiesce()
    srv:quiesce()
    assert.equals(7, client.run { "--max-time", "2", url("/now") }.code) -- connection refused
    srv:respond(pending[1], { body = "drained" })
    local rs = client.serve_until_done(srv, { a })
    assert.same({ 200, "drained" }, { rs[1].status, rs[1].body })
  end)

  it("closes with deferred connections, which get no answer", function()
    local a = client.spawn { url("/later") }
    step_until(srv, function() return #pending == 1 end)
    srv:close()
    for _ = 1, 250 do
      if a.done() then break end
      os.execute("sleep 0.02")
    end
    assert.equals(52, a.result().code)
    assert.has_error(function() srv:respond(pending[1], {}) end, "attempt to use a closed eidkit.HttpServer")
  end)

  it("answers 413 with too_large_body, before the handler", function()
    srv:close()
    srv = core.http_server { max_body = 16, too_large_body = '{"error":{"code":"too_large"}}',
      handler = function() seen[#seen + 1] = true return {} end }
    local rs = client.serve_until_done(srv, { client.spawn { "--data-binary", ("x"):rep(17), url("/") } })
    assert.same({ 413, '{"error":{"code":"too_large"}}' }, { rs[1].status, rs[1].body })
    assert.equals(0, #seen)
  end)
end)
