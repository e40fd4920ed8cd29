-- core.http_server (eidkit.HttpServer) on loopback, talked to with curl.
-- Served requests go to a child process (spec/fixtures/httpd_server.lua run
-- by the eidkit program); the object's own methods are tested in-process,
-- stepping the server while a background curl runs.
local scratch = require "support.scratch"
local core = require "eidkit.core"
local cjson = require "cjson"
local proc = require "support.proc"
local client = require "fixtures.httpd_client"
local child = require "support.child"

local bin = proc.bin()
local slurp = client.slurp
local FIXTURE = "spec/fixtures/httpd_server.lua"
local DATE_PATTERN = "^%a%a%a, %d%d %a%a%a %d%d%d%d %d%d:%d%d:%d%d GMT$"

local function sleep(s) os.execute("sleep " .. s) end

-- The fixture server as a child process: { port =, pid =, base = }.
local function start_server(...)
  local opts = type((...)) == "table" and (...) or nil
  local s = child.start(opts and { bin, FIXTURE } or { bin, FIXTURE, ... }, { ready = "port (%d+)", env = opts and opts.env })
  s.port = tonumber(s.ready)
  return s
end

-- Wait for the child to exit: its exit code, stdout, stderr.
local wait_server = child.wait

local function url(s, path, scheme)
  return (scheme or "http") .. "://127.0.0.1:" .. s.port .. path
end

describe("core.http_server", function()
  describe("under slow clients", function()
    local trickle = bin:gsub("[^/]*$", "") .. "trickle"

    -- Slow clients in the background from address `from`: a handle whose
    -- wait() returns {connected =, closed_by_server =}.
    local function spawn_trickle(mode, port, from, n, arg, seconds)
      local p = assert(io.popen(("%s %s 127.0.0.1 %d %s %d %d %d"):format(trickle, mode, port, from, n, arg, seconds)))
      local first = p:read("l")
      assert(first and first:match("^started %d+$"), "trickle did not start: " .. tostring(first))
      return { started = tonumber(first:match("%d+")), wait = function()
        local line = p:read("l") or ""
        p:close()
        local c, sh = line:match("^connected (%d+) closed_by_server (%d+)$")
        assert(c, "trickle said: " .. line)
        return { connected = tonumber(c), closed_by_server = tonumber(sh) }
      end }
    end

    local function timed_get(port)
      local t0 = core.monotonic()
      local r = client.run { "--max-time", "5", "http://127.0.0.1:" .. port .. "/echo" }
      return r, core.monotonic() - t0
    end

    it("serves a new client at once while 5,000 connections trickle their heads, and closes them at the deadline", function()
      local s = start_server { env = { HTTPD_FIXTURE_OPTS = '{"request_timeout": 3, "max_per_address": 1024}' } }
      finally(function() os.execute("kill -TERM " .. s.pid .. " 2>/dev/null") end)
      -- Five addresses of 1,000 each: under the per-address limit (1,024 of
      -- 4,096), over the connection limit together.
      local t = {}
      for i = 1, 5 do t[i] = spawn_trickle("head", s.port, "127.0.0." .. (i + 1), 1000, 1000, 6) end
      for _ = 1, 3 do
        local r, took = timed_get(s.port)
        assert.equals(201, r.status)
        assert.is_true(took < 1, ("a normal client took %.2f s"):format(took))
        sleep(0.5)
      end
      local connected, closed = 0, 0
      for i = 1, 5 do
        local res = t[i].wait()
        connected, closed = connected + res.connected, closed + res.closed_by_server
      end
      assert.is_true(connected >= 4000, "connected " .. connected)
      -- 6 s of trickling against a 3 s deadline for the whole head: every one cut
      assert.equals(connected, closed)
      os.execute("kill -TERM " .. s.pid)
      assert.equals(0, (wait_server(s)))
    end)

    it("limits the connections of one address", function()
      local s = start_server { env = { HTTPD_FIXTURE_OPTS = '{"max_per_address": 100}' } }
      finally(function() os.execute("kill -TERM " .. s.pid .. " 2>/dev/null") end)
      local t = spawn_trickle("head", s.port, "127.0.0.2", 300, 1000, 2)
      local r, took = timed_get(s.port)
      assert.equals(201, r.status)
      assert.is_true(took < 1)
      local res = t.wait()
      -- 100 held; the server hung up on the rest at once
      assert.equals(300, res.connected)
      assert.equals(200, res.closed_by_server)
      os.execute("kill -TERM " .. s.pid)
      assert.equals(0, (wait_server(s)))
    end)

    it("closes its side of connections whose client left mid-body, with no new traffic", function()
      local s = start_server()
      finally(function() os.execute("kill -TERM " .. s.pid .. " 2>/dev/null") end)
      local t = spawn_trickle("abandon", s.port, "127.0.0.2", 50, 1048576, 1)
      local function close_wait()
        local p = io.popen(("ss -Htan state close-wait '( sport = :%d )' | wc -l"):format(s.port))
        local n = tonumber(p:read("a"))
        p:close()
        return n
      end
      local t0, n = core.monotonic(), close_wait()
      while n > 0 and core.monotonic() - t0 < 3 do
        sleep(0.2)
        n = close_wait()
      end
      assert.equals(0, n)
      t.wait()
      os.execute("kill -TERM " .. s.pid)
      assert.equals(0, (wait_server(s)))
    end)

    it("caps the body bytes buffered across connections with 503, and cuts unfinished bodies", function()
      local s = start_server { env = { HTTPD_FIXTURE_OPTS = '{"max_buffered": 8388608, "request_timeout": 3}' } }
      finally(function() os.execute("kill -TERM " .. s.pid .. " 2>/dev/null") end)
      -- 20 bodies stopping at 1 MB of their 10: 8 MiB admits about 8 of them
      local t = spawn_trickle("body", s.port, "127.0.0.2", 20, 1048576, 5)
      local pid_rss = function()
        local f = io.open("/proc/" .. s.pid .. "/status")
        local rss = f:read("a"):match("VmRSS:%s*(%d+)")
        f:close()
        return tonumber(rss)
      end
      local r = timed_get(s.port)
      assert.equals(201, r.status)
      assert.is_true(pid_rss() < 200 * 1024, "RSS " .. pid_rss() .. " KiB")
      local res = t.wait()
      assert.equals(20, res.connected)
      assert.equals(20, res.closed_by_server) -- refused (503) or cut at the deadline
      os.execute("kill -TERM " .. s.pid)
      assert.equals(0, (wait_server(s)))
    end)
  end)

  describe("serving requests", function()
    local s
    lazy_setup(function() s = start_server() end)
    lazy_teardown(function()
      os.execute("kill -TERM " .. s.pid)
      assert.equals(0, (wait_server(s)))
    end)

    -- Raw bytes on a socket (curl will not send these shapes): the answer's
    -- status line. bash's /dev/tcp; every request asks to close.
    local function raw(text)
      local req = scratch.file()
      local f = assert(io.open(req, "wb"))
      f:write(text)
      f:close()
      local p = assert(io.popen(("bash -c 'exec 3<>/dev/tcp/127.0.0.1/%d; cat %s >&3; timeout 5 cat <&3' 2>&1")
        :format(s.port, req)))
      local out = p:read("a")
      p:close()
      os.remove(req)
      return out:match("^HTTP/1%.1 (%d+)"), out
    end

    it("refuses request smuggling shapes and an encoded NUL in the path with 400, and closes", function()
      local ok = raw("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
      assert.equals("201", ok)
      local cases = {
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n"
          .. "Connection: close\r\n\r\nhello!",
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 5\r\n"
          .. "Connection: close\r\n\r\nhello",
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n"
          .. "Connection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n"
          .. "Connection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: +5\r\nConnection: close\r\n\r\nhello",
        "GET /echo%00/secret HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        "GET /echo/%00%ff HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
      }
      for i, text in ipairs(cases) do
        local status, out = raw(text)
        assert.equals("400", status, "case " .. i .. ": " .. out:sub(1, 200))
        assert.matches("\r\nConnection: close\r\n", out)
        -- "+5" libmicrohttpd refuses itself, in its own words; the rest are ours
        if i ~= 5 then assert.matches('"code":"bad_request"', out, 1, true) end
      end
      -- The query may carry %00: it is handed over raw, not decoded here.
      assert.equals("201", (raw("GET /echo?a=%00 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")))
    end)

    it("passes method, path, query, args, headers, body and remote to the handler", function()
      local body = scratch.file()
      local f = assert(io.open(body, "wb"))
      f:write("hello\0world")
      f:close()
      local r = client.run { "-X", "PUT", "-H", "X-Trace: a", "-H", "X-Trace: b", "-H", "Content-Type: text/plain",
        "--data-binary", "@" .. body, url(s, "/echo?a=1&b=x%20y&flag") }
      os.remove(body)
      assert.equals(0, r.code)
      assert.equals(201, r.status)
      assert.equals("yes", r.headers["x-echo"])
      assert.equals("application/json", r.headers["content-type"])
      local req = cjson.decode(r.body)
      assert.equals("PUT", req.method)
      assert.equals("/echo", req.path)
      assert.equals("a=1&b=x%20y&flag", req.query)
      assert.same({ a = "1", b = "x y", flag = "" }, req.args)
      assert.equals("hello\0world", req.body)
      assert.equals("a, b", req.headers["x-trace"])
      assert.equals("text/plain", req.headers["content-type"])
      assert.equals("127.0.0.1:" .. s.port, req.headers.host)
      assert.matches("^127%.0%.0%.1:%d+$", req.remote)
    end)

    it("passes every header and argument when there are more than fit inline, and long names lower-cased", function()
      -- bindings/httpd.c copies up to 32 values on the C stack, more into a
      -- userdata: 40 headers and 40 arguments take the second path.
      local cmd, query = {}, {}
      for i = 1, 40 do
        cmd[#cmd + 1] = "-H"
        cmd[#cmd + 1] = string.format("X-Many-%02d: v%d", i, i)
        query[#query + 1] = "k" .. i .. "=" .. i
      end
      local long = "X-" .. string.rep("Long", 40) -- 162 bytes: past the stack buffer for names
      cmd[#cmd + 1] = "-H"
      cmd[#cmd + 1] = long .. ": yes"
      cmd[#cmd + 1] = url(s, "/echo?" .. table.concat(query, "&"))
      local r = client.run(cmd)
      assert.equals(201, r.status)
      local req = cjson.decode(r.body)
      for i = 1, 40 do
        assert.equals("v" .. i, req.headers[string.format("x-many-%02d", i)])
        assert.equals(tostring(i), req.args["k" .. i])
      end
      assert.equals("yes", req.headers[long:lower()])
    end)

    it("gives an empty query, args and body to a plain GET", function()
      local req = cjson.decode(client.run { url(s, "/echo") }.body)
      assert.same({ "GET", "", {}, "" }, { req.method, req.query, req.args, req.body })
    end)

    it("sends the handler's Date as given, else the current time", function()
      local r = client.run { url(s, "/date") }
      assert.same({ 200, "dated", "Tue, 01 Jan 2030 00:00:00 GMT" }, { r.status, r.body, r.headers.date })
      r = client.run { url(s, "/nowhere") }
      assert.equals(404, r.status)
      assert.matches(DATE_PATTERN, r.headers.date)
    end)

    it("delays two responses at once without one waiting for the other", function()
      local a = client.spawn { url(s, "/delay?ms=300") }
      local b = client.spawn { url(s, "/delay?ms=300") }
      local ok = false
      for _ = 1, 100 do
        if a.done() and b.done() then ok = true break end
        sleep(0.02)
      end
      assert.is_true(ok)
      for _, r in ipairs { a.result(), b.result() } do
        assert.same({ 0, 200, "late" }, { r.code, r.status, r.body })
        assert.is_true(r.time >= 0.29 and r.time < 0.55, "took " .. r.time)
      end
    end)

    it("resets the connection for fault = reset (curl: 56, nothing received)", function()
      local r = client.run { url(s, "/reset") }
      assert.equals(56, r.code)
      assert.equals("", r.body)
      r = client.run { url(s, "/reset?ms=100") }
      assert.equals(56, r.code)
      assert.is_true(r.time >= 0.09, "took " .. r.time)
    end)

    it("sends half the announced body for fault = truncate (curl: 18)", function()
      local r = client.run { url(s, "/truncate") }
      assert.equals(18, r.code)
      assert.equals(string.rep("0123456789", 50), r.body)
    end)

    it("spreads the body over slow_ms for fault = slow", function()
      local r = client.run { url(s, "/slow?ms=400") }
      assert.same({ 0, 200, string.rep("0123456789", 100) }, { r.code, r.status, r.body })
      assert.is_true(r.time >= 0.39, "took " .. r.time)
    end)

    it("answers 413 to a body over max_body, announced or chunked, without the handler", function()
      local big = string.rep("x", 1001)
      local r = client.run { "--data-binary", big, url(s, "/echo") }
      assert.same({ 0, 413 }, { r.code, r.status })
      r = client.run { "-H", "Transfer-Encoding: chunked", "--data-binary", big, url(s, "/echo") }
      assert.same({ 0, 413 }, { r.code, r.status })
      r = client.run { "--data-binary", string.rep("x", 1000), url(s, "/echo") }
      assert.same({ 201, 1000 }, { r.status, #cjson.decode(r.body).body })
    end)

    it("answers 500 to a handler error or a non-table return, and keeps serving", function()
      local before = tonumber(client.run { url(s, "/errors") }.body)
      for _, path in ipairs { "/error", "/bad" } do
        local r = client.run { url(s, path) }
        assert.same({ 0, 500, '{"error":"internal handler error"}' }, { r.code, r.status, r.body })
        assert.equals("application/json", r.headers["content-type"])
      end
      assert.equals(before + 2, tonumber(client.run { url(s, "/errors") }.body))
      assert.equals(200, client.run { url(s, "/date") }.status)
    end)
  end)

  describe("with TLS", function()
    local dir
    lazy_setup(function()
      dir = scratch.file()
      os.remove(dir)
      assert(os.execute("mkdir " .. dir .. " && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1"
        .. " -nodes -days 1 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 -keyout " .. dir
        .. "/key.pem -out " .. dir .. "/cert.pem 2>/dev/null"))
    end)
    lazy_teardown(function() os.execute("rm -rf " .. dir) end)

    it("serves HTTPS with a PEM certificate and key", function()
      local s = start_server(dir .. "/cert.pem", dir .. "/key.pem")
      local r = client.run { "--cacert", dir .. "/cert.pem", url(s, "/date", "https") }
      assert.same({ 0, 200, "dated" }, { r.code, r.status, r.body })
      r = client.run { "--cacert", dir .. "/cert.pem", url(s, "/truncate", "https") }
      assert.equals(18, r.code)
      assert.equals(0, client.run { "--cacert", dir .. "/cert.pem", url(s, "/stop", "https") }.code)
      local rc, out = wait_server(s)
      assert.same({ 0, "run returned stopped" }, { rc, out:match("run returned %a+") })
    end)

    it("refuses a bad PEM, naming the fields", function()
      local ok, err = pcall(core.http_server, { handler = print, tls_cert = "garbage", tls_key = "garbage" })
      assert.is_false(ok)
      assert.matches("bad argument #1 to '[%w.]*http_server' %(tls_cert/tls_key: .*PEM", err)
      ok, err = pcall(core.http_server, { handler = print, tls_cert = slurp(dir .. "/cert.pem") })
      assert.is_false(ok)
      assert.matches("tls_key: required with the other TLS field", err, 1, true)
    end)
  end)

  describe("run", function()
    for _, sig in ipairs { "TERM", "INT" } do
      it("returns 'signal' on SIG" .. sig .. ", so the program exits cleanly", function()
        local s = start_server()
        assert.equals(200, client.run { url(s, "/date") }.status)
        os.execute("kill -" .. sig .. " " .. s.pid)
        local rc, out, err = wait_server(s)
        assert.equals(0, rc, err)
        assert.matches("run returned signal", out)
      end)
    end

    it("returns 'stopped' after stop() in a handler, and restores the signal handlers", function()
      local script = scratch.file()
      local f = assert(io.open(script, "w"))
      f:write([[
        package.path = "spec/?.lua;" .. package.path
        local client = require "fixtures.httpd_client"
        local srv
        srv = require("eidkit.core").http_server { handler = function() srv:stop() return { body = "bye" } end }
        local h = client.spawn { "http://127.0.0.1:" .. srv:port() .. "/" }
        print(srv:run())
        while not h.done() do srv:step(5) end
        print(h.result().body)
        srv:close()
        os.execute("kill -TERM " .. io.open("/proc/self/stat"):read("n"))
        print("not reached")
      ]])
      f:close()
      -- It dies by SIGTERM, which runs no finalizer: its scratch goes in ours.
      local r = proc.run({ bin, script }, { env = { TMPDIR = scratch.dir() } })
      os.remove(script)
      assert.equals("stopped\nbye\n", r.stdout)
      assert.equals(143, r.code) -- SIGTERM's default action is back
    end)
  end)

  describe("in process", function()
    local function server(handler, opts)
      opts = opts or {}
      opts.handler = handler
      return core.http_server(opts)
    end

    it("binds an ephemeral port and reports it", function()
      local srv = server(function() return {} end)
      assert.is_true(math.type(srv:port()) == "integer" and srv:port() > 0)
      assert.equals("eidkit.HttpServer (port " .. srv:port() .. ")", tostring(srv))
      assert.is_true(srv:step(0))
      assert.is_true(srv:step())
      srv:close()
    end)

    it("defaults to status 200 and an empty body", function()
      local srv = server(function() return {} end)
      local r = client.serve_until_done(srv, { client.spawn { "http://127.0.0.1:" .. srv:port() .. "/" } })[1]
      srv:close()
      assert.same({ 0, 200, "", "0" }, { r.code, r.status, r.body, r.headers["content-length"] })
      assert.matches(DATE_PATTERN, r.headers.date)
    end)

    it("counts requests, suspended, deferred and active requests in stats()", function()
      local srv, seen
      srv = server(function(req)
        if req.path == "/stats" then seen = srv:stats() end
        return { delay_ms = req.path == "/slow" and 200 or nil }
      end)
      local base = "http://127.0.0.1:" .. srv:port()
      local slow = client.spawn { base .. "/slow" }
      local limit = os.time() + 5
      while srv:stats().suspended == 0 and os.time() <= limit do srv:step(5) end
      local rs = client.serve_until_done(srv, { client.spawn { base .. "/stats" }, slow })
      assert.same({ 200, 200 }, { rs[1].status, rs[2].status })
      assert.same({ connections = 2, suspended = 1, requests = 2, deferred = 0, active = 2 }, seen)
      local after = srv:stats()
      assert.same({ 0, 2 }, { after.suspended, after.requests })
      srv:close()
    end)

    it("reports a handler error with its traceback to on_error", function()
      local msgs = {}
      local srv = server(function(req)
        if req.path == "/status" then return { status = 99 } end
        if req.path == "/fault" then return { fault = "explode" } end
        if req.path == "/header" then return { headers = { ["X-Bad"] = {} } } end
        if req.path == "/length" then return { body = "abc", headers = { ["Content-Length"] = "4" } } end
        if req.path == "/length3" then return { body = "abc", headers = { ["content-length"] = "3" } } end
        local function deep() error("deep trouble") end
        deep()
      end, { on_error = function(m) msgs[#msgs + 1] = m end })
      local base = "http://127.0.0.1:" .. srv:port()
      local rs = client.serve_until_done(srv, { client.spawn { base .. "/" } })
      assert.equals(500, rs[1].status)
      assert.matches("deep trouble", msgs[1])
      assert.matches("stack traceback:.*in %a+ 'deep'", msgs[1])
      for i, case in ipairs {
        { "/status", "response.status: expected an integer 200..599, got 99" },
        { "/fault", 'response.fault: expected "reset", "truncate" or "slow", got explode' },
        { "/header", 'response.headers["X-Bad"]: expected string, got table' },
        { "/length", 'response.headers["Content-Length"]: 4 differs from #body (3)' },
      } do
        rs = client.serve_until_done(srv, { client.spawn { base .. case[1] } })
        assert.equals(500, rs[1].status)
        assert.truthy(msgs[i + 1]:find(case[2], 1, true), msgs[i + 1])
      end
      rs = client.serve_until_done(srv, { client.spawn { base .. "/length3" } })
      assert.same({ 200, "abc", "3" }, { rs[1].status, rs[1].body, rs[1].headers["content-length"] })
      srv:close()
    end)

    it("refuses close, run and step from inside the handler", function()
      local msgs, srv = {}, nil
      srv = server(function(req)
        if req.path == "/close" then srv:close() end
        if req.path == "/run" then srv:run() end
        srv:step(0)
      end, { on_error = function(m) msgs[#msgs + 1] = m end })
      local base = "http://127.0.0.1:" .. srv:port()
      local rs = client.serve_until_done(srv, {
        client.spawn { base .. "/close" }, client.spawn { base .. "/run" }, client.spawn { base .. "/step" } })
      for _, r in ipairs(rs) do assert.equals(500, r.status) end
      table.sort(msgs)
      assert.matches("eidkit.HttpServer:close called from inside its handler", msgs[1])
      assert.matches("eidkit.HttpServer:run called from inside its handler", msgs[2])
      assert.matches("eidkit.HttpServer:step called from inside its handler", msgs[3])
      srv:close()
    end)

    it("writes handler errors to stderr without on_error", function()
      local script = scratch.file()
      local f = assert(io.open(script, "w"))
      f:write([[
        package.path = "spec/?.lua;" .. package.path
        local client = require "fixtures.httpd_client"
        local srv = require("eidkit.core").http_server { handler = function() error("oops") end }
        local r = client.serve_until_done(srv, { client.spawn { "http://127.0.0.1:" .. srv:port() .. "/" } })
        print(r[1].status)
      ]])
      f:close()
      local r = proc.run { bin, script }
      os.remove(script)
      assert.equals("500\n", r.stdout)
      assert.matches("^eidkit.HttpServer: handler error: .*oops\nstack traceback:", r.stderr)
    end)

    it("closes idempotently, by close(), <close> and __gc, and answers nothing after", function()
      local srv = server(function() return { delay_ms = 5000 } end)
      local h = client.spawn { "http://127.0.0.1:" .. srv:port() .. "/" }
      local limit = os.time() + 5
      while srv:stats().suspended == 0 and os.time() <= limit do srv:step(5) end
      srv:close() -- with a suspended connection
      srv:close()
      for _ = 1, 100 do
        if h.done() then break end
        sleep(0.02)
      end
      assert.equals(52, h.result().code) -- closed without a response
      assert.equals("eidkit.HttpServer (closed)", tostring(srv))
      for _, m in ipairs { "port", "run", "step", "stop", "stats" } do
        assert.has_error(function() srv[m](srv) end, "attempt to use a closed eidkit.HttpServer")
      end
      local port
      do
        local s2 <close> = server(function() return {} end)
        port = s2:port()
      end
      server(function() return {} end, { port = port }) -- the port is free again; left to __gc
      collectgarbage()
      collectgarbage()
      server(function() return {} end, { port = port }):close()
    end)

    it("raises on bad options, naming the field", function()
      local taken = server(function() return {} end)
      local h = function() return {} end
      for _, case in ipairs {
        { nil, "bad argument #1 to '[%w.]*http_server' %(table expected, got nil%)" },
        { {}, "(handler: required (a function))" },
        { { handler = 1 }, "(handler: expected function)" },
        { { handler = h, port = "80" }, "(port: expected an integer 0..65535, got 80)" },
        { { handler = h, port = 65536 }, "(port: expected an integer 0..65535, got 65536)" },
        { { handler = h, port = 1.5 }, "(port: expected an integer 0..65535, got 1.5)" },
        { { handler = h, host = "localhost" }, "(host: expected an IPv4 or IPv6 address literal)" },
        { { handler = h, host = 1 }, "(host: expected string, got number)" },
        { { handler = h, max_body = -1 }, "(max_body: expected an integer 0..1099511627776, got -1)" },
        { { handler = h, max_connections = 0 }, "(max_connections: expected an integer 1..1000000, got 0)" },
        { { handler = h, connection_timeout = "60" }, "(connection_timeout: expected an integer 0..86400, got 60)" },
        { { handler = h, on_error = "log" }, "(on_error: expected function)" },
        { { handler = h, tls_cert = "x" }, "(tls_key: required with the other TLS field)" },
        { { handler = h, tls_key = "x" }, "(tls_cert: required with the other TLS field)" },
        { { handler = h, prot = 8080 }, "(unknown option 'prot')" },
        { { handler = h, port = taken:port() }, "bad argument #1 to '[%w.]*http_server' %(port: address already in use%)" },
      } do
        local ok, err = pcall(core.http_server, case[1])
        assert.is_false(ok)
        if case[2]:sub(1, 1) == "(" then
          assert.truthy(err:find("http_server' " .. case[2], 1, true), err)
        else
          assert.matches(case[2], err)
        end
      end
      taken:close()
      local srv = server(h)
      assert.has_error(function() srv:step(-1) end)
      assert.has_error(function() srv.port(io.stdout) end)
      srv:close()
    end)
  end)
end)
