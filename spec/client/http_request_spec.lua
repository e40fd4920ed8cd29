-- core.http_request / core.http_get (plain unsigned requests for local
-- services) and client:set_skew, against a real `eidkit sim`.
local core = require "eidkit.core"
local cjson = require "cjson"
local simproc = require "support.simproc"
local child = require "support.child"

describe("core.http_request", function()
  local s
  setup(function() s = simproc.start { "--seed", "5" } end)
  teardown(function() simproc.stop(s) end)

  it("sends each method with a JSON body and returns status and body", function()
    local status, body = core.http_request("POST", s.url .. "/sim/clock", '{"Advance": 0}', 2)
    assert.equal(200, status)
    assert.equal(0, math.tointeger(cjson.decode(body).Offset))
    status, body = core.http_request("PUT", s.url .. "/sim/faults",
      '[{"Action": "GetEidResult", "Kind": "throttle", "First": 1}]', 2)
    assert.equal(200, status)
    assert.equal(1, #cjson.decode(body).Faults)
    status, body = core.http_request("DELETE", s.url .. "/sim/faults", nil, 2)
    assert.equal(200, status)
    assert.equal("table", type(cjson.decode(body).Faults))
    status, body = core.http_request("GET", s.url .. "/sim/health", nil, 2)
    assert.equal(200, status)
    assert.equal("ok", cjson.decode(body).Status)
    assert.equal(200, (core.http_get(s.url .. "/sim/health", 2)))
  end)

  it("returns non-2xx answers as they are, and caps the body", function()
    local status, body = core.http_request("GET", s.url .. "/sim/tokens/nope", nil, 2)
    assert.equal(404, status)
    assert.equal("NotFound", cjson.decode(body).Error.Code)
    local _, err = core.http_request("GET", s.url .. "/sim/health", nil, 2, 8)
    assert.equal("bad_response", err.code)
  end)

  it("fails with nil, err on transport errors and raises on misuse", function()
    local ok, err = core.http_request("GET", "http://127.0.0.1:" .. child.free_port() .. "/", nil, 2)
    assert.is_nil(ok)
    assert.equal("connect", err.code)
    assert.has_error(function() core.http_request("get", s.url, nil, 2) end)
    assert.has_error(function() core.http_request("GET", "ftp://x/", nil, 2) end)
    assert.has_error(function() core.http_request("GET", s.url, nil, 0) end)
  end)
end)

describe("client:set_skew", function()
  local s
  setup(function() s = simproc.start { "--seed", "6" } end)
  teardown(function() simproc.stop(s) end)

  it("signs on the given offset from the next call, with no SignatureExpire round trip", function()
    local status = core.http_request("POST", s.url .. "/sim/clock", '{"Advance": 7200}', 2)
    assert.equal(200, status)
    local c <close> = require("eidkit.client").new { endpoint = s.url,
      secret_id = "AKIDeidkitSimDemo00000000000000000000", secret_key = "eidkitSimDemoSecretKey000000000" }
    c:set_skew(7200)
    assert.equal(7200, c:skew())
    local _, err = c:check_eid_token_status { EidToken = "00000000-0000-4000-8000-000000000000" }
    assert.equal("InvalidParameterValue.BizTokenIllegal", err and err.code)
    assert.equal(1, c:stats().requests)
    assert.has_error(function() c:set_skew(1.5) end)
  end)
end)
