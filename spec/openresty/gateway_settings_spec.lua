-- eidkit.openresty.gateway.configure reads `eidkit serve`'s flag values
-- (--token-limit, --upstream-rate, --token-fields, --h5-return-url,
-- --limits) with a parser of its own (lua/eidkit/cli/serve.lua keeps its
-- parser local): this spec fails when the two disagree on what is valid,
-- value by value, against `eidkit serve --sim --check`. configure itself
-- needs no nginx (only checks), so it runs here on Lua 5.4.
local proc = require "support.proc"
local orgw = require "eidkit.openresty.gateway"

local BASE = { endpoint = "http://127.0.0.1:1", secret_id = "AKIDx", secret_key = "k", merchant_id = "0NSJ",
  ledger = "redis://127.0.0.1:6379/0", demo_authorize = true, sweep_interval = 0 }

local function configure(k, v)
  local o = {}
  for a, b in pairs(BASE) do o[a] = b end
  o[k] = v
  return pcall(orgw.configure, o)
end

local function serve_accepts(flag, v)
  local r = proc.run { proc.bin(), "serve", "--sim", "--check", flag, v }
  assert(r.code == 0 or r.code == 2, "eidkit serve --check: " .. tostring(r.code) .. " " .. tostring(r.stderr))
  return r.code == 0, r.stderr
end

describe("eidkit.openresty.gateway.configure", function()
  for _, c in ipairs {
    { "--token-limit", "token_limit", { "5/600", "1/0.5", "off", "10/60", "0/600", "5", "a/b", "5/0", "-1/5", "5/600x" } },
    { "--upstream-rate", "upstream_rate", { "100", "0.5", "off", "0", "-3", "abc", "100001", "1e3" } },
    { "--token-fields", "token_fields", { "Name,IdCard", "Extra", "Config", "Phone", "Name,Phone" } },
    { "--h5-return-url", "h5_return_url", { "https://shop.example/v", "/verified", "ftp://x", "//evil.example", "x" } },
  } do
    it("accepts exactly the " .. c[1] .. " values `eidkit serve` accepts", function()
      for _, v in ipairs(c[3]) do
        local ours, err = configure(c[2], v)
        local theirs, why = serve_accepts(c[1], v)
        assert(ours == theirs, ("%s %s: eidkit serve %s (%s), configure %s (%s)"):format(c[1], v,
          theirs and "accepts" or "refuses", why or "", ours and "accepts" or "refuses", tostring(err)))
      end
    end)
  end

  it("refuses an unknown setting and a missing one, naming it", function()
    local ok, err = configure("listen", "x")
    assert.is_false(ok)
    assert.matches("eidkit gateway: listen: unknown setting", err, 1, true)
    ok, err = configure("merchant_id", nil)
    assert.is_false(ok)
    assert.matches("merchant_id: expected your MerchantId", err, 1, true)
    ok, err = configure("ledger", "mysql://x")
    assert.is_false(ok)
    assert.matches("ledger: expected redis://", err, 1, true)
    ok, err = configure("limits", "memory")
    assert.is_false(ok)
    assert.matches("limits: expected ledger or shared", err, 1, true)
  end)
end)
