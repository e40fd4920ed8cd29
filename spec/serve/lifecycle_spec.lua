-- `eidkit serve` as a process: signals (SIGTERM drains, SIGHUP reloads the
-- policy), --check, the exit codes, and its help against its flag parser.
local scratch = require "support.scratch"
local core = require "eidkit.core"
local cjson = require "cjson"
local sp = require "support.serveproc"
local proc = require "support.proc"
local promtext = require "support.promtext"
local testca = require "support.testca"
local args = require "eidkit.cli.args"
local serve_cli = require "eidkit.cli.serve"

local bin = proc.bin()

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

local function tmp_db()
  local base = scratch.file()
  return "sqlite:" .. base .. ".db", function()
    for _, ext in ipairs { "", ".db", ".db-wal", ".db-shm" } do os.remove(base .. ext) end
  end
end

-- The simulator's request count, through its control API.
local function sim_requests(s)
  local status, body = core.http_request("GET", s.sim_url .. "/sim/health", nil, 5)
  assert(status == 200)
  return math.tointeger(cjson.decode(body).Requests)
end

-- A passed token for user, then a background /eid/result that the
-- simulator holds for latency_ms; returns once the simulator has it.
local function slow_result(s, user, latency_ms)
  local tok = sp.token(s, user)
  sp.sim_finish(s, tok, 0)
  sp.sim_faults(s, { { Action = "GetEidResult", Kind = "latency", Ms = latency_ms } })
  local before, polls = sim_requests(s), 0
  local h = sp.spawn(s, "POST", "/eid/result", { user = user, body = { EidToken = tok } })
  sp.wait_for(function()
    polls = polls + 1
    return sim_requests(s) > before + polls
  end, 10, "the GetEidResult to reach the simulator")
  return h
end

describe("eidkit serve", function()
  describe("on SIGTERM", function()
    it("stops accepting, lets the request in flight finish, and exits 0", function()
      local url, cleanup = tmp_db()
      local s = sp.start { "--sim", "--ledger", url, "--sweep-interval", "0" }
      local h = slow_result(s, "alice", 1500)
      assert(s.process:kill("TERM"))
      -- new connections are refused while the old request drains
      sp.wait_for(function()
        return sp.request(s, "GET", "/healthz", { max_time = 1 }).code == 7
      end, 5, "the listener to close")
      assert.is_false(h.done())
      local r = sp.wait_all({ h })[1]
      assert.same({ 200, "passed" }, { r.status, r.json and r.json.status })
      local code, _, err = sp.stop(s, false)
      assert.equals(0, code)
      assert.matches("stopped %(signal%)\n$", err)
      cleanup()
    end)

    it("answers 503 to what is still waiting at --drain-timeout, and exits 0", function()
      local url, cleanup = tmp_db()
      local s = sp.start { "--sim", "--ledger", url, "--sweep-interval", "0", "--drain-timeout", "0.3" }
      local h = slow_result(s, "bob", 5000)
      local t0 = core.monotonic()
      assert(s.process:kill("TERM"))
      local r = sp.wait_all({ h })[1]
      assert.is_true(core.monotonic() - t0 < 3)
      assert.same({ 503, "shutting_down" }, { r.status, r.json and r.json.error.code })
      local code, _, err = sp.stop(s, false)
      assert.equals(0, code)
      assert.matches("1 request answered 503 at the drain deadline", err, 1, true)
      cleanup()
    end)
  end)

  describe("on SIGHUP", function()
    it("reloads the policy; a broken one keeps the old and says why", function()
      local url, cleanup = tmp_db()
      local policy = scratch.file() .. ".lua"
      write(policy, [[return { authorize = function(req) return req.headers["x-user"] or false end }]])
      local s = sp.start { "--sim", "--policy", policy, "--ledger", url, "--sweep-interval", "0" }
      local function token_status(headers)
        return sp.request(s, "POST", "/eid/token", { headers = headers }).status
      end
      assert.equals(200, token_status { ["X-User"] = "u1" })
      assert.equals(401, token_status { ["X-Other"] = "u1" })
      local _, err0 = sp.output(s)
      assert.is_nil(err0:find("demo authorize", 1, true)) -- a real policy: no demo

      write(policy, [[return { authorize = function(req) return req.headers["x-other"] or false end ]]) -- broken
      assert(s.process:kill("HUP"))
      sp.wait_for(function() return select(2, sp.output(s)):find("policy not reloaded", 1, true) end, 5,
        "the reload failure")
      local _, err1 = sp.output(s)
      assert.matches("SIGHUP: policy not reloaded, keeping the old one: %-%-policy: .*" .. policy:gsub("%p", "%%%0"), err1)
      assert.equals(200, token_status { ["X-User"] = "u2" })

      write(policy, [[return { authorize = function(req) return req.headers["x-other"] or false end }]])
      assert(s.process:kill("HUP"))
      sp.wait_for(function() return select(2, sp.output(s)):find("policy reloaded from", 1, true) end, 5,
        "the reload")
      assert.equals(200, token_status { ["X-Other"] = "u3" })
      assert.equals(401, token_status { ["X-User"] = "u3" })
      assert.equals(0, (sp.stop(s)))
      os.remove(policy)
      cleanup()
    end)
  end)

  describe("--access-log", function()
    local function lines_of(path)
      local out = {}
      for line in (proc.read(path) or ""):gmatch("[^\n]+") do
        out[#out + 1] = cjson.decode(line).path
      end
      return out
    end

    it("is reopened on SIGHUP, so that a rotated log is let go", function()
      local url, cleanup = tmp_db()
      local log = scratch.file() .. ".log"
      local s = sp.start { "--sim", "--ledger", url, "--sweep-interval", "0", "--access-log", log }
      assert.equals(200, sp.request(s, "GET", "/healthz").status)
      sp.wait_for(function() return #lines_of(log) == 1 end, 5, "the first line")
      assert(os.rename(log, log .. ".1")) -- what logrotate does, then it signals
      assert.equals(404, sp.request(s, "GET", "/before-hup").status)
      sp.wait_for(function() return #lines_of(log .. ".1") == 2 end, 5, "the line before SIGHUP")
      assert(s.process:kill("HUP"))
      sp.wait_for(function() return select(2, sp.output(s)):find("access log reopened", 1, true) end, 5,
        "the reopen")
      assert.equals(404, sp.request(s, "GET", "/after-hup").status)
      sp.wait_for(function() return #lines_of(log) == 1 end, 5, "the line after SIGHUP")
      assert.same({ "/healthz", "/before-hup" }, lines_of(log .. ".1"))
      assert.same({ "/after-hup" }, lines_of(log))
      local _, err = sp.output(s)
      assert.is_nil(err:find("no --policy file", 1, true)) -- the reopen was what SIGHUP was for
      assert.equals(0, (sp.stop(s)))
      os.remove(log)
      os.remove(log .. ".1")
      cleanup()
    end)

    it("counts the lines a failed write lost, says so once, and answers as ever", function()
      local url, cleanup = tmp_db()
      local s = sp.start { "--sim", "--ledger", url, "--sweep-interval", "0", "--access-log", "/dev/full" }
      for _ = 1, 3 do assert.equals(200, sp.request(s, "GET", "/healthz").status) end
      local lost = sp.wait_for(function()
        local v = promtext.value(promtext.parse(sp.request(s, "GET", "/metrics").body),
          "eidkit_gateway_log_failures_total")
        return v and v >= 3 and v
      end, 5, "the lost lines counted")
      assert.is_true(lost >= 3)
      local _, err = sp.output(s)
      local _, told = err:gsub("the access log could not be written", "")
      assert.equals(1, told)
      assert.equals(0, (sp.stop(s)))
      cleanup()
    end)
  end)

  describe("--tls-cert and --tls-key", function()
    it("serve HTTPS with the certificate, and refuse files that are not a pair, without their text", function()
      local ca = testca.make { san = "IP:127.0.0.1" }
      local url, cleanup = tmp_db()
      local s = sp.start { "--sim", "--ledger", url, "--sweep-interval", "0", "--tls-cert", ca.cert, "--tls-key", ca.key }
      assert.matches("^https://127%.0%.0%.1:%d+$", s.url)
      assert.equals(200, sp.request(s, "GET", "/healthz", { cacert = ca.ca }).status)
      local tok = sp.request(s, "POST", "/eid/token", { user = "alice", cacert = ca.ca }).json.EidToken
      assert.is_string(tok)
      -- Checked against another CA, the handshake fails (curl's exit 60: not verified).
      local bad = sp.request(s, "GET", "/healthz", { cacert = ca.other })
      assert.same({ 60, 0 }, { bad.code, bad.status })
      assert.equals(0, (sp.stop(s)))

      -- Files that are not a pair: refused as configuration (and by --check), saying
      -- which, the key never echoed.
      for _, c in ipairs {
        { ca.key, ca.key, "the certificate file holds no PEM certificate" },
        { ca.cert, ca.cert, "the key file holds no unencrypted PEM private key" },
        { ca.cert, ca.dir .. "/other.key", "the key is not the certificate's" },
      } do
        for _, check in ipairs { true, false } do
          local r = proc.run { bin, "serve", "--sim", "--listen", "127.0.0.1:0", "--ledger", url,
            "--tls-cert", c[1], "--tls-key", c[2], check and "--check" or nil }
          assert.equals(2, r.code)
          assert.matches("eidkit serve: %-%-tls%-cert/%-%-tls%-key: " .. c[3]:gsub("%p", "%%%0") .. "\n$", r.stderr)
          assert.is_nil(r.stderr:find("PRIVATE KEY", 1, true))
          assert.is_nil(r.stdout:find("listening", 1, true))
        end
      end
      local r = proc.run { bin, "serve", "--sim", "--check", "--tls-cert", ca.cert }
      assert.same({ 2, "eidkit serve: --tls-cert and --tls-key go together\n" }, { r.code, r.stderr })
      r = proc.run { bin, "serve", "--sim", "--check", "--tls-cert", ca.cert, "--tls-key", ca.dir .. "/nope.pem" }
      assert.equals(2, r.code)
      assert.matches("%-%-tls%-key: cannot read .*nope%.pem: No such file", r.stderr)
      ca.remove()
      cleanup()
    end)
  end)

  describe("--tls-cert and --tls-key on SIGHUP", function()
    it("are read again: new connections get the renewed certificate, a broken pair keeps the old", function()
      local a, b = testca.make { san = "IP:127.0.0.1" }, testca.make { san = "IP:127.0.0.1" }
      local cert, key = scratch.file() .. ".pem", scratch.file() .. ".key"
      local function install(c, k)
        write(cert, assert(proc.read(c)))
        write(key, assert(proc.read(k)))
      end
      install(a.cert, a.key)
      local url, cleanup = tmp_db()
      local s = sp.start { "--sim", "--ledger", url, "--sweep-interval", "0", "--tls-cert", cert, "--tls-key", key }
      -- 200, or curl's exit code: 60 when the certificate is not from ca
      local function health(ca)
        local r = sp.request(s, "GET", "/healthz", { cacert = ca.ca })
        return r.code == 0 and r.status or r.code
      end
      local function reloaded(what)
        assert(s.process:kill("HUP"))
        return sp.wait_for(function()
          local err = select(2, sp.output(s))
          local n = select(2, err:gsub(what:gsub("%p", "%%%0"), ""))
          return n > 0 and err
        end, 5, what)
      end
      assert.same({ 200, 60 }, { health(a), health(b) })

      -- A request whose connection was made before the reload, answered after it.
      local tok = sp.request(s, "POST", "/eid/token", { user = "alice", cacert = a.ca }).json.EidToken
      sp.sim_faults(s, { { Action = "GetEidResult", Kind = "latency", Ms = 1500 } })
      local before, polls = sim_requests(s), 0
      local h = sp.spawn(s, "POST", "/eid/result", { user = "alice", body = { EidToken = tok }, cacert = a.ca })
      sp.wait_for(function() -- each look at the count is a request too
        polls = polls + 1
        return sim_requests(s) > before + polls
      end, 10, "the GetEidResult in flight")

      install(b.cert, b.key)
      reloaded("SIGHUP: TLS certificate reloaded from " .. cert)
      assert.same({ 200, 60 }, { health(b), health(a) })
      local r = sp.wait_all({ h })[1]
      assert.same({ 0, 200, "pending" }, { r.code, r.status, r.json and r.json.status })

      -- Not a pair (b's certificate, a's key): the server keeps presenting b's.
      install(b.cert, a.key)
      local err = reloaded("TLS certificate not reloaded")
      assert.matches("SIGHUP: TLS certificate not reloaded, keeping the old one: %-%-tls%-cert/%-%-tls%-key: "
        .. "the key is not the certificate's\n", err)
      assert.equals(200, health(b))
      os.remove(key)
      err = reloaded("cannot read")
      assert.matches("keeping the old one: %-%-tls%-key: cannot read .*No such file", err)
      assert.equals(200, health(b))

      local code, out, err2 = sp.stop(s)
      assert.equals(0, code)
      assert.is_nil((out .. err2):find("PRIVATE KEY", 1, true))
      for _, f in ipairs { cert, key } do os.remove(f) end
      a.remove()
      b.remove()
      cleanup()
    end)
  end)

  describe("--real-ip-from", function()
    local function remote_addrs(path)
      local out = {}
      for line in (proc.read(path) or ""):gmatch("[^\n]+") do out[#out + 1] = cjson.decode(line).remote_addr end
      return out
    end

    it("takes the client from X-Forwarded-For through a trusted proxy only, for the log and the policy", function()
      local url, cleanup = tmp_db()
      local log = scratch.file() .. ".log"
      -- The subject is the client's address: what the policy was given.
      local policy = scratch.file() .. ".lua"
      local f = assert(io.open(policy, "w"))
      f:write("return { authorize = function(req) return req.remote_addr end }\n")
      f:close()
      local function start(...)
        return sp.start { "--sim", "--ledger", url, "--sweep-interval", "0", "--access-log", log,
          "--policy", policy, ... }
      end
      local function post(s, path, xff, body)
        return sp.request(s, "POST", path, { headers = xff and { ["X-Forwarded-For"] = xff } or nil, body = body })
      end
      -- The spec's curl is the proxy: 127.0.0.1.
      local s = start("--real-ip-from", "10.0.0.0/8", "--real-ip-from", "127.0.0.1,::1")
      local tok = post(s, "/eid/token", "198.51.100.66, 203.0.113.7, 10.0.0.9").json.EidToken
      assert.is_string(tok)
      -- The same client through another hop: the same subject.
      local r = post(s, "/eid/result", "203.0.113.7", { EidToken = tok })
      assert.same({ 200, "pending" }, { r.status, r.json and r.json.status })
      -- Another client: another subject.
      r = post(s, "/eid/result", "203.0.113.8", { EidToken = tok })
      assert.same({ 403, "wrong_subject" }, { r.status, r.json and r.json.error.code })
      -- A hop the trusted proxy wrote that is not an address: the proxy's own address.
      assert.equals(200, sp.request(s, "GET", "/healthz", { headers = { ["X-Forwarded-For"] = "203.0.113.7, x" } }).status)
      sp.wait_for(function() return #remote_addrs(log) == 4 end, 5, "four log lines")
      local got = remote_addrs(log)
      assert.same({ "203.0.113.7", "203.0.113.7", "203.0.113.8" }, { got[1], got[2], got[3] })
      assert.matches("^127%.0%.0%.1:%d+$", got[4])
      assert.equals(0, (sp.stop(s)))

      -- Without a trusted proxy the header is the client's own word: never taken.
      os.remove(log)
      s = start("--real-ip-from", "10.0.0.0/8")
      r = post(s, "/eid/token", "203.0.113.7")
      assert.equals(200, r.status)
      sp.wait_for(function() return #remote_addrs(log) == 1 end, 5, "one log line")
      assert.matches("^127%.0%.0%.1:%d+$", remote_addrs(log)[1])
      assert.equals(0, (sp.stop(s)))
      os.remove(log)
      os.remove(policy)
      cleanup()
    end)
  end)

  describe("--check", function()
    local dir
    lazy_setup(function() dir = scratch.file() end)
    lazy_teardown(function() os.execute("rm -f " .. dir .. "*") end)

    local function check(...)
      local argv = { bin, "serve", "--check", ... }
      return proc.run(argv, { env = { TENCENTCLOUD_SECRET_ID = "", TENCENTCLOUD_SECRET_KEY = "" } })
    end

    it("exits 0 for a good configuration, without listening or opening the ledger", function()
      local good = dir .. ".good.lua"
      write(good, [[return { authorize = function() return "x" end }]])
      local conf = dir .. ".conf.lua"
      write(conf, [[return { merchant_id = "0NSJ2023", listen = "127.0.0.1:0", upstream_rate = 50,
        ledger = "sqlite:]] .. dir .. [[.never.db", token_params = { Config = { InputType = "1" } } }]])
      local r = check("--config", conf, "--policy", good)
      assert.same({ 0, "eidkit serve: configuration ok\n", "" }, { r.code, r.stdout, r.stderr })
      assert.is_nil(io.open(dir .. ".never.db"))
      assert.equals(0, check("--sim").code)
    end)

    it("exits 2 naming what is wrong", function()
      local broken = dir .. ".broken.lua"
      write(broken, "return {")
      local bad_conf = dir .. ".bad.lua"
      write(bad_conf, [[return { merchant = "x" }]])
      local cases = {
        -- the script named once, by the parser's own message
        { { "--merchant-id", "M", "--policy", broken }, "%-%-policy: load: [^\n']*%.broken%.lua:1: " },
        { { "--merchant-id", "M", "--policy", dir .. ".nope.lua" },
          "%-%-policy: load: cannot open [^\n']*%.nope%.lua: No such file" },
        { { "--sim", "--listen", "999.1.1.1:80" }, "%-%-listen: expected an IP address, got '999%.1%.1%.1'" },
        { {}, "%-%-merchant%-id is required" },
        { { "--sim", "--listen", "nowhere" }, "%-%-listen: expected HOST:PORT" },
        { { "--sim", "--token-limit", "5" }, "%-%-token%-limit: expected COUNT/SECONDS" },
        { { "--sim", "--upstream-rate", "-1" }, "%-%-upstream%-rate" },
        -- In eidkit.gateway.settings' words, as nginx's configure says them.
        { { "--sim", "--upstream-timeout", "0" }, "%-%-upstream%-timeout: expected seconds > 0, at most 86400; got '0'" },
        { { "--sim", "--sweep-interval", "-1" }, "%-%-sweep%-interval: expected seconds >= 0, at most 86400; got '%-1'" },
        { { "--sim", "--drain-timeout", "x" }, "%-%-drain%-timeout: expected seconds >= 0" },
        { { "--sim", "--max-connections", "0" }, "%-%-max%-connections: expected 1..1000000, got '0'" },
        { { "--sim", "--max-per-address", "x" }, "%-%-max%-per%-address: expected 1..1000000, got 'x'" },
        { { "--sim", "--ledger", "mysql://x" }, "%-%-ledger: expected sqlite:PATH or redis://" },
        { { "--sim", "--real-ip-from", "10.0.0.0/8", "--real-ip-from", "proxy.lan" },
          "%-%-real%-ip%-from: 'proxy%.lan' is not an address or CIDR" },
        { { "--sim", "--endpoint", "http://x" }, "%-%-endpoint and %-%-sim exclude each other" },
        { { "--merchant-id", "M", "--sim-seed", "1" }, "%-%-sim%-seed needs %-%-sim" },
        { { "--sim", "--h5-return-url", "javascript:x" }, "h5_return_url" },
        { { "--config", bad_conf }, "unknown key 'merchant'" },
        { { "--sim", "--nope" }, "unknown option '%-%-nope'" },
      }
      for _, c in ipairs(cases) do
        local r = check(table.unpack(c[1]))
        assert.equals(2, r.code, table.concat(c[1], " ") .. ": " .. r.stderr)
        assert.matches("^eidkit serve: " .. ".*" .. c[2], r.stderr)
        assert.equals("", r.stdout)
      end
    end)
  end)

  describe("runtime failures", function()
    it("exits 1 when the ledger cannot be reached or the port is taken", function()
      local r = proc.run { bin, "serve", "--sim", "--listen", "127.0.0.1:0", "--ledger", "redis://127.0.0.1:1/0" }
      assert.equals(1, r.code)
      assert.matches("cannot open the ledger: .*unavailable", r.stderr)
      -- A URL the ledger cannot read is a usage error before anything opens
      -- (it was a Lua traceback from the ledger pool).
      r = proc.run { bin, "serve", "--sim", "--listen", "127.0.0.1:0", "--ledger", "redis://127.0.0.1:99999/0" }
      assert.equals(2, r.code)
      assert.equals("eidkit serve: --ledger: url: redis port must be 1..65535\n", r.stderr)
      local url, cleanup = tmp_db()
      local s = sp.start { "--sim", "--ledger", url }
      local port = s.url:match(":(%d+)$")
      r = proc.run { bin, "serve", "--sim", "--listen", "127.0.0.1:" .. port, "--ledger", url }
      assert.equals(1, r.code)
      assert.matches("%-%-listen: .*address already in use", r.stderr)
      -- an address this host does not have: said plainly, no Lua position
      r = proc.run { bin, "serve", "--sim", "--listen", "192.0.2.1:0", "--ledger", url }
      assert.equals(1, r.code)
      assert.matches("eidkit serve: %-%-listen: host: address not available\n", r.stderr)
      assert.not_matches("%.lua:%d+:", r.stderr)
      sp.stop(s)
      cleanup()
    end)

    it("exits 1 without credentials, and never prints a secret it has", function()
      local home = scratch.file()
      os.remove(home)
      local url, cleanup = tmp_db()
      local r = proc.run({ bin, "serve", "--merchant-id", "M", "--listen", "127.0.0.1:0", "--ledger", url,
        "--endpoint", "http://127.0.0.1:1" },
        { env = { HOME = home, TENCENTCLOUD_SECRET_ID = "", TENCENTCLOUD_SECRET_KEY = "",
          TENCENTCLOUD_CREDENTIALS_FILE = home .. "/none" } })
      assert.equals(1, r.code)
      assert.matches("cannot sign API calls: no credentials", r.stderr)
      cleanup()
    end)
  end)

  describe("limits", function()
    it("applies --token-limit per subject and --upstream-rate per action", function()
      local url, cleanup = tmp_db()
      local s = sp.start { "--sim", "--ledger", url, "--token-limit", "1/600", "--upstream-rate", "1" }
      assert.equals(200, sp.request(s, "POST", "/eid/token", { user = "a" }).status)
      local r = sp.request(s, "POST", "/eid/token", { user = "a" })
      assert.same({ 429, "rate_limited" }, { r.status, r.json.error.code })
      assert.matches("^%d+$", r.headers["retry-after"])
      -- other users: their subject buckets are full, the upstream one (1/s: 0.8 a second, burst 1)
      -- is shared and was spent by the first call
      local statuses = {}
      for i = 1, 5 do statuses[i] = sp.request(s, "POST", "/eid/token", { user = "b" .. i }).status end
      table.sort(statuses)
      assert.equals(429, statuses[5])
      assert.equals(0, (sp.stop(s)))
      cleanup()
    end)
  end)

  describe("--max-connections", function()
    it("caps the connections held at once: a second client waits for the first", function()
      local url, cleanup = tmp_db()
      local s = sp.start { "--sim", "--ledger", url, "--max-connections", "1" }
      local h = slow_result(s, "carol", 3000) -- holds the one connection for 3 s
      -- the next client stays in the listen queue until that slot frees
      assert.equals(28, sp.request(s, "GET", "/healthz", { max_time = 1 }).code)
      local r = sp.wait_all({ h })[1]
      assert.same({ 200, "passed" }, { r.status, r.json and r.json.status })
      assert.equals(200, sp.request(s, "GET", "/healthz", { max_time = 5 }).status)
      assert.equals(0, (sp.stop(s)))
      cleanup()
    end)
  end)

  describe("help", function()
    it("lists exactly the flags the parser accepts", function()
      local r = proc.run { bin, "help", "serve" }
      assert.equals(0, r.code)
      local listed = {}
      for name, rest in r.stdout:gmatch("\n  %-%-([%w%-]+)([^\n]*)") do listed[name] = rest end
      local accepted = {}
      for _, f in ipairs(serve_cli.spec) do
        accepted[f.name] = true
        assert.is_not_nil(listed[f.name], "--" .. f.name .. " is not in the help")
        local argv = { "--" .. f.name }
        if f.arg then
          assert.matches("^ " .. f.arg:gsub("%p", "%%%0") .. " ", listed[f.name])
          argv[2] = "x"
        end
        assert.is_not_nil(args.parse(serve_cli.spec, argv), "--" .. f.name .. " is refused by the parser")
      end
      for name in pairs(listed) do assert.is_true(accepted[name], "--" .. name .. " is in the help only") end
      assert.equals(r.stdout, proc.run({ bin, "serve", "--help" }).stdout)
      assert.matches("serve +serve the merchant backend routes", proc.run({ bin, "help" }).stdout)
    end)
  end)
end)
