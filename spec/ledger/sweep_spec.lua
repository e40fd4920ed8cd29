-- `eidkit ledger sweep` end to end: tokens issued through eidkit.client
-- against a real `eidkit sim`, stored in a SQLite ledger, some finished by
-- the simulated user; the sweep pulls every due token with the default
-- credential chain (environment) and records the verdicts.
local scratch = require "support.scratch"
local proc = require "support.proc"
local simproc = require "support.simproc"
local ledger_mod = require "eidkit.ledger"
local client_mod = require "eidkit.client"
local sim_mod = require "eidkit.sim"

local demo = sim_mod.demo

describe("eidkit ledger sweep", function()
  local s, dir, url, client

  setup(function()
    s = simproc.start { "--seed", "11" }
    dir = scratch.file()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir))
    url = "sqlite:" .. dir .. "/sweep.db"
    client = client_mod.new { endpoint = s.url, secret_id = demo.SecretId, secret_key = demo.SecretKey }
  end)
  teardown(function()
    if client then client:close() end
    if s then simproc.stop(s) end
    os.execute("rm -rf " .. dir)
  end)

  local function finish(tok, code)
    local r = proc.run { "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
      "--data-binary", '{"ErrCode":' .. code .. "}", s.url .. "/sim/tokens/" .. tok .. "/finish" }
    assert.equals("200", r.stdout)
  end

  local function sweep(...)
    return proc.run({ proc.bin(), "ledger", "sweep", "--ledger", url, "--endpoint", s.url, ... },
      { env = { EIDKIT_LEDGER = "", TENCENTCLOUD_SECRET_ID = demo.SecretId,
        TENCENTCLOUD_SECRET_KEY = demo.SecretKey } })
  end

  it("pulls due tokens, records verdicts, and leaves final ones alone", function()
    local ledger = assert(ledger_mod.open(url))
    local toks = {}
    for i = 1, 3 do
      local r = assert(client:get_eid_token { MerchantId = demo.MerchantId, Extra = "o-" .. i })
      toks[i] = r.EidToken
      assert(ledger:issue { EidToken = r.EidToken, MerchantId = demo.MerchantId, subject = "u-" .. i })
    end
    finish(toks[1], 0)
    finish(toks[2], 2016)
    ledger:close()

    local r = sweep()
    assert.equals("", r.stderr)
    assert.equals(0, r.code)
    assert.matches("due 3, recorded 3, failed 0", r.stdout, 1, true)

    ledger = assert(ledger_mod.open(url))
    assert.equals("passed", ledger:get(toks[1]).state)
    local failed = ledger:get(toks[2])
    assert.equals("failed", failed.state)
    assert.equals(2016, failed.ErrCode)
    assert.equals(1, failed.billable)
    assert.equals("issued", ledger:get(toks[3]).state) -- the user never finished: still due
    ledger:close()

    -- A pass is final; a failure is not while the token lives (the user may
    -- retry on it, eid-api.md §7), so the second sweep pulls 2 and 3 only.
    finish(toks[3], 0)
    r = sweep("--limit", "10")
    assert.equals(0, r.code)
    assert.matches("due 2, recorded 2", r.stdout, 1, true)
    ledger = assert(ledger_mod.open(url))
    assert.equals("passed", ledger:get(toks[3]).state)
    assert.equals(1, ledger:get(toks[1]).pulls)
    assert.equals(2, ledger:get(toks[2]).pulls)
    ledger:close()
  end)

  it("reports each token it could not pull and exits 1", function()
    local ledger = assert(ledger_mod.open(url))
    assert(ledger:issue { EidToken = "NOT-A-SIM-TOKEN-000000000000000000000", MerchantId = demo.MerchantId,
      subject = "u-x" })
    ledger:close()
    local r = sweep()
    assert.equals(1, r.code)
    assert.matches("failed 1", r.stdout, 1, true)
    assert.matches("NOT%-A%-SIM%-TOKEN.*BizTokenIllegal", r.stderr)
    assert.is_nil(r.stderr:find(demo.SecretKey, 1, true))
  end)

  it("refuses a bad --info-type", function()
    local r = sweep("--info-type", "9")
    assert.equals(2, r.code)
    assert.matches("--info-type", r.stderr, 1, true)
  end)
end)
