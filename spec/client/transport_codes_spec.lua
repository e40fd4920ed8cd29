-- core.transport_codes, core.transport_code_prefix and core.is_transport_code
-- (eid_client_transport_code in C) against the codes eidkit.client gives for
-- each kind of failure on loopback: every code produced is a transport code,
-- and every listed code is produced, so a code added on one side only fails
-- here (the list was once retyped in lua/eidkit/flow.lua).
local core = require "eidkit.core"
local client_mod = require "eidkit.client"
local simproc = require "support.simproc"
local simctl = require "support.simctl"
local child = require "support.child"
local demo = require("eidkit.sim").demo

describe("core.transport_codes", function()
  it("maps each code name to true, with the http_ prefix beside it", function()
    local n = 0
    for k, v in pairs(core.transport_codes) do
      n = n + 1
      assert.is_string(k)
      assert.is_true(v)
      assert.is_true(core.is_transport_code(k))
    end
    assert.is_true(n > 0)
    assert.equal("http_", core.transport_code_prefix)
  end)
end)

describe("core.is_transport_code", function()
  it("takes the listed names and http_ with digits, nothing else", function()
    local cases = {
      { "http_503", true }, { "http_429", true }, { "http_", false }, { "http_5x3", false },
      { "transport", false }, { "nomem", false }, { "credentials", false }, { "", false },
      { "InternalError", false }, { "timeout\0", false }, { 503, false }, { nil, false },
    }
    for _, c in ipairs(cases) do
      assert.equal(c[2], core.is_transport_code(c[1]), tostring(c[1]))
    end
  end)
end)

describe("the codes eidkit.client gives", function()
  local s
  lazy_setup(function() s = simproc.start { "--seed", "9" } end)
  lazy_teardown(function() if s then simproc.stop(s) end end)
  after_each(function() if s then simctl.clear(s) end end)

  it("are the transport codes, every one of them", function()
    local closed = "http://127.0.0.1:" .. child.free_port()
    -- https:// to the plain-HTTP simulator: the TLS handshake fails
    local tls = s.url:gsub("^http:", "https:")
    local cases = {
      { nil, { { Action = "*", Kind = "latency", Ms = 400 } }, "timeout" },
      { closed, nil, "connect" },
      { nil, { { Action = "*", Kind = "reset" } }, "reset" },
      { tls, nil, "tls" },
      { nil, { { Action = "*", Kind = "malformed" } }, "bad_response" },
      { nil, { { Action = "*", Kind = "truncate" } }, "bad_response" },
      { nil, { { Action = "*", Kind = "http", Status = 503 } }, "http_503" },
    }
    local produced = {}
    for _, c in ipairs(cases) do
      -- a fresh client each time: libcurl resends on a reused connection
      local cl <close> = client_mod.new { endpoint = c[1] or s.url, secret_id = demo.SecretId,
        secret_key = demo.SecretKey, timeout = c[3] == "timeout" and 0.15 or 5,
        retry = { max_attempts = 1 } }
      if c[2] then simctl.faults(s, c[2]) else simctl.clear(s) end
      local res, err = cl:get_eid_token { MerchantId = demo.MerchantId }
      assert.is_nil(res)
      assert.equal(c[3], err.code)
      assert.is_true(core.is_transport_code(err.code), err.code)
      assert.is_true(core.transport_codes[err.code]
        or err.code:sub(1, #core.transport_code_prefix) == core.transport_code_prefix)
      produced[err.code] = true
    end
    for code in pairs(core.transport_codes) do
      assert.is_true(produced[code] == true, code .. " is listed but was not produced")
    end
  end)
end)
