-- examples/openresty/run against `eidkit serve --sim`: the same table of
-- requests (support.gateway_cases) run against both, each checked against
-- what it must answer and the two compared answer by answer; then run's
-- own behaviour: its first two stdout lines, the demo authorize warning,
-- --help, bad flags, SIGTERM stopping nginx, the simulator and redis with
-- exit 0. Real nginx, real `eidkit sim`, real redis-server.
local scratch = require "support.scratch"
local sp = require "support.serveproc"
local orrun = require "support.orrun"
local cases = require "support.gateway_cases"
local proc = require "support.proc"
local core = require "eidkit.core"

local function alive(pid)
  local stat = proc.read("/proc/" .. pid .. "/stat")
  return stat ~= nil and stat:match("^%d+ %b() (%a)") ~= "Z"
end

-- write(path, text) -> path: a file the test gives run (a policy, an include).
local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

describe("examples/openresty/run", function()
  it("answers the case table as `eidkit serve --sim` does", function()
    local db = scratch.file()
    local serve = sp.start { "--sim", "--ledger", "sqlite:" .. db .. ".db", "--sweep-interval", "0",
      "--upstream-timeout", "1", "--upstream-deadline", "2",
      "--h5-return-url", "https://shop.example/verified" }
    local ok, from_serve = pcall(cases.run, serve)
    sp.stop(serve)
    for _, ext in ipairs { "", ".db", ".db-wal", ".db-shm" } do os.remove(db .. ext) end
    assert(ok, from_serve)
    cases.check(from_serve, "eidkit serve")

    local s = orrun.start { "--sweep-interval", "0", "--upstream-timeout", "1", "--upstream-deadline", "2",
      "--h5-return-url", "https://shop.example/verified" }
    local rok, from_nginx = pcall(cases.run, s)
    local log = orrun.error_log(s)
    orrun.stop(s)
    assert(rok, from_nginx)
    cases.check(from_nginx, "examples/openresty/run")
    for _, c in ipairs(cases.CASES) do
      assert.same(cases.comparable(c, from_serve[c[1]]), cases.comparable(c, from_nginx[c[1]]),
        c[1] .. "\nerror.log:\n" .. log:sub(-2000))
    end
    assert.falsy(log:find(require("eidkit.sim").demo.SecretKey, 1, true), "error.log holds the secret key")
    -- nginx logs the upstream faults and the refused body; nothing of Lua's
    assert.falsy(log:find("eidkit gateway:", 1, true) or log:find("lua entry thread aborted", 1, true),
      "error.log:\n" .. log:sub(-2000))
  end)

  it("says where it listens, then where the simulator is, warns about the demo authorize, "
    .. "and stops nginx, the simulator and redis on SIGTERM with exit 0", function()
    local s = orrun.start {}
    assert.matches("^http://127%.0%.0%.1:%d+$", s.url)
    assert.matches("^http://127%.0%.0%.1:%d+$", s.sim_url)
    assert.same({ "listening on " .. s.url, "simulator on " .. s.sim_url }, s.lines)
    local prefix = orrun.prefix(s)
    local master = proc.read(prefix .. "/logs/nginx.pid"):match("%d+")
    local workers = orrun.workers(s)
    assert.equals(1, #workers)
    local sim_port = s.sim_url:match(":(%d+)$")
    local children = proc.output("pgrep -P " .. s.pid)
    local code, out, err = orrun.stop(s)
    assert.equals(0, code, err)
    assert.equals(2, select(2, out:gsub("\n", "")))
    assert.matches("demo authorize: .*X%-Eidkit%-Demo%-User.*never use in production", err)
    -- In eidkit serve's words: eidkit.gateway.settings'.
    assert.truthy(err:find("examples/openresty/run: " .. require("eidkit.gateway.settings").DEMO_WARNING .. "\n",
      1, true))
    assert.is_false(alive(master), "nginx still runs")
    for pid in children:gmatch("%d+") do assert.is_false(alive(pid), "a child of run still runs: " .. pid) end
    assert.is_false(proc.sh("curl -s -o /dev/null --max-time 1 " .. s.sim_url .. "/"), "the simulator still answers")
    assert.truthy(sim_port)
  end)

  it("on SIGTERM lets a request in flight finish before it stops", function()
    local s = orrun.start { "--sweep-interval", "0", "--sim-fault", "GetEidToken:latency:ms=1500" }
    local h = sp.spawn(s, "POST", "/eid/token", { user = "late" })
    core.sleep(0.5)
    local code = orrun.stop(s)
    local r = sp.wait_all({ h })[1]
    assert.equals(0, code)
    assert.equals(200, r.status, r.body)
    assert.is_string(r.json.EidToken)
  end)

  it("--drain-timeout: a request still in flight then is cut, and run stops at once", function()
    local s = orrun.start { "--sweep-interval", "0", "--drain-timeout", "0.5",
      "--sim-fault", "GetEidToken:latency:ms=6000" }
    local h = sp.spawn(s, "POST", "/eid/token", { user = "late" })
    core.sleep(0.5)
    local t0 = core.monotonic()
    local code = orrun.stop(s)
    local took = core.monotonic() - t0
    local r = sp.wait_all({ h })[1]
    assert.equals(0, code)
    assert.is_true(took < 4, "run took " .. took .. " s to stop") -- not the 6 s the request needs
    assert.are_not.equal(200, r.status)
  end)

  it("--request-timeout: a request whose head does not arrive in time is dropped", function()
    local s = orrun.start { "--sweep-interval", "0", "--request-timeout", "1" }
    local port = s.url:match(":(%d+)$")
    -- Half a head, then nothing: nginx closes the connection after 1 s.
    local r = proc.run { "python3", "-c", [[
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"POST /eid/result HTTP/1.1\r\nHost: x\r\n")
s.settimeout(10)
t0 = time.monotonic()
data = s.recv(4096)
print("%.2f %d" % (time.monotonic() - t0, len(data)))
]], port }
    orrun.stop(s)
    local waited = tonumber(r.stdout:match("^([%d.]+)"))
    assert.is_truthy(waited, r.stdout .. r.stderr)
    assert.is_true(waited >= 0.8 and waited < 5, "closed after " .. waited .. " s")
  end)

  it("--config: the file sets what eidkit serve's would, and a flag wins over it", function()
    local conf = write(scratch.file(), [[
      return { token_fields = { "Extra" }, sweep_interval = 0,
               h5_return_url = "http://from-file.example/done", upstream_timeout = 5 }
    ]])
    local s = orrun.start { "--config", conf, "--h5-return-url", "http://from-flag.example/back" }
    local tok = sp.request(s, "POST", "/eid/token", { user = "cfg", body = { Extra = "order-7" } })
    local back = sp.request(s, "GET", "/eid/h5/return", { user = "cfg" })
    orrun.stop(s)
    os.remove(conf)
    assert.equals(200, tok.status, tok.body) -- token_fields from the file: Extra accepted
    assert.equals(303, back.status)
    assert.matches("^http://from%-flag%.example/back%?status=error", back.headers.location)
  end)

  it("--config: token_params and result_fields, the tables eidkit serve's file may set", function()
    -- InputType "4" makes Name and IdCard required by GetEidToken: the
    -- simulator refusing a token without them shows token_params reached it.
    local conf = write(scratch.file(), [[
      return { sweep_interval = 0, token_fields = { "Name", "IdCard" },
               token_params = { Config = { InputType = "4" } }, result_fields = { "request_id" } }
    ]])
    local s = orrun.start { "--config", conf }
    local bare = sp.request(s, "POST", "/eid/token", { user = "tp" })
    local tok = sp.request(s, "POST", "/eid/token", { user = "tp", body = { Name = "韦小宝", IdCard = "11204416541220243X" } })
    local res = tok.status == 200 and sp.request(s, "POST", "/eid/result", { user = "tp", body = { EidToken = tok.json.EidToken } })
    orrun.stop(s)
    os.remove(conf)
    assert.same({ 502, "MissingParameter" }, { bare.status, bare.json and bare.json.error.code })
    assert.equals(200, tok.status, tok.body)
    assert.same({ 200, "pending" }, { res.status, res.json.status })
    assert.is_string(res.json.request_id) -- result_fields from the file
  end)

  it("--policy: the script's authorize names the user, and no demo authorize is left", function()
    local path = write(scratch.file(),
      'return { authorize = function(req) return req.headers["x-user"] or false, "no X-User header" end }\n')
    local s = orrun.start { "--policy", path, "--sweep-interval", "0" }
    local ok, err = pcall(function()
      local r = sp.request(s, "POST", "/eid/token", { headers = { ["X-User"] = "pol" } })
      assert.equals(200, r.status, r.body)
      r = sp.request(s, "POST", "/eid/token", { user = "demo" })
      assert.same({ 401, "unauthorized" }, { r.status, r.json.error.code })
    end)
    local code, _, stderr = orrun.stop(s)
    os.remove(path)
    assert(ok, err)
    assert.equals(0, code)
    assert.falsy(stderr:find("demo authorize", 1, true), stderr)
  end)

  it("SIGHUP reloads the policy; a script that does not load keeps the old one, and says why", function()
    local path, s_hup = scratch.file(), nil
    local function policy(text) write(path, text) end
    local function by(header)
      return 'return { authorize = function(req) return req.headers["' .. header .. '"] or false, "no ' .. header
        .. '" end }\n'
    end
    local function status(header)
      return sp.request(s_hup, "POST", "/eid/token", { headers = { [header] = "hup" } }).status
    end
    policy(by("x-first"))
    s_hup = orrun.start { "--policy", path, "--sweep-interval", "0" }
    local ok, err = pcall(function()
      assert.equals(200, status("X-First"))
      policy(by("x-second"))
      -- nginx's reload starts new workers and lets the old ones finish: until
      -- they have exited, a new connection may still reach one of them (each
      -- has its own reuseport socket). Wait for that, then ask.
      local old = orrun.workers(s_hup)
      assert.truthy(#old > 0, "no workers")
      s_hup.process:kill("HUP")
      local t0 = core.monotonic()
      local function old_alive()
        for _, pid in ipairs(old) do if alive(pid) then return true end end
        return false
      end
      while old_alive() and core.monotonic() - t0 < 15 do core.sleep(0.1) end
      assert.is_false(old_alive(), "the old workers still run 15 s after SIGHUP")
      assert.equals(200, status("X-Second"))
      assert.equals(401, status("X-First"))
      policy("return {")
      s_hup.process:kill("HUP")
      t0 = core.monotonic()
      while not orrun.error_log(s_hup):find("policy:", 1, true) and core.monotonic() - t0 < 10 do core.sleep(0.1) end
      assert.matches("eidkit gateway: policy: ", orrun.error_log(s_hup), 1, true)
      core.sleep(0.5)
      assert.equals(200, status("X-Second"))
      assert.is_nil(s_hup.process:wait(0), "run exited")
    end)
    local code = orrun.stop(s_hup)
    os.remove(path)
    assert(ok, err)
    assert.equals(0, code)
  end)

  it("--ledger sqlite:PATH: the flow on the SQLite ledger through the FFI, no redis-server", function()
    local db = scratch.file()
    local s = orrun.start { "--ledger", "sqlite:" .. db .. ".db", "--sweep-interval", "0" }
    local ok, err = pcall(function()
      local tok = sp.token(s, "sq")
      sp.sim_finish(s, tok, 0)
      local r = sp.request(s, "POST", "/eid/result", { user = "sq", body = { EidToken = tok } })
      assert.same({ 200, "passed" }, { r.status, r.json.status })
      assert.equals(200, sp.request(s, "GET", "/healthz").status)
      assert.equals("", proc.output("pgrep -P " .. s.pid .. " redis-server"))
    end)
    orrun.stop(s)
    for _, ext in ipairs { "", ".db", ".db-wal", ".db-shm" } do os.remove(db .. ext) end
    assert(ok, err)
  end)

  it("--include: the file's locations served beside the gateway; an unreadable one is exit 2", function()
    local path = write(scratch.file(), 'location = /probe { default_type text/plain; return 200 "included"; }\n')
    local s = orrun.start { "--include", path, "--sweep-interval", "0" }
    local ok, err = pcall(function()
      local r = sp.request(s, "GET", "/probe")
      assert.same({ 200, "included" }, { r.status, r.body })
      r = sp.request(s, "POST", "/eid/token", { user = "inc" })
      assert.equals(200, r.status, r.body)
    end)
    local code = orrun.stop(s)
    os.remove(path)
    assert(ok, err)
    assert.equals(0, code)
    local bad = proc.run { orrun.RUN, "--include", path .. ".missing" }
    assert.equals(2, bad.code)
    assert.matches("--include: cannot read", bad.stderr, 1, true)
  end)

  it("--listen on a port another process holds: exit 1 with nginx's reason, never `listening on`", function()
    -- The other process answers connections on the port while nginx is
    -- still retrying its bind: a probe that only connects took it for nginx.
    local holder = require("support.child").start({ "python3", "-c", "import socket, time; s = socket.socket(); "
      .. "s.bind(('127.0.0.1', 0)); s.listen(); print(s.getsockname()[1], flush=True); time.sleep(120)" },
      { ready = "^(%d+)\n" })
    local r = proc.run { "timeout", "60", orrun.RUN, "--listen", "127.0.0.1:" .. holder.ready }
    require("support.child").stop(holder)
    assert.equals(1, r.code, r.stdout .. r.stderr)
    assert.equals("", r.stdout)
    assert.matches("nginx did not start:.*Address already in use", r.stderr)
  end)

  it("--check: exit 0 for a configuration that holds, 2 naming what does not; nothing started", function()
    local ok = proc.run { orrun.RUN, "--check", "--workers", "2" }
    assert.same({ 0, "examples/openresty/run: configuration ok\n" }, { ok.code, ok.stdout })
    local broken = write(scratch.file(), "return {")
    local bad_settings = {
      { { "--policy", broken }, "eidkit gateway: policy: " },
      { { "--token-limit", "five" }, "eidkit gateway: token_limit: expected COUNT/SECONDS" },
      { { "--upstream-timeout", "0" }, "eidkit gateway: upstream_timeout: expected seconds > 0" },
      { { "--h5-return-url", "javascript:x" }, "eidkit gateway: bad option 'h5_return_url'" },
    }
    for _, c in ipairs(bad_settings) do
      local argv = { orrun.RUN, "--check" }
      for _, a in ipairs(c[1]) do argv[#argv + 1] = a end
      local r = proc.run(argv)
      assert.equals(2, r.code, table.concat(c[1], " ") .. ": " .. r.stdout .. r.stderr)
      assert.matches("the configuration does not hold:\n" .. c[2], r.stderr, 1, true)
      assert.falsy(r.stderr:find("stack traceback", 1, true), r.stderr)
      assert.equals("", r.stdout)
    end
    os.remove(broken)
  end)

  it("--help names every flag the script reads; a bad flag is exit 2", function()
    local r = proc.run { orrun.RUN, "--help" }
    assert.equals(0, r.code)
    local src = proc.read(orrun.RUN)
    local parsed = {}
    for flag in src:match("while %[ %$# %-gt 0 %]; do(.-)\ndone"):gmatch("(%-%-[%w%-]+)[|)]") do parsed[flag] = true end
    local helped = {}
    for flag in r.stdout:gmatch("\n  (%-%-[%w%-]+)") do helped[flag] = true end
    assert.same(parsed, helped)
    -- --config: each key it reads is one of the flags
    for key in src:match("config_keys=%((.-)%)"):gmatch("([%w_]+)=%a+") do
      assert.is_true(parsed["--" .. key:gsub("_", "-")] or false, "config key " .. key .. " is no flag")
    end
    local conf = write(scratch.file(), 'return { merchant_id = "0NSJ", token_fields = "Extra" }')
    local table_less = write(scratch.file(), "return 42")
    -- {argv, exit status, words}: bad usage is 2; a setting the gateway
    -- refuses stops nginx from starting (1), in eidkit serve's words
    -- (eidkit.gateway.settings)
    local refused = {
      { { "--workers", "0" }, 2, "--workers: expected 1..64" },
      { { "--request-timeout", "0.2" }, 2, "--request-timeout: expected at least 1.000 seconds, got '0.2'" },
      { { "--drain-timeout", "soon" }, 2, "--drain-timeout: expected seconds, got 'soon'" },
      { { "--config", conf }, 2, "--config " .. conf .. ": unknown key 'merchant_id'" },
      { { "--config", table_less }, 2, "--config " .. table_less .. ": must return a table, got number" },
      { { "--frobnicate" }, 2, "unknown option '--frobnicate'" },
      -- in eidkit serve's words (eidkit.realip)
      { { "--real-ip-from", "10.0.0.0/8", "--real-ip-from", "10.0.0.0/33" }, 2,
        "--real-ip-from: '10.0.0.0/33' is not an address or CIDR (e.g. 10.0.0.0/8, 192.168.1.7, fd00::/8)" },
      { { "--token-limit", "five" }, 1, "token_limit: expected COUNT/SECONDS" },
      { { "--upstream-timeout", "0" }, 1, "upstream_timeout: expected seconds > 0, at most 86400; got '0'" },
    }
    for _, c in ipairs(refused) do
      local bad = proc.run { orrun.RUN, table.unpack(c[1]) }
      assert.equals(c[2], bad.code, table.concat(c[1], " "))
      assert.matches(c[3], bad.stderr, 1, true)
    end
    os.remove(conf)
    os.remove(table_less)
  end)
end)
