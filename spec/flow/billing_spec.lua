-- Billing truth (issue 14): after a token's window closes, the ledger's
-- billable count equals the number of IsNeedCharge attempts the simulator
-- reports for it, on SQLite and on Redis, whatever the user did on the token
-- and whoever (finish or the sweep) saw the results.
local flowenv = require "support.flowenv"
local redis = require "support.redis"
local simctl = require "support.simctl"

local TTL, WINDOW = 7200, 3 * 86400

-- The simulator's own count of charged attempts on a token.
local function sim_charges(env, tok)
  local status, s = simctl.request(env.sim, "GET", "/sim/tokens/" .. tok)
  assert(status == 200, "GET /sim/tokens answered " .. tostring(status))
  local n = 0
  for _, a in ipairs(type(s.Attempts) == "table" and s.Attempts or {}) do
    if a.IsNeedCharge == true then n = n + 1 end
  end
  return n
end

describe("billing", function()
  local env
  lazy_setup(function() env = flowenv.new { sim_args = { "--seed", "14" } } end)
  lazy_teardown(function() if env then env:close() end end)

  local backends = { "sqlite" }
  if redis.available then backends[2] = "redis" end
  for _, backend in ipairs(backends) do
    describe("(" .. backend .. " ledger)", function()
      -- The ledger's clock follows the simulator's: both move together.
      local offset = 0
      local function advance(s)
        env:advance(s)
        offset = offset + s
      end
      after_each(function()
        if offset ~= 0 then env:advance(-offset) end
        offset = 0
      end)
      local function flow(told)
        local ledger = env:ledger(backend, { clock = function() return os.time() + offset end })
        return env:flow { ledger = ledger, policy = { on_outcome = function(o)
          told[#told + 1] = { EidToken = o.EidToken, status = o.status, code = o.code, late = o.late }
        end } }
      end

      it("regression: a pass after a settled 2016 failure is recorded, billed and told once as late", function()
        -- The bug: finish consumed the 2016 failure, the user passed on the
        -- same token, and the ledger stayed at consumed/2016/billable 1 with
        -- no token due for the sweep: the second charge and the pass were lost.
        local told = {}
        local f = flow(told)
        local st = env:start(f, "late-1")
        env:finish_user(st.EidToken, { ErrCode = 2016 })
        local o = assert(f.flow:finish { subject = "late-1", EidToken = st.EidToken })
        assert.same({ "failed", 2016 }, { o.status, o.code })
        env:finish_user(st.EidToken, { ErrCode = 0 })
        local n, report = f.flow:sweep()
        assert.equals(1, n)
        assert.equals(1, report.late)
        local rec = f.ledger:get(st.EidToken)
        assert.same({ "consumed", 2016, 0, 2, 2 },
          { rec.state, rec.ErrCode, rec.late_ErrCode, rec.billable, rec.attempts })
        assert.same({ { EidToken = st.EidToken, status = "failed", code = 2016 },
          { EidToken = st.EidToken, status = "passed", code = 0, late = true } }, told)
        assert.equals(1, f.counts.consume)
        -- A pass is final: nothing is due any more, and nobody is told again.
        n = f.flow:sweep()
        assert.equals(0, n)
        assert.equals(2, #told)
        -- finish still replays the verdict it consumed.
        o = assert(f.flow:finish { subject = "late-1", EidToken = st.EidToken })
        assert.same({ "failed", 2016 }, { o.status, o.code })
        assert.equals(2, sim_charges(env, st.EidToken))
      end)

      it("a finish replaying a consumed failure records the late pass it pulls and tells it once", function()
        local told = {}
        local f = flow(told)
        local st = env:start(f, "late-2")
        env:finish_user(st.EidToken, { ErrCode = 2016 })
        assert.equals("failed", assert(f.flow:finish { subject = "late-2", EidToken = st.EidToken }).status)
        env:finish_user(st.EidToken, { ErrCode = 0 })
        -- another process (no memo): its replay pulls the pass
        local g = env:flow { ledger = f.ledger, policy = { on_outcome = function(o)
          told[#told + 1] = { EidToken = o.EidToken, status = o.status, code = o.code, late = o.late }
        end } }
        local o = assert(g.flow:finish { subject = "late-2", EidToken = st.EidToken })
        assert.same({ "failed", 2016 }, { o.status, o.code }) -- the consumed verdict stands
        o = assert(env:flow { ledger = f.ledger }.flow:finish { subject = "late-2", EidToken = st.EidToken })
        assert.same({ "failed", 2016 }, { o.status, o.code })
        local rec = f.ledger:get(st.EidToken)
        assert.same({ 2016, 0, 2 }, { rec.ErrCode, rec.late_ErrCode, rec.billable })
        assert.same({ { EidToken = st.EidToken, status = "failed", code = 2016 },
          { EidToken = st.EidToken, status = "passed", code = 0, late = true } }, told)
        assert.same({ 1, 0 }, { f.counts.consume, g.counts.consume }) -- never a second consume
        local late_events = 0
        for _, e in ipairs(g.events) do
          if e.event.event == "outcome" and e.event.late then late_events = late_events + 1 end
        end
        assert.equals(1, late_events)
      end)

      it("counts every charge Tencent counts once the windows close", function()
        local told = {}
        local f = flow(told)
        local t = {}
        local function start(name) t[name] = env:start(f, name).EidToken end
        for _, name in ipairs { "fail_pass", "fail3", "pass", "expired", "sweep_only" } do
          start(name)
        end
        -- fail then pass, with finish after the failure
        env:finish_user(t.fail_pass, { ErrCode = 2016 })
        assert.equals("failed", assert(f.flow:finish { subject = "fail_pass", EidToken = t.fail_pass }).status)
        -- fail three times, finish after each
        for _, code in ipairs { 2016, 2006, 2016 } do
          env:finish_user(t.fail3, { ErrCode = code })
          assert.equals("failed", assert(f.flow:finish { subject = "fail3", EidToken = t.fail3 }).status)
        end
        -- pass at once
        env:finish_user(t.pass, { ErrCode = 0 })
        assert.equals("passed", assert(f.flow:finish { subject = "pass", EidToken = t.pass }).status)
        -- results that only the sweep sees: a failure, a sweep, then a pass
        env:finish_user(t.sweep_only, { ErrCode = 2006 })
        f.flow:sweep()
        env:finish_user(t.sweep_only, { ErrCode = 1001 })
        env:finish_user(t.sweep_only, { ErrCode = 0 })
        env:finish_user(t.fail_pass, { ErrCode = 0 })
        advance(TTL - 60)
        f.flow:sweep()
        -- past the lifetime: the last pulls; "expired" gets Tencent's 15
        advance(120)
        f.flow:sweep()
        f.flow:sweep()
        assert.same({ "consumed", 15 }, { f.ledger:get(t.expired).state, f.ledger:get(t.expired).ErrCode })
        -- "abandoned": the ledger never got a word from Tencent in the window
        local never = env:start(f, "abandoned2").EidToken
        advance(WINDOW + 60)
        f.flow:sweep()
        assert.equals("abandoned", f.ledger:get(never).state)
        for name, tok in pairs(t) do
          assert.equals(sim_charges(env, tok), f.ledger:get(tok).billable, name)
        end
        assert.equals(0, f.ledger:get(never).billable)
        assert.equals(0, sim_charges(env, never))
        assert.same({ 2, 3, 1, 0, 2 }, { f.ledger:get(t.fail_pass).billable, f.ledger:get(t.fail3).billable,
          f.ledger:get(t.pass).billable, f.ledger:get(t.expired).billable, f.ledger:get(t.sweep_only).billable })
        -- The late pass was told once; nothing was consumed twice.
        local late = {}
        for _, o in ipairs(told) do if o.late then late[#late + 1] = o.EidToken end end
        assert.same({ t.fail_pass }, late)
        assert.equals(0, f.ledger:stats().due)
      end)
    end)
  end
end)
