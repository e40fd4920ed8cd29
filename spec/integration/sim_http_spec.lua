-- `eidkit sim` as a real process on loopback, talked to with curl: the
-- startup contract, the signed API over HTTP and HTTPS, transport faults as
-- a client sees them, configuration, and a clean stop on SIGTERM.
local scratch = require "support.scratch"
local core = require "eidkit.core"
local cjson = require "cjson"
local proc = require "support.proc"
local client = require "fixtures.httpd_client"
local sim_mod = require "eidkit.sim"

local bin = proc.bin()
local demo = sim_mod.demo

local simproc = require "support.simproc"
local start, stop, now = simproc.start, simproc.stop, simproc.now
local function sleep(s) os.execute("sleep " .. s) end

-- curl arguments for a signed API call to server s.
local function api_args(s, action, params, opts)
  opts = opts or {}
  local body = cjson.encode(params)
  local h = core.sign { secret_id = opts.secret_id or demo.SecretId,
    secret_key = opts.secret_key or demo.SecretKey, host = "127.0.0.1:" .. s.port,
    service = "faceid", version = "2018-03-01", action = action, body = body }
  local args = { "-X", "POST", "--data-binary", body, "-H", "Expect:" }
  for k, v in pairs(h) do
    args[#args + 1] = "-H"
    args[#args + 1] = k .. ": " .. v
  end
  for _, a in ipairs(opts.curl or {}) do args[#args + 1] = a end
  args[#args + 1] = (opts.scheme or "http") .. "://127.0.0.1:" .. s.port .. "/"
  return args
end

local function api(s, action, params, opts)
  local res = client.run(api_args(s, action, params, opts))
  local ok, decoded = pcall(cjson.decode, res.body)
  return ok and decoded.Response or nil, res
end

local function control(s, method, path, body)
  local args = { "-X", method, s.url .. path }
  if body then
    table.insert(args, 1, cjson.encode(body))
    table.insert(args, 1, "--data-binary")
  end
  local res = client.run(args)
  return res.status, (pcall(cjson.decode, res.body)) and cjson.decode(res.body) or res.body
end

describe("eidkit sim (process)", function()
  local s
  lazy_setup(function() s = start { "--seed", "3" } end)
  lazy_teardown(function() if s then stop(s) end end)

  it("prints 'listening on URL' first, the demo identity, and writes the port file", function()
    assert.equal("http://127.0.0.1:" .. s.port, s.url)
    assert.truthy(s.stdout:find("SecretId=" .. demo.SecretId, 1, true))
    assert.truthy(s.stdout:find("MerchantId=" .. demo.MerchantId, 1, true))
  end)

  it("runs the whole flow over HTTP: token, user, result", function()
    local r = api(s, "GetEidToken", { MerchantId = demo.MerchantId, Extra = "o-9" })
    assert.is_nil(r.Error)
    assert.equal(s.url .. "/sim/h5?token=" .. r.EidToken, r.Url)
    local tok = r.EidToken
    assert.equal("init", api(s, "CheckEidTokenStatus", { EidToken = tok }).Status)
    assert.equal(200, (control(s, "POST", "/sim/tokens/" .. tok .. "/start")))
    assert.equal("doing", api(s, "CheckEidTokenStatus", { EidToken = tok }).Status)
    assert.equal(200, (control(s, "POST", "/sim/tokens/" .. tok .. "/finish", { ErrCode = 0 })))
    local res = api(s, "GetEidResult", { EidToken = tok, InfoType = "1" })
    assert.equal(0, res.Text.ErrCode)
    assert.equal("o-9", res.Text.Extra)
    assert.equal("finished", api(s, "CheckEidTokenStatus", { EidToken = tok }).Status)
  end)

  it("answers errors with HTTP 200 envelopes and a Date header", function()
    local r, res = api(s, "GetEidResult", { EidToken = "x" }, { secret_key = "wrong" })
    assert.equal(200, res.status)
    assert.equal("AuthFailure.SignatureFailure", r.Error.Code)
    assert.matches("^%a%a%a, %d%d %a%a%a %d%d%d%d %d%d:%d%d:%d%d GMT$", res.headers.date)
    assert.equal(404, (control(s, "POST", "/sim/tokens/nope/finish", { ErrCode = 0 })))
  end)

  describe("transport faults", function()
    after_each(function() control(s, "DELETE", "/sim/faults") end)

    local function with(rule)
      assert.equal(200, (control(s, "PUT", "/sim/faults", { rule })))
      return client.run(api_args(s, "CheckEidTokenStatus", { EidToken = "x" }))
    end

    it("resets the connection (curl: 56)", function()
      assert.equal(56, with({ Kind = "reset" }).code)
    end)

    it("truncates the body (curl: 18)", function()
      assert.equal(18, with({ Kind = "truncate" }).code)
    end)

    it("answers a gateway error page with HTTP 502", function()
      local res = with({ Kind = "http", Status = 502 })
      assert.equal(502, res.status)
      assert.matches("Bad Gateway", res.body)
    end)

    it("sends malformed JSON in a well-framed 200", function()
      local res = with({ Kind = "malformed" })
      assert.equal(0, res.code)
      assert.equal(200, res.status)
      assert.is_false((pcall(cjson.decode, res.body)))
    end)

    it("dribbles a slow body", function()
      local res = with({ Kind = "slow", Ms = 600 })
      assert.equal(0, res.code)
      assert.is_true(res.time >= 0.5, "took " .. res.time)
      assert.truthy(cjson.decode(res.body).Response)
    end)

    it("delays answers without holding up other connections", function()
      assert.equal(200, (control(s, "PUT", "/sim/faults", { { Kind = "latency", Ms = 400 } })))
      local t0 = now()
      local handles = {}
      for i = 1, 6 do handles[i] = client.spawn(api_args(s, "CheckEidTokenStatus", { EidToken = "x" })) end
      local started = os.time()
      local done
      repeat
        done = true
        for _, h in ipairs(handles) do done = done and h.done() end
        if not done then sleep(0.02) end
      until done or os.time() - started > 5
      assert.is_true(done)
      for _, h in ipairs(handles) do
        local res = h.result()
        assert.equal(0, res.code)
        assert.is_true(res.time >= 0.38 and res.time < 0.8, "took " .. res.time)
      end
      -- The control API carries no fault and answers at once meanwhile.
      local health = client.run { s.url .. "/sim/health" }
      assert.is_true(health.time < 0.2)
      -- Six 400 ms answers in sequence would take 2.4 s.
      assert.is_true(now() - t0 < 1.5, "took " .. (now() - t0))
    end)
  end)
end)

describe("eidkit sim options", function()
  it("accepts --credential and --merchant, and never prints the key", function()
    local s = start { "--credential", "AKIDmine:my-secret-key-123", "--merchant", "M-1" }
    local r = api(s, "GetEidToken", { MerchantId = "M-1" }, { secret_id = "AKIDmine",
      secret_key = "my-secret-key-123" })
    assert.truthy(r.EidToken)
    local r2 = api(s, "GetEidToken", { MerchantId = "M-1" })
    assert.equal("AuthFailure.SecretIdNotFound", r2.Error.Code)
    local code, out, err = stop(s)
    assert.equal(0, code)
    assert.is_nil(out:find("my-secret-key-123", 1, true))
    assert.is_nil(err:find("my-secret-key-123", 1, true))
    assert.is_nil(out:find("demo credential", 1, true))
  end)

  it("reads a JSON config file", function()
    local path = scratch.file()
    local f = assert(io.open(path, "w"))
    f:write(cjson.encode { credentials = { { SecretId = "AKIDcfg", SecretKey = "cfgkey" } },
      merchants = { "M-cfg" }, token_ttl = 600,
      faults = { { Action = "GetEidToken", Kind = "throttle", First = 1 } } })
    f:close()
    local s = start { "--config", path }
    local opts = { secret_id = "AKIDcfg", secret_key = "cfgkey" }
    assert.equal("RequestLimitExceeded", api(s, "GetEidToken", { MerchantId = "M-cfg" }, opts).Error.Code)
    local tok = api(s, "GetEidToken", { MerchantId = "M-cfg" }, opts).EidToken
    local _, t = control(s, "GET", "/sim/tokens/" .. tok)
    assert.equal(600, t.ExpiresAt - t.CreatedAt)
    stop(s)
    os.remove(path)
  end)

  it("refuses bad flags and config with exit code 2 and the reason", function()
    local cases = {
      { { "--listen", "nope" }, "--listen" },
      { { "--fault", "*:explode" }, "Kind" },
      { { "--credential", "only-id" }, "SECRET_ID:SECRET_KEY" },
      { { "--token-ttl", "0" }, "--token-ttl" },
      { { "--tls-cert", "/nonexistent" }, "go together" },
      { { "--config", "/nonexistent/x.json" }, "--config" },
      { { "--bogus" }, "unknown option" },
    }
    for _, c in ipairs(cases) do
      local res = proc.run { bin, "sim", table.unpack(c[1]) }
      assert.equal(2, res.code, table.concat(c[1], " "))
      assert.truthy(res.stderr:find(c[2], 1, true), res.stderr)
    end
  end)

  it("reports a port in use instead of crashing", function()
    local s = start {}
    local res = proc.run { bin, "sim", "--listen", "127.0.0.1:" .. s.port }
    assert.equal(2, res.code)
    assert.matches("in use", res.stderr)
    stop(s)
  end)

  it("stops on the first SIGTERM, however it lands (regression: a lost-signal race)", function()
    -- run() once unblocked signals before its wait; a SIGTERM arriving in
    -- that window left the wait without a timeout, forever.
    for _ = 1, 15 do
      local s = start {}
      local code = stop(s)
      assert.equal(0, code)
    end
  end)

  it("stops cleanly on SIGINT as on SIGTERM", function()
    local s = start {}
    local code, _, err = stop(s, "INT")
    assert.equal(0, code)
    assert.matches("stopped %(signal%)", err)
  end)
end)

describe("eidkit sim over HTTPS", function()
  local dir = scratch.file() .. ".d"
  local s
  lazy_setup(function()
    assert(os.execute("mkdir " .. dir .. " && openssl req -x509 -newkey ec -pkeyopt "
      .. "ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=127.0.0.1 -addext "
      .. "subjectAltName=IP:127.0.0.1 -keyout " .. dir .. "/key.pem -out " .. dir
      .. "/cert.pem 2>/dev/null"))
    s = start { "--tls-cert", dir .. "/cert.pem", "--tls-key", dir .. "/key.pem" }
  end)
  lazy_teardown(function()
    if s then stop(s) end
    os.execute("rm -rf " .. dir)
  end)

  it("serves the signed API with the given certificate", function()
    assert.equal("https://127.0.0.1:" .. s.port, s.url)
    local r = api(s, "GetEidToken", { MerchantId = demo.MerchantId },
      { scheme = "https", curl = { "--cacert", dir .. "/cert.pem" } })
    assert.truthy(r.EidToken)
    assert.equal(s.url .. "/sim/h5?token=" .. r.EidToken, r.Url)
  end)

  it("fails verification for a client that does not trust it (curl: 60)", function()
    local _, res = api(s, "GetEidToken", { MerchantId = demo.MerchantId }, { scheme = "https" })
    assert.equal(60, res.code)
  end)
end)
