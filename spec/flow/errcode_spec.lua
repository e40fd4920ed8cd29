-- Every Text.ErrCode of eid-api.md §4.3, code by code (issue 14): the class
-- eidkit gives it, pinned here row by row against core.errcode_table (the C
-- table in core/src/errcode.c), what eidkit.policy's default outcome and the
-- ledger (SQLite and Redis) make of it, and what happens to a code nobody
-- knows (failed/unclassified, counted, logged once per code).
local scratch = require "support.scratch"
local core = require "eidkit.core"
local policy = require "eidkit.policy"
local ledger_mod = require "eidkit.ledger"
local redis = require "support.redis"
local flowenv = require "support.flowenv"

-- code, status, reason, retry_with_new_token, billed
local TABLE = {
  { 0, "passed", "passed", false, true },
  { 1, "failed", "merchant_config", false, false },
  { 2, "failed", "merchant_config", false, false },
  { 3, "failed", "merchant_config", false, false },
  { 4, "failed", "user_retry", true, false },
  { 8, "failed", "user_retry", true, false },
  { 10, "failed", "user_retry", true, false },
  { 12, "failed", "user_retry", true, false },
  { 13, "failed", "user_retry", true, false },
  { 14, "pending", "completed", false, false }, -- already completed: pull again, never a failure
  { 15, "expired", "token_expired", true, false },
  { 16, "failed", "retry_limit", false, false },
  { 17, "pending", "unfinished", false, false },
  { 201, "failed", "user_retry", true, false },
  { 202, "failed", "user_retry", true, false },
  { 203, "failed", "merchant_config", false, false },
  { 204, "failed", "merchant_config", false, false },
  { 301, "failed", "identity_rejected", false, false },
  { 302, "failed", "identity_rejected", false, false },
  { 303, "failed", "user_retry", true, false },
  { 1001, "failed", "user_retry", true, false },
  { 1002, "failed", "liveness_rejected", false, false },
  { 1003, "failed", "liveness_rejected", false, false },
  { 1004, "failed", "liveness_rejected", false, false },
  { 1005, "failed", "liveness_rejected", false, false },
  { 1006, "pending", "service_retry", false, false }, -- service-side, transient: same token later
  { 1007, "pending", "service_retry", false, false },
  { 1008, "failed", "user_retry", true, false },
  { 2001, "failed", "user_retry", true, false },
  { 2002, "failed", "merchant_input", false, false }, -- the name the merchant sent
  { 2003, "failed", "merchant_input", false, false }, -- the ID number the merchant sent
  { 2004, "failed", "capture", true, false },
  { 2005, "failed", "identity_rejected", false, false },
  { 2006, "failed", "identity_rejected", false, true },
  { 2007, "failed", "identity_rejected", false, false },
  { 2008, "failed", "identity_rejected", false, false },
  { 2009, "failed", "identity_rejected", false, false },
  { 2010, "failed", "capture", true, false },
  { 2011, "failed", "liveness_rejected", false, false },
  { 2012, "failed", "capture", true, false },
  { 2013, "failed", "capture", true, false },
  { 2014, "failed", "capture", true, false },
  { 2015, "failed", "user_retry", true, false },
  { 2016, "failed", "identity_rejected", false, true },
  { 2017, "pending", "service_retry", false, false },
}

describe("Text.ErrCode classes", function()
  it("core.errcode_table is exactly this table", function()
    local got = {}
    for i, e in ipairs(core.errcode_table) do
      got[i] = { e.code, e.status, e.reason, e.retry_with_new_token, e.billed }
    end
    assert.same(TABLE, got)
  end)

  it("the default outcome follows the table, and only 0, 2006 and 2016 are billed", function()
    for _, row in ipairs(TABLE) do
      local o = policy.default_outcome { Text = { ErrCode = row[1] } }
      assert.same({ row[2], row[3], row[4] }, { o.status, o.reason, o.retry_with_new_token }, "ErrCode " .. row[1])
      assert.equals(row[1] == 0 or row[1] == 2006 or row[1] == 2016, row[5], "ErrCode " .. row[1])
    end
  end)

  it("an unknown code is failed/unclassified, never a pass nor a retry", function()
    for _, code in ipairs { -1, 5, 18, 999, 2018, 4242 } do
      local o = policy.default_outcome { Text = { ErrCode = code } }
      assert.same({ "failed", "unclassified", false }, { o.status, o.reason, o.retry_with_new_token })
      assert.is_false(policy.is_known_code(code))
    end
  end)

  local srv = redis.available and redis.start() or nil
  teardown(function() if srv then srv:destroy() end end)
  local dir = scratch.file()
  os.remove(dir)
  assert(os.execute("mkdir -p " .. dir))
  teardown(function() os.execute("rm -rf " .. dir) end)
  local urls = { sqlite = function() return "sqlite:" .. dir .. "/errcode.db" end }
  if srv then urls.redis = function() return srv:url(0, "errcode" .. os.time() .. ":") end end
  for name, url in pairs(urls) do
    it("the " .. name .. " ledger settles a token by the same table", function()
      local l = assert(ledger_mod.open(url()))
      local want = { passed = "passed", failed = "failed", pending = "issued", expired = "expired" }
      for _, row in ipairs(TABLE) do
        local tok = "EC-" .. row[1]
        assert(l:issue { EidToken = tok, MerchantId = "m", subject = "u" })
        local rec = assert(l:record(tok, { Text = { ErrCode = row[1],
          LivenessDetail = { { IsNeedCharge = row[5] } } } }))
        assert.equals(want[row[2]], rec.state, "ErrCode " .. row[1])
        assert.equals(row[5] and 1 or 0, rec.billable, "ErrCode " .. row[1])
        -- no verdict: a pending code leaves no ErrCode behind
        if row[2] == "pending" then assert.is_nil(rec.ErrCode) end
      end
      -- look again later on the same token: every pending code's token is due
      local due = {}
      for _, r in ipairs(assert(l:due(1000))) do due[r.EidToken] = true end
      for _, row in ipairs(TABLE) do
        assert.equals(row[2] == "pending" or row[2] == "failed", due["EC-" .. row[1]] == true, "ErrCode " .. row[1])
      end
      -- an unknown code is a failure
      assert(l:issue { EidToken = "EC-unknown", MerchantId = "m", subject = "u" })
      assert.equals("failed", assert(l:record("EC-unknown", { Text = { ErrCode = 4242 } })).state)
      l:close()
    end)
  end

  describe("a code eidkit does not know, through eidkit.flow and eidkit sim", function()
    local env
    lazy_setup(function() env = flowenv.new { sim_args = { "--seed", "3" } } end)
    lazy_teardown(function() if env then env:close() end end)

    it("is counted every time and logged once per code", function()
      local f = env:flow()
      local function run(subject, code)
        local st = env:start(f, subject)
        env:finish_user(st.EidToken, { ErrCode = code })
        return assert(f.flow:finish { subject = subject, EidToken = st.EidToken })
      end
      local o = run("u-1", 4242)
      assert.same({ "failed", "unclassified", 4242 }, { o.status, o.reason, o.code })
      run("u-2", 4242)
      run("u-3", 5151)
      run("u-4", 2016) -- known: not counted
      assert.same({ [4242] = 2, [5151] = 1 }, f.flow:unclassified_codes())
      local logged = {}
      for _, e in ipairs(f.events) do
        if e.event.event == "unclassified_code" then
          logged[#logged + 1] = e.event.code
          assert.equals("warn", e.level)
        end
      end
      assert.same({ 4242, 5151 }, logged)
    end)
  end)
end)
