-- Reconciliation by Beijing day (issue 14): a day of mixed traffic played
-- through eidkit.flow and a real `eidkit sim` across a Beijing midnight, on
-- SQLite and on Redis, then `eidkit ledger reconcile` and `eidkit ledger
-- export --per attempt` (the eidkit program, a subprocess) checked exactly
-- against the simulator's own record of every attempt (--attempt-log).
local scratch = require "support.scratch"
local flowenv = require "support.flowenv"
local redis = require "support.redis"
local simctl = require "support.simctl"
local proc = require "support.proc"
local ledger_mod = require "eidkit.ledger"
local cjson = require "cjson"

local BEIJING = 8 * 3600

local function beijing_date(t) return os.date("!%Y-%m-%d", t + BEIJING) end

describe("reconciliation by Beijing day", function()
  local env, log
  lazy_setup(function()
    log = scratch.file()
    env = flowenv.new { sim_args = { "--seed", "21", "--attempt-log", log } }
  end)
  lazy_teardown(function()
    if env then env:close() end
    os.remove(log)
  end)

  -- The simulator's truth for a day, over the given tokens only.
  local function sim_day(tokens, day)
    local t = { attempts = 0, billable = 0, by_code = { ["0"] = 0, ["2006"] = 0, ["2016"] = 0, other = 0 },
      by_intention = { on = 0, off = 0 }, keys = {} }
    local f = assert(io.open(log))
    for line in f:lines() do
      local a = cjson.decode(line)
      if tokens[a.EidToken] and a.BeijingDate == day then
        t.attempts = t.attempts + 1
        t.keys[#t.keys + 1] = a.EidToken .. "/" .. a.Seq
        if a.IsNeedCharge then
          t.billable = t.billable + 1
          local k = tostring(math.tointeger(a.ErrCode))
          if t.by_code[k] == nil then k = "other" end
          t.by_code[k] = t.by_code[k] + 1
          local i = a.UseIntentionVerify and "on" or "off"
          t.by_intention[i] = t.by_intention[i] + 1
        end
      end
    end
    f:close()
    table.sort(t.keys)
    return t
  end

  local function cli(...)
    local r = proc.run({ proc.bin(), "ledger", ... }, { env = { EIDKIT_LEDGER = "" } })
    assert.equals("", r.stderr)
    assert.equals(0, r.code)
    return r.stdout
  end

  local backends = { "sqlite" }
  if redis.available then backends[2] = "redis" end
  for n, backend in ipairs(backends) do
    it("matches the simulator's attempts exactly (" .. backend .. ")", function()
      -- Simulated time two days back, from 23:30 Beijing (15:30 UTC): every
      -- token's lifetime is over by real time, so the CLI (on the real clock)
      -- sees them as the flow last left them.
      local now = os.time()
      local start = now - now % 86400 - (2 + n) * 86400 + 15 * 3600 + 30 * 60
      local midnight = start + 1800
      -- The simulator's clock and the ledger's, set together (to the second).
      local offset = 0
      local function set_clock(t)
        offset = t - os.time()
        assert(simctl.request(env.sim, "POST", "/sim/clock", { Now = t }) == 200)
      end
      local function advance(s) set_clock(os.time() + offset + s) end
      finally(function() set_clock(os.time()) end)
      set_clock(start)
      local url
      if backend == "redis" then
        if not env.redis then env.redis = redis.start() end
        url = env.redis:url(0, "reconcile" .. os.time() .. ":")
      else
        url = ("sqlite:%s/reconcile-%d.db"):format(env.dir, n)
      end
      local ledger = assert(ledger_mod.open(url, { clock = function() return os.time() + offset end }))
      local f = env:flow { ledger = ledger }
      local mine = {}
      local function start_token(subject, config)
        local tok = env:start(f, subject, config and { Config = config } or nil).EidToken
        mine[tok] = true
        return tok
      end
      local intention = { InputType = "4", UseIntentionVerify = true, IntentionMode = "1",
        IntentionVerifyText = "我同意" }
      local user = env.finish_user
      local function finish(subject, tok) return assert(f.flow:finish { subject = subject, EidToken = tok }) end

      -- 23:30 Beijing, day one
      local pass = start_token("pass")
      user(env, pass, { ErrCode = 0 })
      finish("pass", pass)
      local late = start_token("late")
      user(env, late, { ErrCode = 2016 })
      finish("late", late)
      local with_intention = start_token("intention", intention)
      user(env, with_intention, { ErrCode = 0 })
      finish("intention", with_intention)
      local swept = start_token("swept")
      user(env, swept, { ErrCode = 2006 })
      user(env, swept, { ErrCode = 1001 })
      local across = start_token("across")
      local never = start_token("never")
      local state = start_token("state")
      user(env, state, { ErrCode = 17 })
      f.flow:sweep()
      set_clock(midnight - 30) -- 23:59:30: room for a slow run (valgrind, ASan) before midnight
      user(env, across, { ErrCode = 2016 })
      set_clock(midnight) -- 00:00:00 Beijing, day two
      user(env, across, { ErrCode = 0 })
      user(env, late, { ErrCode = 0 }) -- a pass after the consumed failure
      user(env, state, { ErrCode = 0 })
      local after = start_token("after", intention)
      user(env, after, { ErrCode = 2016, IntentionErrCode = -12 })
      user(env, after, { ErrCode = 0 })
      f.flow:sweep()
      finish("after", after)
      -- every lifetime over: the last pulls
      advance(7200 + 60)
      f.flow:sweep()
      f.flow:sweep()
      local day1, day2 = beijing_date(start), beijing_date(midnight)
      assert.are_not.equal(day1, day2)

      local issued_on = {}
      for tok in pairs(mine) do
        local _, s = simctl.request(env.sim, "GET", "/sim/tokens/" .. tok)
        local d = beijing_date(math.tointeger(s.CreatedAt))
        issued_on[d] = (issued_on[d] or 0) + 1
      end
      for _, day in ipairs { day1, day2 } do
        local truth = sim_day(mine, day)
        local text = cli("reconcile", "--ledger", url, "--date", day, "--json")
        local got = cjson.decode(text)
        assert.equals(issued_on[day], got.tokens_issued, day)
        assert.same({ truth.attempts, truth.billable, truth.by_code, truth.by_intention },
          { got.attempts, got.billable, got.billable_by_code, got.billable_by_intention }, day)
        local rows = {}
        local exported = cli("export", "--ledger", url, "--date", day, "--per", "attempt", "--format", "jsonl")
        -- the identity the users verified with is in no output
        for _, out in ipairs { text, exported, cli("export", "--ledger", url, "--date", day) } do
          assert.is_nil(out:find(flowenv.NAME, 1, true))
          assert.is_nil(out:find(flowenv.IDCARD, 1, true))
        end
        for line in exported:gmatch("[^\n]+") do
          local r = cjson.decode(line)
          rows[#rows + 1] = r.EidToken .. "/" .. r.Seq
        end
        table.sort(rows)
        assert.same(truth.keys, rows, day)
        assert.same({}, got.open, day)
      end
      -- what the day looked like, so the check above is not vacuous
      local t1 = cjson.decode(cli("reconcile", "--ledger", url, "--date", day1, "--json"))
      local t2 = cjson.decode(cli("reconcile", "--ledger", url, "--date", day2, "--json"))
      assert.same({ 7, 6, 5, 1 }, { t1.tokens_issued, t1.attempts, t1.billable, t1.billable_by_intention.on })
      assert.same({ 1, 5, 5, 2 }, { t2.tokens_issued, t2.attempts, t2.billable, t2.billable_by_intention.on })
      assert.same({ 2, 1, 2, 0 }, { t1.billable_by_code["0"], t1.billable_by_code["2006"],
        t1.billable_by_code["2016"], t1.billable_by_code.other })
      -- the late pass grew a consumed token's count: listed on both of its days
      assert.same({ { EidToken = late, settled_billable = 1, billable = 2 } }, t2.changed)
      assert.same(t2.changed, t1.changed)
      -- never finished: Tencent's expiry, no charge
      assert.same({ "consumed", 15, 0 }, { ledger:get(never).state, ledger:get(never).ErrCode, ledger:get(never).billable })
      ledger:close()
    end)
  end
end)
