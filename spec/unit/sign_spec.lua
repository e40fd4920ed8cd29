local eidkit = require "eidkit"
local vectors = require "support.vectors"

local SECRET = "FakeSecretKeyForTestVectors000000"

local function base()
  return {
    secret_id = "AKIDEXAMPLEFAKEFAKEFAKEFAKEFAKE00000", secret_key = SECRET,
    action = "GetEidResult", timestamp = 1735660800,
    body = '{"EidToken":"CE661F1A-0F1E-45BD-BE13-34C05CEA7681","InfoType":"0","BestFramesCount":1}',
  }
end

local function with(changes)
  local r = base()
  for k, v in pairs(changes) do r[k] = v end
  return r
end

local function without(field)
  local r = base()
  r[field] = nil
  return r
end

local function raises(req)
  local ok, err = pcall(eidkit.sign, req)
  assert.is_false(ok)
  assert.is_nil(tostring(err):find(SECRET, 1, true), "error message leaks the secret")
  return tostring(err)
end

describe("eidkit.sign", function()
  for _, v in ipairs(vectors.vectors) do
    it("matches vector " .. v.name, function()
      local headers = eidkit.sign(vectors.request(v))
      local want = v.authorization or
        ("TC3-HMAC-SHA256 Credential=%s/%s/%s/tc3_request, SignedHeaders=%s, Signature=%s"):format(
          v.secret_id, eidkit.utc_date(v.timestamp), v.service,
          table.concat(v.signed_headers, ";"), v.signature)
      assert.equals(want, headers.Authorization)
    end)
  end

  it("returns exactly the headers to send", function()
    assert.same({
      Authorization = "TC3-HMAC-SHA256 Credential=AKIDEXAMPLEFAKEFAKEFAKEFAKEFAKE00000/2024-12-31/faceid/tc3_request, SignedHeaders=content-type;host, Signature=9d0bc3c64ade52127bed12c509c1285cbe63f648e9a6fec46d1adf5836364b78",
      ["Content-Type"] = "application/json",
      Host = "faceid.tencentcloudapi.com",
      ["X-TC-Action"] = "GetEidResult",
      ["X-TC-Version"] = "2018-03-01",
      ["X-TC-Timestamp"] = "1735660800",
    }, eidkit.sign(base()))
  end)

  it("adds X-TC-Region, X-TC-Token and X-TC-Language when given", function()
    local h = eidkit.sign(with { region = "ap-guangzhou", token = "sts-token", language = "en-US" })
    assert.equals("ap-guangzhou", h["X-TC-Region"])
    assert.equals("sts-token", h["X-TC-Token"])
    assert.equals("en-US", h["X-TC-Language"])
    -- Unsigned extras do not change the signature.
    assert.equals(eidkit.sign(base()).Authorization, h.Authorization)
  end)

  it("signs extra headers in sorted order whatever order they are given in", function()
    local a = eidkit.sign(with { token = "t", signed_headers = { "X-TC-Token", "host", "content-type", "x-tc-action" } })
    local b = eidkit.sign(with { token = "t", signed_headers = { "content-type", "x-tc-action", "host", "x-tc-token" } })
    assert.equals(a.Authorization, b.Authorization)
    assert.truthy(a.Authorization:find("SignedHeaders=content-type;host;x-tc-action;x-tc-token,", 1, true))
  end)

  it("signs at the current time by default", function()
    local before = os.time()
    local h = eidkit.sign(without "timestamp")
    local ts = tonumber(h["X-TC-Timestamp"])
    assert.is_true(ts >= before and ts <= os.time())
  end)

  it("accepts an integral float timestamp", function()
    assert.equals(eidkit.sign(base()).Authorization, eidkit.sign(with { timestamp = 1735660800.0 }).Authorization)
  end)

  it("reuses the derived key for the same secret, date and service", function()
    local signer = eidkit.signer()
    signer:sign(base())
    signer:sign(with { timestamp = 1735660800 + 3600 })
    assert.same({ hits = 1, misses = 1 }, signer:cache_stats())
    signer:sign(with { timestamp = 1735660800 + 86400 })
    assert.same({ hits = 1, misses = 2 }, signer:cache_stats())
    signer:close()
  end)

  describe("rejects bad input naming the field", function()
    local cases = {
      { "missing secret", without "secret_key", "secret_key: required" },
      { "empty secret", with { secret_key = "" }, "secret_key: required" },
      { "missing secret_id", without "secret_id", "secret_id: required" },
      { "missing action", without "action", "action: required" },
      { "missing body", without "body", "body: required" },
      { "non-string body", with { body = { a = 1 } }, "body: expected string, got table" },
      { "numeric body", with { body = 42 }, "body: expected string, got number" },
      { "fractional timestamp", with { timestamp = 1.5 }, "timestamp: expected integer Unix seconds" },
      { "string timestamp", with { timestamp = "1735660800" }, "timestamp: expected integer Unix seconds" },
      { "negative timestamp", with { timestamp = -1 }, "timestamp: must be Unix seconds between 0 and 253402300799 (got -1)" },
      { "timestamp past 9999", with { timestamp = 253402300800 }, "timestamp: must be Unix seconds" },
      { "unknown signed header", with { signed_headers = { "content-type", "host", "x-foo" } }, "signed_headers: unknown header 'x-foo'" },
      { "signed token without token", with { signed_headers = { "content-type", "host", "x-tc-token" } }, "signed_headers: 'x-tc-token' is signed but not sent (set token)" },
      { "signed headers without host", with { signed_headers = { "content-type" } }, "signed_headers: must include content-type and host" },
      { "signed headers not a table", with { signed_headers = "content-type;host" }, "signed_headers: expected table of header names, got string" },
      { "misspelt field", with { secretKey = "x" }, "unknown field 'secretKey'" },
      { "NUL in host", with { host = "faceid\0.evil" }, "host: contains a NUL byte" },
      { "CRLF in host", with { host = "faceid.tencentcloudapi.com\r\nX: y" }, "host: byte 27 is not allowed" },
      { "upper-case service", with { service = "FaceID" }, "service: byte 1 is not allowed" },
      { "other service without version", with { host = "cvm.tencentcloudapi.com" }, "version: required for service 'cvm'" },
    }
    for _, c in ipairs(cases) do
      it(c[1], function()
        local msg = raises(c[2])
        assert.truthy(msg:find(c[3], 1, true), ("expected %q in %q"):format(c[3], msg))
        assert.truthy(msg:find("bad argument #1", 1, true), msg)
      end)
    end

    it("a non-table argument", function()
      assert.truthy(raises("secret"):find("table expected", 1, true))
    end)
  end)
end)

describe("eidkit.sign_explain", function()
  for _, v in ipairs(vectors.vectors) do
    it("shows the intermediates of vector " .. v.name, function()
      local info = eidkit.sign_explain(vectors.request(v))
      assert.equals(v.signature, info.signature)
      if v.hashed_payload then assert.equals(v.hashed_payload, info.hashed_payload) end
      if v.hashed_canonical_request then
        assert.equals(v.hashed_canonical_request, info.hashed_canonical_request)
      end
      assert.equals(table.concat(v.signed_headers, ";"), info.signed_headers)
      assert.equals(v.timestamp, info.timestamp)
      assert.equals(("TC3-HMAC-SHA256\n%d\n%s/%s/tc3_request\n%s"):format(v.timestamp,
        info.date, v.service, info.hashed_canonical_request), info.string_to_sign)
      assert.equals(info.authorization, info.headers.Authorization)
    end)
  end

  it("gives the canonical request byte for byte", function()
    local info = eidkit.sign_explain(with { signed_headers = { "content-type", "host", "x-tc-action" } })
    assert.equals("POST\n/\n\ncontent-type:application/json\nhost:faceid.tencentcloudapi.com\n" ..
      "x-tc-action:geteidresult\n\ncontent-type;host;x-tc-action\n" ..
      "02ebc76fac574e3b5f107957738ac30d18c4562fe30fb799407a3a47c15e8992", info.canonical_request)
  end)
end)

describe("eidkit.signer", function()
  it("can be closed more than once, and refuses use after close", function()
    local s = eidkit.signer { cache_slots = 2 }
    assert.matches("^eidkit.Signer %(", tostring(s))
    s:close()
    s:close()
    assert.equals("eidkit.Signer (closed)", tostring(s))
    assert.has_error(function() s:sign(base()) end, "attempt to use a closed eidkit.Signer")
  end)

  it("closes with a to-be-closed variable", function()
    local outer
    do
      local s <close> = eidkit.signer()
      outer = s
      assert.is_table(s:sign(base()))
    end
    assert.equals("eidkit.Signer (closed)", tostring(outer))
  end)

  it("signs at its clock's time, so tests can freeze time", function()
    local now = 1735660800
    local s = eidkit.signer { clock = function() return now end }
    assert.equals(eidkit.sign(base()).Authorization, s:sign(without "timestamp").Authorization)
    now = now + 86400
    assert.equals("1735747200", s:sign(without "timestamp")["X-TC-Timestamp"])
    assert.equals("2025-01-01", s:explain(without "timestamp").date)
  end)

  it("does not consult the clock when the request has a timestamp", function()
    local s = eidkit.signer { clock = function() error("clock called") end }
    assert.equals("1735660800", s:sign(base())["X-TC-Timestamp"])
  end)

  it("raises on a broken clock and keeps working afterwards", function()
    local broken = true
    local s = eidkit.signer { clock = function()
      if broken then error("clock exploded") end
      return 1735660800
    end }
    assert.has_error(function() s:sign(without "timestamp") end)
    local bad = eidkit.signer { clock = function() return "soon" end }
    assert.has_error(function() bad:sign(without "timestamp") end,
      "eidkit.Signer clock must return integer Unix seconds, got string")
    local neg = eidkit.signer { clock = function() return -5 end }
    assert.has_error(function() neg:sign(without "timestamp") end)
    broken = false
    assert.equals("1735660800", s:sign(without "timestamp")["X-TC-Timestamp"])
  end)

  it("rejects a clock that is not a function", function()
    assert.has_error(function() eidkit.signer { clock = 1700000000 } end)
  end)

  it("rejects a bad cache size", function()
    assert.has_error(function() eidkit.signer { cache_slots = 0 } end)
    assert.has_error(function() eidkit.signer { cache_slots = "8" } end)
  end)
end)

describe("eidkit.utc_date", function()
  it("uses the UTC date, not local time", function()
    assert.equals("2024-12-31", eidkit.utc_date(1735660800))
    assert.equals("2025-01-01", eidkit.utc_date(1735689600))
    assert.equals("1970-01-01", eidkit.utc_date(0))
    assert.equals("9999-12-31", eidkit.utc_date(253402300799))
  end)

  it("raises outside the supported range", function()
    assert.has_error(function() eidkit.utc_date(-1) end)
  end)
end)
