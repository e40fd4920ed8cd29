-- The gateway settings both hosts read (--token-limit, --upstream-rate,
-- --token-fields, --h5-return-url; token_limit, ... in nginx) have one
-- parser, eidkit.gateway.settings: spec/openresty/gateway_settings_check.lua
-- pins its answers value by value, here under LuaJIT (as nginx loads it)
-- and under this interpreter (as `eidkit serve` does). Then, host against
-- host: openresty.gateway.configure and `eidkit serve --sim --check` must
-- accept the same values and refuse the others with the same words (only
-- the prefix naming the setting differs). configure needs no nginx (only
-- checks), so it runs here.
local proc = require "support.proc"
local orgw = require "eidkit.openresty.gateway"

local root = debug.getinfo(1, "S").source:match("^@(.*)/spec/openresty/[^/]*$") or "."
local script = root .. "/spec/openresty/gateway_settings_check.lua"

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

describe("eidkit.gateway.settings", function()
  it("gives the same options and messages under LuaJIT", function()
    local luajit = proc.run({ "sh", "-c", "command -v luajit" }).stdout:gsub("%s+$", "")
    -- A missing luajit fails: a skipped portability check would pass silently.
    assert(luajit ~= "", "luajit is not installed (run scripts/setup-deps)")
    local res = proc.run({ luajit, script }, { env = { LUA_PATH = root .. "/lua/?.lua;;" } })
    assert.equals(0, res.code, res.stderr)
    assert.matches("^ok LuaJIT", res.stdout)
  end)

  it("gives them under this interpreter", function()
    local said
    local env = setmetatable({ print = function(s) said = s end }, { __index = _G })
    assert(loadfile(script, "t", env))()
    assert.matches("^ok ", said)
  end)

  it("is what both hosts use", function()
    local settings = require "eidkit.gateway.settings"
    assert.equals(settings.DEMO_POLICY, orgw.DEMO_POLICY)
  end)
end)

-- What a refusal says past the host's own prefix ("eidkit serve: --token-limit:",
-- "eidkit gateway: token_limit:"; "configuration: " before the gateway's own).
local function words(msg, label)
  msg = tostring(msg):gsub("%s+$", "")
  local tail = msg:match("bad option .*$")
  if tail then return tail end
  local at = msg:find(label .. ": ", 1, true)
  return at and msg:sub(at + #label + 2) or msg
end

describe("eidkit.openresty.gateway.configure", function()
  for _, c in ipairs {
    { "--token-limit", "token_limit", { "5/600", "1/0.5", "off", "10/60", "0/600", "5", "a/b", "5/0", "-1/5", "5/600x" } },
    { "--upstream-rate", "upstream_rate", { "100", "0.5", "off", "0", "-3", "abc", "100001", "1e3" } },
    { "--token-fields", "token_fields", { "Name,IdCard", "Extra", "Config", "Phone", "Name,Phone" } },
    { "--h5-return-url", "h5_return_url", { "https://shop.example/v", "/verified", "ftp://x", "//evil.example", "x" } },
    -- eid_ledger_check_url, reached through eidkit.core and through the FFI
    { "--ledger", "ledger", { "redis://:p%40ss@10.0.0.5:6380/2?prefix=a:", "sqlite:/tmp/x.db", "redis://h:99999/0",
      "redis://hunter2@h:1/0", "redis://:%zz@h:1", "redis://h:1/0?db=2", "sqlite:", "rediss://h:1" } },
  } do
    it("accepts exactly the " .. c[1] .. " values `eidkit serve` accepts, and refuses the rest alike", function()
      for _, v in ipairs(c[3]) do
        local ours, err = configure(c[2], v)
        local theirs, why = serve_accepts(c[1], v)
        assert(ours == theirs, ("%s %s: eidkit serve %s (%s), configure %s (%s)"):format(c[1], v,
          theirs and "accepts" or "refuses", why or "", ours and "accepts" or "refuses", tostring(err)))
        if not ours then
          assert.matches("^eidkit serve: ", why)
          assert.matches("^eidkit gateway: ", err)
          assert.equals(words(why, c[1]), words(err, c[2]))
        end
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
    -- In the words eidkit serve uses (eidkit.gateway.settings), the login hidden.
    ok, err = configure("ledger", "mysql://u:hunter2@x")
    assert.is_false(ok)
    assert.matches("ledger: expected sqlite:PATH or redis://[[USER]:PASSWORD@]HOST:PORT[/DB][?prefix=P], "
      .. "got 'mysql://***@x'", err, 1, true)
    assert.is_nil(err:find("hunter2", 1, true))
    ok, err = configure("limits", "memory")
    assert.is_false(ok)
    assert.matches("limits: expected ledger or shared", err, 1, true)
  end)
end)
