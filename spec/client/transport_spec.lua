-- eidkit.client's transport against real servers on loopback: a TLS-enabled
-- `eidkit sim` with a certificate from a test CA (trusted, wrong CA, the
-- system store, verification off), and a local tinyproxy (explicit proxy,
-- the http_proxy variable, and proxy = "" to bypass it).
local scratch = require "support.scratch"
local client_mod = require "eidkit.client"
local simproc = require "support.simproc"
local child = require "support.child"
local testca = require "support.testca"
local tinyproxy = require "support.tinyproxy"
local proc = require "support.proc"
local sim_mod = require "eidkit.sim"

local demo = sim_mod.demo

local free_port = child.free_port

local function new(url, opts)
  opts = opts or {}
  opts.endpoint, opts.secret_id, opts.secret_key = url, demo.SecretId, demo.SecretKey
  opts.retry = opts.retry or { base = 0.005 }
  return client_mod.new(opts)
end

describe("eidkit.client over TLS", function()
  local ca, s
  lazy_setup(function()
    ca = testca.make { san = "IP:127.0.0.1" }
    s = simproc.start { "--tls-cert", ca.cert, "--tls-key", ca.key }
  end)
  lazy_teardown(function()
    if s then simproc.stop(s) end
    if ca then ca.remove() end
  end)

  it("calls the API with the test CA, on one connection", function()
    assert.equal("https://127.0.0.1:" .. s.port, s.url)
    local c = new(s.url, { ca_file = ca.ca })
    local res, err = c:get_eid_token { MerchantId = demo.MerchantId }
    assert.is_nil(err)
    assert.truthy(res.EidToken)
    for _ = 1, 3 do c:check_eid_token_status { EidToken = res.EidToken } end
    assert.same({ requests = 4, connects = 1 }, c:stats())
  end)

  it("fails with code 'tls', once, under the wrong CA or the system store", function()
    for _, file in ipairs { ca.other, false } do
      local c = new(s.url, { ca_file = file or nil })
      local res, err = c:check_eid_token_status { EidToken = "x" }
      assert.is_nil(res)
      assert.same({ "tls", 1, false }, { err.code, err.attempts, err.retryable })
      assert.is_nil(err.http_status)
    end
  end)

  it("fails with code 'tls' for a CA file that does not exist", function()
    local c = new(s.url, { ca_file = ca.dir .. "/missing.pem" })
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
  lazy_setup(function()
    s = simproc.start {}
    tp = tinyproxy.start()
    port = tp.port
  end)
  lazy_teardown(function()
    if tp then tp:stop() end
    if s then simproc.stop(s) end
  end)

  local function proxied() return tp:forwarded("POST", s.url) end

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
