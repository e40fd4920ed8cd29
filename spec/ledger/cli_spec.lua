-- `eidkit ledger stats|export|sweep|expire`, run as a subprocess of the
-- eidkit program on a real SQLite file.
local scratch = require "support.scratch"
local ledger_mod = require "eidkit.ledger"
local proc = require "support.proc"

local DAY = 1735603200 -- 2024-12-31T00:00:00Z

local function ledger_cli(...)
  return proc.run({ proc.bin(), "ledger", ... }, { env = { EIDKIT_LEDGER = "" } })
end

describe("eidkit ledger", function()
  local dir, url

  setup(function()
    dir = scratch.file()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir))
    url = "sqlite:" .. dir .. "/l.db"
    local l = assert(ledger_mod.open(url))
    local function issue(tok, at, subject)
      assert(l:issue { EidToken = tok, MerchantId = "0NSJ2023", subject = subject or "user-1", created_at = at })
    end
    issue("A1", DAY - 1)
    issue("B1", DAY + 10, 'order "7", east')
    issue("B2", DAY + 20)
    issue("C1", DAY + 86400)
    assert(l:record("B1", { Text = { ErrCode = 2016, LivenessDetail = { { IsNeedCharge = true },
      { IsNeedCharge = false } } }, RequestId = "req-1" }))
    assert(l:record("B1", { Text = { ErrCode = 2016, LivenessDetail = { { IsNeedCharge = true },
      { IsNeedCharge = false } } }, RequestId = "req-2" }))
    l:close()
  end)
  teardown(function() os.execute("rm -rf " .. dir) end)

  it("exports one UTC day as CSV", function()
    local r = ledger_cli("export", "--ledger", url, "--date", "2024-12-31", "--tz", "UTC")
    assert.equals("", r.stderr)
    assert.equals(0, r.code)
    -- finished is when the verdict was recorded (now), so match it loosely
    local lines = {}
    for l in r.stdout:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.equals(3, #lines)
    assert.equals("EidToken,MerchantId,subject,Extra,intention,created,finished,state,ErrCode,late_ErrCode,"
      .. "billable,settled_billable,attempts,day_attempts,day_billable,open,RequestIds", lines[1])
    assert.matches('^B1,0NSJ2023,"order ""7"", east",,false,2024%-12%-31T00:00:10Z,%d%d%d%d%-%d%d%-%d%dT[%d:]+Z,'
      .. 'failed,2016,,1,,2,0,0,false,req%-1 req%-2$', lines[2])
    assert.equals("B2,0NSJ2023,user-1,,false,2024-12-31T00:00:20Z,,issued,,,0,,0,0,0,true,", lines[3])
  end)

  it("takes the day in Beijing time by default", function()
    -- A1 was issued at 23:59:59 UTC on the 30th: 07:59:59 on the 31st in Beijing.
    local r = ledger_cli("export", "--ledger", url, "--date", "2024-12-31")
    assert.equals(0, r.code)
    local toks = {}
    for tok in r.stdout:gmatch("\n([%w]+),") do toks[#toks + 1] = tok end
    assert.same({ "A1", "B1", "B2" }, toks)
    assert.matches("\nA1,0NSJ2023,user%-1,,false,2024%-12%-31T07:59:59%+08:00,", r.stdout)
    r = ledger_cli("export", "--ledger", url, "--date", "2024-12-31", "--tz", "+08:00")
    assert.equals(0, r.code)
    assert.matches("\nA1,", r.stdout)
  end)

  it("defuses spreadsheet formulas in merchant text (CSV injection)", function()
    local u = "sqlite:" .. dir .. "/formula.db"
    local l = assert(ledger_mod.open(u))
    assert(l:issue { EidToken = "F1", MerchantId = "@M", subject = "=HYPERLINK(\"x\")", created_at = DAY,
      Extra = "+order" })
    l:close()
    local r = proc.run({ proc.bin(), "ledger", "export", "--ledger", u, "--date", "2024-12-31", "--tz", "UTC" },
      { env = { EIDKIT_LEDGER = "" } })
    assert.equals(0, r.code)
    assert.matches("\nF1,'@M,\"'=HYPERLINK%(\"\"x\"\"%)\",'%+order,false,2024%-12%-31T00:00:00Z,,issued,", r.stdout)
  end)

  it("exports JSON lines", function()
    local cjson = require "cjson"
    local r = ledger_cli("export", "--ledger", url, "--date", "2024-12-31", "--format", "jsonl", "--tz", "UTC")
    assert.equals(0, r.code)
    local rows = {}
    for l in r.stdout:gmatch("[^\n]+") do rows[#rows + 1] = cjson.decode(l) end
    assert.equals(2, #rows)
    assert.same({ "req-1", "req-2" }, rows[1].RequestIds)
    assert.equals(2016, rows[1].ErrCode)
    assert.same({}, rows[2].RequestIds)
    assert.equals("2024-12-31T00:00:20Z", rows[2].created)
  end)

  it("reconciles by the Beijing day of each attempt's ReqTime", function()
    local u = "sqlite:" .. dir .. "/rc.db"
    local l = assert(ledger_mod.open(u))
    assert(l:issue { EidToken = "R1", MerchantId = "0NSJ2023", subject = "u", created_at = DAY, Extra = "order-1" })
    -- 2024-12-31 08:00 and 2025-01-01 00:00 in Beijing; both 2024-12-31 in UTC
    local d1 = { Seq = "s1", ReqTime = tostring(DAY * 1000), Errcode = 2016, IsNeedCharge = true }
    local d2 = { Seq = "s2", ReqTime = tostring((DAY + 16 * 3600) * 1000), Errcode = 0, IsNeedCharge = true }
    assert(l:record("R1", { Text = { ErrCode = 2016, LivenessDetail = { d1 } } }))
    assert(l:consume("R1", "u"))
    assert(l:record("R1", { Text = { ErrCode = 0, LivenessDetail = { d1, d2 } } }))
    l:close()
    local r = ledger_cli("reconcile", "--ledger", u, "--date", "2025-01-01")
    assert.equals("", r.stderr)
    assert.equals(table.concat({
      "date              2025-01-01 (Asia/Shanghai, +08:00)",
      "tokens issued     0",
      "attempts          1",
      "billable          1",
      "  ErrCode 0       1",
      "  ErrCode 2006    0",
      "  ErrCode 2016    0",
      "  other ErrCode   0",
      "  intention on    0",
      "  intention off   1",
      "open              0",
      "changed           1",
      "  R1 billable 2, 1 when consumed",
      "" }, "\n"), r.stdout)
    local cjson = require "cjson"
    local t = cjson.decode(ledger_cli("reconcile", "--ledger", u, "--date", "2024-12-31", "--json").stdout)
    assert.same({ 1, 1, 1, 1 }, { t.tokens_issued, t.attempts, t.billable, t.billable_by_code["2016"] })
    t = cjson.decode(ledger_cli("reconcile", "--ledger", u, "--date", "2024-12-31", "--json", "--tz", "UTC").stdout)
    assert.same({ 2, 2 }, { t.attempts, t.billable })
    r = ledger_cli("export", "--ledger", u, "--date", "2025-01-01", "--per", "attempt")
    assert.equals("EidToken,MerchantId,Extra,intention,Seq,ReqTime,ReqTime_ms,Errcode,IsNeedCharge,Sim,"
      .. "LivenessMode,CompareLibType,ErrCode,late_ErrCode,state\n"
      .. "R1,0NSJ2023,order-1,false,s2,2025-01-01T00:00:00.000+08:00," .. (DAY + 16 * 3600) * 1000
      .. ",0,true,,,,2016,0,consumed\n", r.stdout)
  end)

  it("lists in --help every action and option it takes", function()
    local help = ledger_cli("--help").stdout
    for _, action in ipairs { "stats", "export", "reconcile", "expire", "sweep" } do
      assert.matches("\n  " .. action .. "%s", help)
    end
    for _, opt in ipairs { "ledger", "date", "tz", "per", "format", "output", "limit", "endpoint", "ca%-file",
      "info%-type", "json", "help" } do
      assert.matches("\n  %-%-" .. opt .. "[ \n]", help)
    end
  end)

  it("prints stats", function()
    local r = ledger_cli("stats", "--ledger", url)
    assert.equals(0, r.code)
    assert.matches("backend    sqlite\n", r.stdout, 1, true)
    assert.matches("failed     1\n", r.stdout, 1, true)
    assert.matches("billable   1\n", r.stdout, 1, true)
    local j = require("cjson").decode(ledger_cli("stats", "--ledger", url, "--json").stdout)
    assert.equals(4, j.total)
  end)

  it("expires and abandons, and says sweep has no credentials to pull with", function()
    local r = proc.run({ proc.bin(), "ledger", "sweep", "--ledger", url, "--endpoint",
      "http://127.0.0.1:9" }, { env = { EIDKIT_LEDGER = "", TENCENTCLOUD_SECRET_ID = "",
      TENCENTCLOUD_SECRET_KEY = "", TENCENTCLOUD_CREDENTIALS_FILE = dir .. "/none", HOME = dir } })
    assert.equals(3, r.code)
    assert.equals("expired 0, abandoned 3, due 0 (not pulled)\n", r.stdout)
    assert.matches("no credentials to pull results with", r.stderr, 1, true)
    r = ledger_cli("expire", "--ledger", url)
    assert.equals(0, r.code)
    assert.equals("expired 0, abandoned 0\n", r.stdout)
  end)

  it("takes its ledger from --ledger, else $EIDKIT_LEDGER, else the default, as eidkit serve does", function()
    local bin = proc.bin()
    if not bin:find("^/") then bin = os.getenv("PWD") .. "/" .. bin end
    local function stats(env, ...) -- in dir, where ./eidkit.db is not
      return proc.run({ bin, "ledger", "stats", "--json", ... }, { env = env, cwd = dir })
    end
    local r = stats({ EIDKIT_LEDGER = url })
    assert.equals(0, r.code, r.stderr)
    assert.matches('"total":4', r.stdout, 1, true)
    -- the flag wins over the environment
    r = stats({ EIDKIT_LEDGER = "mysql://x" }, "--ledger", url)
    assert.equals(0, r.code, r.stderr)
    -- a bad URL from the environment is named as such, its login never shown
    r = stats({ EIDKIT_LEDGER = "mysql://u:hunter2@db" })
    assert.equals(2, r.code)
    assert.equals("eidkit ledger: EIDKIT_LEDGER: expected sqlite:PATH or "
      .. "redis://[[USER]:PASSWORD@]HOST:PORT[/DB][?prefix=P], got 'mysql://***@db'\n", r.stderr)
    -- empty is unset: the default, ./eidkit.db, which is not there
    r = stats({ EIDKIT_LEDGER = "" })
    assert.equals(1, r.code)
    assert.equals("eidkit ledger: --ledger: no ledger at ./eidkit.db (no such file; eidkit serve or the "
      .. "flow makes one)\n", r.stderr)
  end)

  it("names what is wrong with its arguments", function()
    local cases = {
      { { "export", "--ledger", url }, "eidkit ledger: export needs --date YYYY-MM-DD\n" },
      { { "export", "--ledger", url, "--date", "2024-02-30" }, "eidkit ledger: --date: no such date, got '2024-02-30'\n" },
      { { "export", "--ledger", url, "--date", "2024-12-31", "--format", "xml" },
        "eidkit ledger: --format: expected csv or jsonl, got 'xml'\n" },
      { { "stats", "--ledger", "mysql://db" }, "eidkit ledger: --ledger: expected sqlite:PATH or "
        .. "redis://[[USER]:PASSWORD@]HOST:PORT[/DB][?prefix=P], got 'mysql://db'\n" },
      -- given empty (an unset variable in a script), not the default ledger
      { { "stats", "--ledger", "" }, "eidkit ledger: --ledger: expected sqlite:PATH or "
        .. "redis://[[USER]:PASSWORD@]HOST:PORT[/DB][?prefix=P], got ''\n" },
      { { "stats", "--ledger", "redis://h:99999/0" }, "eidkit ledger: --ledger: url: redis port must be 1..65535\n" },
      { { "purge", "--ledger", url }, "eidkit ledger: unknown action 'purge' (stats, export, reconcile, sweep or expire)\n" },
      { {}, "eidkit ledger: expected an action: stats, export, reconcile, sweep or expire\n" },
      { { "export", "--ledger", url, "--date", "2024-12-31", "--per", "day" },
        "eidkit ledger: --per: expected token or attempt, got 'day'\n" },
      { { "export", "--ledger", url, "--date", "2024-12-31", "--tz", "Europe/Berlin" },
        "eidkit ledger: --tz: only Asia/Shanghai (the default; also Asia/Chongqing, PRC), UTC and fixed "
        .. "offsets such as +08:00 are supported: other zones change their offset with daylight saving time\n" },
      { { "reconcile", "--ledger", url, "--date", "2024-12-31", "--tz", "+25:00" },
        "eidkit ledger: --tz: only Asia/Shanghai (the default; also Asia/Chongqing, PRC), UTC and fixed "
        .. "offsets such as +08:00 are supported: other zones change their offset with daylight saving time\n" },
      { { "reconcile", "--ledger", url }, "eidkit ledger: reconcile needs --date YYYY-MM-DD\n" },
      { { "reconcile", "--ledger", url, "--date", "31/12/2024" },
        "eidkit ledger: --date: expected a date YYYY-MM-DD, got '31/12/2024'\n" },
      { { "sweep", "--ledger", url, "--limit", "0" }, "eidkit ledger: --limit: expected 1..100000, got '0'\n" },
    }
    for _, c in ipairs(cases) do
      local r = ledger_cli(table.unpack(c[1]))
      assert.equals(c[2], r.stderr)
      assert.equals(2, r.code)
    end
    local r = ledger_cli("stats", "--ledger", "redis://127.0.0.1:1/0")
    assert.equals(1, r.code)
    assert.matches("^eidkit ledger: unavailable: redis: cannot connect to 127.0.0.1:1", r.stderr)
    -- a mistyped path is not an empty ledger with nothing to bill
    for _, action in ipairs { { "stats" }, { "reconcile", "--date", "2024-12-31" }, { "expire" } } do
      local typo = dir .. "/typo.db"
      r = ledger_cli(action[1], "--ledger", "sqlite:" .. typo, table.unpack(action, 2))
      assert.equals(1, r.code)
      assert.equals("", r.stdout)
      assert.equals("eidkit ledger: --ledger: no ledger at " .. typo
        .. " (no such file; eidkit serve or the flow makes one)\n", r.stderr)
      assert.is_nil(io.open(typo, "rb"))
    end
  end)
end)
