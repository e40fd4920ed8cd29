-- eidkit.client's transport against real servers on loopback: a TLS-enabled
-- `eidkit sim` with a certificate from a test CA (trusted, wrong CA, the
-- system store, verification off), and a local tinyproxy (explicit proxy,
-- the http_proxy variable, and proxy = "" to bypass it).
local scratch = require "support.scratch"
local client_mod = require "eidkit.client"
local simproc = require "support.simproc"
local child = require "support.child"
local proc = require "support.proc"
local sim_mod = require "eidkit.sim"

local demo = sim_mod.demo

local function sh(cmd) assert(os.execute(cmd .. " >/dev/null 2>&1"), cmd) end

local free_port = child.free_port

local function new(url, opts)
  opts = opts or {}
  opts.endpoint, opts.secret_id, opts.secret_key = url, demo.SecretId, demo.SecretKey
  opts.retry = opts.retry or { base = 0.005 }
  return client_mod.new(opts)
end

describe("eidkit.client over TLS", function()
  local dir = scratch.file() .. ".d"
  local s
  lazy_setup(function()
    local ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
    sh("mkdir " .. dir)
    -- a test CA, a server certificate it signs for 127.0.0.1, and an unrelated CA
    sh(("openssl req -x509 %s -days 1 -subj /CN=eidkit-test-ca -keyout %s/ca.key -out %s/ca.pem")
      :format(ec, dir, dir))
    sh(("openssl req %s -subj /CN=127.0.0.1 -keyout %s/key.pem -out %s/csr.pem"):format(ec, dir, dir))
    sh(("printf 'subjectAltName=IP:127.0.0.1\\n' >%s/ext && openssl x509 -req -in %s/csr.pem "
      .. "-CA %s/ca.pem -CAkey %s/ca.key -CAcreateserial -days 1 -extfile %s/ext -out %s/cert.pem")
      :format(dir, dir, dir, dir, dir, dir))
    sh(("openssl req -x509 %s -days 1 -subj /CN=other-ca -keyout %s/other.key -out %s/other.pem")
      :format(ec, dir, dir))
    s = simproc.start { "--tls-cert", dir .. "/cert.pem", "--tls-key", dir .. "/key.pem" }
  end)
  lazy_teardown(function()
    if s then simproc.stop(s) end
    os.execute("rm -rf " .. dir)
  end)

  it("calls the API with the test CA, on one connection", function()
    assert.equal("https://127.0.0.1:" .. s.port, s.url)
    local c = new(s.url, { ca_file = dir .. "/ca.pem" })
    local res, err = c:get_eid_token { MerchantId = demo.MerchantId }
    assert.is_nil(err)
    assert.truthy(res.EidToken)
    for _ = 1, 3 do c:check_eid_token_status { EidToken = res.EidToken } end
    assert.same({ requests = 4, connects = 1 }, c:stats())
  end)

  it("fails with code 'tls', once, under the wrong CA or the system store", function()
    for _, ca in ipairs { dir .. "/other.pem", false } do
      local c = new(s.url, { ca_file = ca or nil })
      local res, err = c:check_eid_token_status { EidToken = "x" }
      assert.is_nil(res)
      assert.same({ "tls", 1, false }, { err.code, err.attempts, err.retryable })
      assert.is_nil(err.http_status)
    end
  end)

  it("fails with code 'tls' for a CA file that does not exist", function()
    local c = new(s.url, { ca_file = dir .. "/missing.pem" })
    local _, err = c:check_eid_token_status { EidToken = "x" }
    assert.equal("tls", err.code)
  end)

  it("connects without verification only when verify_tls = false", function()
    local c = new(s.url, { verify_tls = false })
    local _, err = c:check_eid_token_status { EidToken = "x" }
    assert.equal("InvalidParameterValue.BizTokenIllegal", err.code)
  end)
end)

describe("eidkit.client through a proxy", function()
  local s, tp, port
  local conf = scratch.file()
  lazy_setup(function()
    s = simproc.start {}
    port = free_port()
    local f = assert(io.open(conf, "wb"))
    f:write(("Port %d\nListen 127.0.0.1\nTimeout 30\nMaxClients 200\nAllow 127.0.0.1\n"
      .. "LogLevel Info\n"):format(port))
    f:close()
    tp = child.start({ "tinyproxy", "-d", "-c", conf }, { ready = "Accepting connections" })
  end)
  lazy_teardown(function()
    if tp then child.stop(tp) end
    if s then simproc.stop(s) end
    os.remove(conf)
  end)

  local function proxied()
    local n = 0
    for _ in (child.slurp(tp.base .. ".out") or ""):gmatch("Request %(file descriptor %d+%): POST "
      .. s.url:gsub("%p", "%%%0") .. "/ HTTP/1.1") do n = n + 1 end
    return n
  end

  it("goes through an explicit proxy", function()
    local before = proxied()
    local c = new(s.url, { proxy = "http://127.0.0.1:" .. port })
    local res, err = c:get_eid_token { MerchantId = demo.MerchantId }
    assert.is_nil(err)
    assert.truthy(res.EidToken)
    assert.equal(before + 1, proxied())
  end)

  it("honours http_proxy from the environment, and proxy = '' bypasses it", function()
    local script = scratch.file() .. ".lua"
    local f = assert(io.open(script, "wb"))
    f:write(([[
      local proxy = ...
      local c = require("eidkit.client").new { endpoint = %q, secret_id = %q, secret_key = %q,
        proxy = proxy ~= "env" and proxy or nil }
      local _, err = c:check_eid_token_status { EidToken = "x" }
      io.write(err.code)
    ]]):format(s.url, demo.SecretId, demo.SecretKey))
    f:close()
    local env = { http_proxy = "http://127.0.0.1:" .. port, LUA_PATH = os.getenv("LUA_PATH"),
      LUA_CPATH = os.getenv("LUA_CPATH") }
    local before = proxied()
    local r = proc.run({ proc.bin(), script, "env" }, { env = env })
    assert.equal("InvalidParameterValue.BizTokenIllegal", r.stdout, r.stderr)
    assert.equal(before + 1, proxied())
    r = proc.run({ proc.bin(), script, "" }, { env = env })
    assert.equal("InvalidParameterValue.BizTokenIllegal", r.stdout, r.stderr)
    assert.equal(before + 1, proxied())
    os.remove(script)
  end)

  it("reports a dead proxy as connect, retried", function()
    local c = new(s.url, { proxy = "http://127.0.0.1:" .. free_port(), retry = { base = 0.001,
      max_attempts = 2 } })
    local _, err = c:check_eid_token_status { EidToken = "x" }
    assert.same({ "connect", 2 }, { err.code, err.attempts })
  end)
end)
