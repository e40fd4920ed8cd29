-- One conformance spec for every ledger backend: SQLite on a temporary file
-- and Redis on a redis-server this spec starts on a free loopback port. Both
-- must give the same answers to the same calls; the clock is frozen. Each
-- runs twice: on the C object, and on worker threads (open with `workers`,
-- eidkit.LedgerPool behind eidkit.ledger.pool), which must answer alike.
local scratch = require "support.scratch"
local ledger_mod = require "eidkit.ledger"
local redis = require "support.redis"

local T0 = 1735660800
local TOK = "CE661F1A-0F1E-45BD-BE13-34C05CEA7681"
local KEY = ("k"):rep(32)

local function response(code, details, rid)
  local text = { ErrCode = code, ErrMsg = "described only", Name = "a name", IdCard = "an id",
    LivenessDetail = details }
  return { Text = text, RequestId = rid or "req-" .. tostring(code) }
end

local function attempt(charged) return { Seq = "1", IsNeedCharge = charged, Errcode = 0 } end

local tmpdir = scratch.file()
os.remove(tmpdir)
assert(os.execute("mkdir -p " .. tmpdir))
local srv = redis.available and redis.start() or nil
local serial = 0

local backends = {
  sqlite = function()
    serial = serial + 1
    return ("sqlite:%s/ledger-%d.db"):format(tmpdir, serial)
  end,
}
if srv then
  backends.redis = function()
    serial = serial + 1
    return srv:url(0, ("t%d-%d:"):format(os.time(), serial))
  end
end

teardown(function()
  if srv then srv:destroy() end
  os.execute("rm -rf " .. tmpdir)
end)

local variants = {}
for name, new_url in pairs(backends) do
  variants[#variants + 1] = { name = name, new_url = new_url, class = "eidkit.Ledger" }
  variants[#variants + 1] = { name = name, new_url = new_url, class = "eidkit.LedgerPool", workers = 2 }
end

for _, variant in ipairs(variants) do
  local name, new_url, class = variant.name, variant.new_url, variant.class
  describe("ledger on " .. name .. (variant.workers and " (worker pool)" or ""), function()
    local now, ledger

    local function open(opts)
      opts = opts or {}
      opts.clock = function() return now end
      opts.token_ttl = opts.token_ttl or 600
      opts.workers = variant.workers
      return assert(ledger_mod.open(new_url(), opts))
    end

    before_each(function()
      now = T0
      ledger = open()
    end)
    after_each(function() ledger:close() end)

    local function issue(tok, subject)
      return ledger:issue { EidToken = tok or TOK, MerchantId = "0NSJ2023", subject = subject or "user-42",
        Extra = "order-9" }
    end

    local function code_of(...)
      local v, err = ...
      assert.is_nil(v)
      return err.code
    end

    it("reports its backend", function()
      assert.equals(name, ledger:backend())
      assert.matches("^" .. class:gsub("%.", "%%.") .. " %(" .. name, tostring(ledger))
    end)

    it("closes once, by close() or <close>, and refuses calls after", function()
      local l = open()
      l:close()
      l:close()
      assert.equals(class .. " (closed)", tostring(l))
      assert.has_error(function() l:get(TOK) end, "attempt to use a closed " .. class)
      do
        local scoped <close> = open()
        l = scoped
        assert.is_true(issue())
      end
      assert.equals(class .. " (closed)", tostring(l))
    end)

    it("raises on a missing argument, naming the method and the position", function()
      assert.has_error(function() ledger:claim(TOK) end,
        "bad argument #2 to 'claim' (string expected, got no value)")
      assert.has_error(function() ledger:get() end, "bad argument #1 to 'get' (string expected, got no value)")
    end)

    describe("issue", function()
      it("stores a token once", function()
        assert.is_true(issue())
        local v, err = issue(TOK, "user-43")
        assert.is_nil(v)
        assert.equals("exists", err.code)
        assert.equals("exists: token: already issued", tostring(err))
        assert.equals("user-42", ledger:get(TOK).subject)
      end)

      it("raises on misuse naming the field", function()
        local cases = {
          { {}, "EidToken: required" },
          { { EidToken = "a b", MerchantId = "m", subject = "s" },
            "EidToken: byte 2 is not allowed (expected letters, digits, '.', '_' and '-')" },
          { { EidToken = "t", subject = "s" }, "MerchantId: required" },
          { { EidToken = "t", MerchantId = "m" }, "subject: required" },
          { { EidToken = "t", MerchantId = "m", subject = "s", Extra = 5 }, "Extra: expected string, got number" },
          { { EidToken = "t", MerchantId = "m", subject = "s", Subject = "x" }, "unknown field 'Subject'" },
          { { EidToken = "t", MerchantId = "m", subject = "s", created_at = "1" },
            "created_at: expected non-negative integer Unix seconds" },
        }
        for _, c in ipairs(cases) do
          local ok, err = pcall(function() return ledger:issue(c[1]) end)
          assert.is_false(ok)
          assert.equals("bad argument #1 to 'issue' (" .. c[2] .. ")", err:match("bad argument.*$"))
        end
        assert.same({ nil, "unknown_token" }, { nil, code_of(ledger:get("t")) })
      end)
    end)

    describe("claim", function()
      it("returns the stored record, with no names or ID numbers", function()
        issue()
        local rec = assert(ledger:claim(TOK, "user-42"))
        assert.same({
          EidToken = TOK, MerchantId = "0NSJ2023", subject = "user-42", Extra = "order-9",
          state = "issued", created_at = T0, expires_at = T0 + 600, result_deadline = T0 + 3 * 86400,
          pulls = 0, attempts = 0, billable = 0, has_payload = false, request_ids = {}, intention = false,
        }, rec)
      end)

      it("refuses unknown, foreign, expired and consumed tokens", function()
        issue()
        assert.equals("unknown_token", code_of(ledger:claim("OTHER", "user-42")))
        assert.equals("unknown_token", code_of(ledger:claim("not a token", "user-42")))
        local _, err = ledger:claim(TOK, "user-4")
        assert.equals("wrong_subject", err.code)
        assert.equals("subject: the token is bound to another subject", err.message)
        assert.is_false(err.retryable)
        now = T0 + 600
        assert.equals("expired", code_of(ledger:claim(TOK, "user-42")))
        now = T0 + 10
        assert(ledger:record(TOK, response(0, { attempt(true) })))
        assert(ledger:consume(TOK, "user-42"))
        assert.equals("consumed", code_of(ledger:claim(TOK, "user-42")))
      end)
    end)

    describe("record", function()
      it("treats a missing Text or ErrCode as pending", function()
        issue()
        now = T0 + 5
        local rec = assert(ledger:record(TOK, { RequestId = "r1" }))
        assert.equals("issued", rec.state)
        assert.equals(1, rec.pulls)
        assert.equals(T0 + 5, rec.last_pull_at)
        assert(ledger:record(TOK, { Response = { Text = { ErrMsg = "x" }, RequestId = "r2" } }))
        rec = assert(ledger:record(TOK, response(17, nil, "r3")))
        assert.equals("issued", rec.state)
        assert.is_nil(rec.ErrCode)
        assert.same({ "r1", "r2", "r3" }, rec.request_ids)
      end)

      it("keeps each RequestId once, the most recent 16, oldest first", function()
        issue()
        local ids = {}
        for i = 1, 20 do
          ids[i] = ("r%d-x"):format(i)
          now = T0 + i
          assert(ledger:record(TOK, { RequestId = ids[i] }))
          if i == 3 or i == 19 then -- a retried pull repeats the newest and an old one
            assert(ledger:record(TOK, { RequestId = ids[i] }))
            assert(ledger:record(TOK, { RequestId = ids[i - 1] }))
          end
        end
        local rec = assert(ledger:record(TOK, { RequestId = "r1-x" })) -- dropped long ago: new again
        for _ = 1, 5 do table.remove(ids, 1) end
        ids[#ids + 1] = "r1-x"
        assert.same(ids, rec.request_ids)
        assert.equals(25, rec.pulls)
        assert.same(ids, assert(ledger:get(TOK)).request_ids)
        rec = assert(ledger:record(TOK, { RequestId = "2-x" })) -- part of a kept id ("r12-x"): a match must be whole
        assert.equals("2-x", rec.request_ids[16])
        assert.equals("r7-x", rec.request_ids[1])
        rec = assert(ledger:record(TOK, { RequestId = "r20" })) -- a prefix of a kept id
        assert.equals("r20", rec.request_ids[16])
        assert.equals("r8-x", rec.request_ids[1])
      end)

      it("leaves request_ids out of records opened with request_ids = false, and still keeps them", function()
        local url = new_url()
        local function at(opts)
          opts.clock, opts.token_ttl, opts.workers = function() return now end, 600, variant.workers
          return assert(ledger_mod.open(url, opts))
        end
        local lean, full = at { request_ids = false }, at {}
        assert.is_true(lean:issue { EidToken = TOK, MerchantId = "0NSJ2023", subject = "user-42" })
        assert.is_nil(assert(lean:claim(TOK, "user-42")).request_ids)
        local rec = assert(lean:record(TOK, { RequestId = "r1" }))
        assert.is_nil(rec.request_ids)
        assert.equals(1, rec.pulls)
        assert.is_nil(assert(lean:get(TOK)).request_ids)
        assert.same({ "r1" }, assert(full:get(TOK)).request_ids)
        lean:close()
        full:close()
        assert.has_error(function() ledger_mod.open(url, { request_ids = "no", workers = variant.workers }) end,
          "bad argument #2 to 'ledger_" .. (variant.workers and "pool" or "open") .. "' (request_ids: expected a boolean)")
      end)

      it("extracts the verdict, attempts and billable count", function()
        issue()
        now = T0 + 60
        local rec = assert(ledger:record(TOK,
          response(2016, { attempt(true), attempt(false), attempt(true) })))
        assert.equals("failed", rec.state)
        assert.equals(2016, rec.ErrCode)
        assert.equals(3, rec.attempts)
        assert.equals(2, rec.billable)
        assert.equals(T0 + 60, rec.finished_at)
      end)

      it("is idempotent and never erases a final verdict", function()
        issue()
        local first = response(1003, { attempt(false) }, "r1")
        local pass = response(0, { attempt(false), attempt(true) }, "r2")
        assert.equals("failed", ledger:record(TOK, first).state)
        -- the user retried on the same token and passed
        local rec = assert(ledger:record(TOK, pass))
        assert.equals("passed", rec.state)
        -- a slow callback delivering the first response changes nothing
        rec = assert(ledger:record(TOK, first))
        assert.equals("passed", rec.state)
        assert.equals(0, rec.ErrCode)
        rec = assert(ledger:record(TOK, pass))
        assert.equals("passed", rec.state)
        assert.equals(2, rec.attempts)
        assert.equals(1, rec.billable)
        assert.equals(4, rec.pulls)
        assert.same({ "r1", "r2" }, rec.request_ids)
        -- later facts only add billing
        rec = assert(ledger:record(TOK, response(2006, { attempt(false), attempt(true), attempt(true) })))
        assert.equals("passed", rec.state)
        assert.equals(2, rec.billable)
      end)

      it("expires on ErrCode 15 or BizTokenExpired", function()
        issue("T1")
        issue("T2")
        assert.equals("expired", ledger:record("T1", response(15)).state)
        local rec = assert(ledger:record("T2",
          { Error = { Code = "InvalidParameterValue.BizTokenExpired", Message = "x" }, RequestId = "r" }))
        assert.equals("expired", rec.state)
        assert.same({}, ledger:due(10))
      end)

      it("accepts JSON nulls as absent", function()
        local ok, cjson = pcall(require, "cjson")
        if not ok then return end
        issue()
        local rec = assert(ledger:record(TOK, cjson.decode(
          '{"Response":{"Text":{"ErrCode":null,"LivenessDetail":null},"RequestId":"r"}}')))
        assert.equals("issued", rec.state)
        rec = assert(ledger:record(TOK, cjson.decode(
          '{"Response":{"Text":{"ErrCode":0,"LivenessDetail":[{"IsNeedCharge":true}]},"RequestId":"r2"}}')))
        assert.equals("passed", rec.state)
        assert.equals(1, rec.billable)
      end)

      it("refuses unknown tokens and raises on malformed responses", function()
        assert.equals("unknown_token", code_of(ledger:record(TOK, response(0))))
        issue()
        local cases = {
          { { Text = { ErrCode = "0" } }, "Text.ErrCode: expected integer" },
          { { Text = "x" }, "Text: expected table" },
          { { Text = { ErrCode = 0, LivenessDetail = { 1 } } }, "Text.LivenessDetail: expected a list of objects" },
          { { Error = { Code = "InternalError" } }, "Error: a failed GetEidResult call carries no result" },
          { { RequestId = 5 }, "RequestId: expected string, got number" },
        }
        for _, c in ipairs(cases) do
          local ok, err = pcall(function() return ledger:record(TOK, c[1]) end)
          assert.is_false(ok)
          assert.equals("bad argument #2 to 'record' (" .. c[2] .. ")", err:match("bad argument.*$"))
        end
        assert.equals("issued", ledger:get(TOK).state)
        assert.equals(0, ledger:get(TOK).pulls)
      end)
    end)

    describe("consume", function()
      it("succeeds exactly once", function()
        issue()
        assert.equals("pending", code_of(ledger:consume(TOK, "user-42")))
        assert(ledger:record(TOK, response(0, { attempt(true) })))
        assert.equals("wrong_subject", code_of(ledger:consume(TOK, "user-43")))
        now = T0 + 99
        local rec = assert(ledger:consume(TOK, "user-42"))
        assert.equals("consumed", rec.state)
        assert.equals(T0 + 99, rec.consumed_at)
        local v, err = ledger:consume(TOK, "user-42")
        assert.is_nil(v)
        assert.equals("consumed", err.code)
        assert.equals("token: already consumed", err.message)
      end)

      it("consumes a failed verdict too, and refuses expired tokens", function()
        issue("F1")
        issue("E1")
        assert(ledger:record("F1", response(2006, { attempt(true) })))
        assert.equals("consumed", ledger:consume("F1", "user-42").state)
        now = T0 + 600
        assert.equals("expired", code_of(ledger:consume("E1", "user-42")))
        assert.equals("unknown_token", code_of(ledger:consume("nope", "user-42")))
      end)

      it("closes a token Tencent called expired (ErrCode 15) exactly once, after our TTL too", function()
        issue("E2") -- Tencent's 15 before our TTL
        issue("E3") -- our TTL first, then the last pull says 15
        issue("E4") -- our TTL, and Tencent has no verdict
        assert.equals("expired", ledger:record("E2", response(15)).state)
        now = T0 + 600
        assert.same({ expired = 2, abandoned = 0 }, ledger:expire())
        assert.is_nil(ledger:get("E3").ErrCode)
        local rec = assert(ledger:record("E3", response(15)))
        assert.same({ "expired", 15 }, { rec.state, rec.ErrCode })
        assert(ledger:record("E4", {}))
        assert.equals("wrong_subject", code_of(ledger:consume("E3", "user-43")))
        for _, tok in ipairs { "E2", "E3" } do
          rec = assert(ledger:consume(tok, "user-42"))
          assert.same({ "consumed", 15 }, { rec.state, rec.ErrCode })
          assert.equals("consumed", code_of(ledger:consume(tok, "user-42")))
        end
        assert.equals("expired", code_of(ledger:consume("E4", "user-42")))
        -- a late 15 does not touch a settled verdict
        assert.equals("consumed", ledger:record("E2", response(15)).state)
      end)
    end)

    describe("due", function()
      it("lists tokens to pull, oldest first", function()
        for i = 1, 5 do
          now = T0 + i
          issue("D" .. i)
        end
        assert(ledger:record("D2", response(0, { attempt(true) })))
        assert(ledger:record("D4", response(1001, { attempt(false) })))
        local list = ledger:due(10)
        local toks = {}
        for i, r in ipairs(list) do toks[i] = r.EidToken end
        assert.same({ "D1", "D3", "D4", "D5" }, toks)
        assert.equals(2, #ledger:due(2))
        -- a failed verdict gets one pull after the TTL (the attempts made
        -- just before it), then it is final
        now = T0 + 4 + 600
        toks = {}
        for i, r in ipairs(ledger:due(10)) do toks[i] = r.EidToken end
        assert.same({ "D1", "D3", "D4", "D5" }, toks)
        assert(ledger:record("D4", response(1001, { attempt(false) })))
        toks = {}
        for i, r in ipairs(ledger:due(10)) do toks[i] = r.EidToken end
        assert.same({ "D1", "D3", "D5" }, toks)
      end)

      it("keeps a consumed failure due and records what follows: late verdicts, charges", function()
        -- Issue 14: a user may retry on a token whose failure was consumed.
        assert(issue())
        assert(ledger:record(TOK, response(2016, { attempt(true) })))
        local rec = assert(ledger:consume(TOK, "user-42"))
        assert.same({ "consumed", 2016, 1, 1 }, { rec.state, rec.ErrCode, rec.billable, rec.settled_billable })
        assert.equals(1, #ledger:due(10))
        assert.equals(1, ledger:stats().due)
        -- an older response arriving late changes nothing
        rec = assert(ledger:record(TOK, response(1001, {})))
        assert.same({ 2016, 1 }, { rec.ErrCode, rec.billable })
        assert.is_nil(rec.late_ErrCode)
        -- a second failure with another code: a late verdict, not a pass
        rec = assert(ledger:record(TOK, response(2006, { attempt(true), attempt(true) })))
        assert.same({ "consumed", 2016, 2006, 2, 1 },
          { rec.state, rec.ErrCode, rec.late_ErrCode, rec.billable, rec.settled_billable })
        assert.is_nil(rec.late)
        -- the pass: stored once as late, flagged only on the call that stored it
        local details = { attempt(true), attempt(true), attempt(true) }
        rec = assert(ledger:record(TOK, response(0, details)))
        assert.same({ 2016, 0, 3, true }, { rec.ErrCode, rec.late_ErrCode, rec.billable, rec.late })
        rec = assert(ledger:record(TOK, response(0, details)))
        assert.is_nil(rec.late)
        assert.is_nil(ledger:get(TOK).late)
        -- a pass is final: no longer due, and a later failure cannot undo it
        assert.equals(0, #ledger:due(10))
        rec = assert(ledger:record(TOK, response(2016, { attempt(true), attempt(true), attempt(true), attempt(true) })))
        assert.same({ 0, 4 }, { rec.late_ErrCode, rec.billable })
        assert.equals("consumed", code_of(ledger:consume(TOK, "user-42")))
      end)

      it("keeps a token due while its last answer had no verdict, to the end of the window", function()
        -- 2017 (service-side, transient): look again later on the same token.
        assert(issue())
        local rec = assert(ledger:record(TOK, response(2017, { attempt(false) })))
        assert.same({ "issued", true }, { rec.state, rec.retry_later })
        now = T0 + 600
        assert(ledger:expire())
        assert(ledger:record(TOK, response(2017, { attempt(false) })))
        now = T0 + 86400 -- a day later, pulled since the TTL, still no verdict: still due
        assert.equals(1, #ledger:due(10))
        rec = assert(ledger:record(TOK, response(2016, { attempt(false), attempt(true) })))
        assert.same({ "failed", 2016, 1 }, { rec.state, rec.ErrCode, rec.billable })
        assert.is_nil(rec.retry_later)
        assert.equals(0, #ledger:due(10))
        -- the window closes whatever the answers
        assert(issue("W-1"))
        assert(ledger:record("W-1", response(1006, {})))
        assert.equals(1, #ledger:due(10))
        now = now + 3 * 86400
        assert.equals(0, #ledger:due(10))
      end)

      it("gives a consumed failure one pull after the TTL, then closes it", function()
        assert(issue())
        assert(ledger:record(TOK, response(2016, { attempt(true) })))
        assert(ledger:consume(TOK, "user-42"))
        now = T0 + 600
        assert.equals(1, #ledger:due(10))
        assert(ledger:expire())
        local rec = assert(ledger:record(TOK, response(2016, { attempt(true), attempt(true) })))
        assert.same({ 2, 2016 }, { rec.billable, rec.ErrCode })
        assert.equals(0, #ledger:due(10))
        -- a consumed pass or Tencent's expiry is never due
        assert(issue("P-1"))
        assert(ledger:record("P-1", response(0, { attempt(true) })))
        assert(ledger:consume("P-1", "user-42"))
        assert(issue("X-1"))
        assert(ledger:record("X-1", response(15, {})))
        assert(ledger:consume("X-1", "user-42"))
        assert.equals(0, #ledger:due(10))
      end)
    end)

    describe("attempts", function()
      local function detail(seq, ms, code, charged)
        return { Seq = seq, ReqTime = tostring(ms), Errcode = code, IsNeedCharge = charged,
          Sim = "41.08", LivenessMode = 3, CompareLibType = "公安库", Name = "a name", Idcard = "an id" }
      end

      it("stores every LivenessDetail entry once per Seq, ordered by ReqTime", function()
        assert(issue())
        local d1 = detail("s-1", T0 * 1000 + 5, 2016, true)
        assert(ledger:record(TOK, response(2016, { d1 })))
        -- a re-pull with the same entry and a new one; the first is not doubled
        local d2 = detail("s-2", T0 * 1000 + 90000, 0, true)
        local rec = assert(ledger:record(TOK, response(0, { d1, d2 })))
        assert.equals(2, rec.billable)
        local got = assert(ledger:attempts(TOK))
        assert.same({
          { Seq = "s-1", ReqTime = T0 * 1000 + 5, Errcode = 2016, IsNeedCharge = true, Sim = "41.08",
            LivenessMode = 3, CompareLibType = "公安库" },
          { Seq = "s-2", ReqTime = T0 * 1000 + 90000, Errcode = 0, IsNeedCharge = true, Sim = "41.08",
            LivenessMode = 3, CompareLibType = "公安库" },
        }, got)
        -- an entry re-sent with other values keeps the first (Seq is the key)
        local changed = detail("s-1", T0 * 1000 + 5, 1001, false)
        assert(ledger:record(TOK, response(0, { changed, d2 })))
        assert.same({ 2016, true }, { ledger:attempts(TOK)[1].Errcode, ledger:attempts(TOK)[1].IsNeedCharge })
        assert.equals("unknown_token", code_of(ledger:attempts("never")))
      end)

      it("keeps no entry without a usable Seq, and marks intention", function()
        assert(ledger:issue { EidToken = "I-1", MerchantId = "m", subject = "u", intention = true })
        assert.is_true(ledger:get("I-1").intention)
        assert(issue("I-2"))
        assert.is_false(ledger:get("I-2").intention)
        local bad = detail(nil, T0 * 1000, 2016, true)
        local ctl = detail("a\nb", T0 * 1000, 2016, true)
        local rec = assert(ledger:record("I-2", { Text = { ErrCode = 2016, LivenessDetail = { bad, ctl } },
          IsVerifyIntention = true }))
        assert.same({ 2, 2, true }, { rec.attempts, rec.billable, rec.intention })
        assert.same({}, assert(ledger:attempts("I-2")))
        assert.has_error(function() ledger:issue { EidToken = "I-3", MerchantId = "m", subject = "u", intention = 1 } end,
          "bad argument #1 to 'issue' (intention: expected boolean)")
      end)
    end)

    describe("expire", function()
      it("expires after the TTL, gives one last pull, abandons after the window", function()
        issue("X1")
        now = T0 + 1
        issue("X2")
        now = T0 + 600
        assert.same({ expired = 1, abandoned = 0 }, ledger:expire())
        assert.equals("expired", ledger:get("X1").state)
        assert.equals(2, #ledger:due(10))
        assert(ledger:record("X1", {}))
        assert.equals(1, #ledger:due(10))
        now = T0 + 3 * 86400 + 1
        assert.same({ expired = 0, abandoned = 2 }, ledger:expire())
        assert.same({}, ledger:due(10))
        -- a late verdict still lands (reconciliation needs it)
        assert.equals("passed", ledger:record("X2", response(0, { attempt(true) })).state)
      end)
    end)

    describe("stats and export", function()
      it("count states and billable attempts; export a day", function()
        for i = 1, 4 do
          now = T0 + i * 3600
          issue("S" .. i)
        end
        assert(ledger:record("S1", response(0, { attempt(true) })))
        assert(ledger:record("S2", response(2006, { attempt(true), attempt(true) })))
        assert(ledger:consume("S1", "user-42"))
        local s = ledger:stats()
        -- S2's failure is final (TTL over): due are S3 and S4
        assert.same({ issued = 2, passed = 0, failed = 1, consumed = 1, expired = 0, abandoned = 0,
          total = 4, billable = 3, due = 2 }, s)
        local rows = ledger:export { from = T0 + 3600, to = T0 + 3 * 3600 }
        assert.equals(2, #rows)
        assert.equals("S1", rows[1].EidToken)
        assert.equals("S2", rows[2].EidToken)
        assert.equals(2006, rows[2].ErrCode)
        assert.equals(4, #ledger:export { from = 0 })
        assert.equals(4, #ledger:export()) -- no range: every token
        local later = ledger:export { from = T0 + 3 * 3600 } -- no 'to': open-ended
        assert.same({ "S3", "S4" }, { later[1].EidToken, later[2].EidToken, later[3] })
        local ok, err = pcall(ledger.export, ledger, { from = T0 + 1, to = T0 })
        assert.is_false(ok)
        assert.matches("from: after 'to'", err, 1, true)
      end)
    end)

    describe("payloads", function()
      it("are stored only encrypted, and read back with the key", function()
        local l2 = open { payload_key = KEY }
        assert(l2:issue { EidToken = "P1", MerchantId = "m", subject = "s" })
        local body = '{"Text":{"ErrCode":0,"Name":"a name"}}'
        local rec = assert(l2:record("P1", response(0), body))
        assert.is_true(rec.has_payload)
        assert.equals(body, l2:payload("P1"))
        assert(l2:issue { EidToken = "P2", MerchantId = "m", subject = "s" })
        assert.equals("pending", code_of(l2:payload("P2")))
        assert.equals("unknown_token", code_of(l2:payload("P3")))
        l2:close()
        local ok, err = pcall(ledger.record, ledger, TOK, response(0), "x")
        assert.is_false(ok)
        assert.matches("payload: no payload key configured", err)
      end)

      it("are kept for every recorded response with keep_payloads", function()
        local l3 = open { keep_payloads = true, payload_key_hex = ("ab"):rep(32) }
        assert(l3:issue { EidToken = "K1", MerchantId = "m", subject = "s" })
        local resp = response(2016)
        assert(l3:record("K1", resp))
        local cjson = require "cjson"
        assert.same(resp, cjson.decode((assert(l3:payload("K1")))))
        -- An explicit payload still wins.
        assert(l3:issue { EidToken = "K2", MerchantId = "m", subject = "s" })
        assert(l3:record("K2", resp, "explicit"))
        assert.equals("explicit", l3:payload("K2"))
        -- An answer given as JSON text is kept as given, envelope and all.
        local text = cjson.encode { Response = resp }
        assert(l3:issue { EidToken = "K3", MerchantId = "m", subject = "s" })
        assert.equals("failed", assert(l3:record("K3", text)).state)
        assert.equals(text, l3:payload("K3"))
        l3:close()
        local core = require "eidkit.core"
        local ok, err = pcall(core.ledger_open, "sqlite::memory:", { payload_encoder = cjson.encode })
        assert.is_false(ok)
        assert.matches("payload_encoder: needs payload_key", err)
      end)
    end)

    describe("sweep", function()
      it("pulls every due token through the injected puller", function()
        issue("W1")
        issue("W2")
        issue("W3")
        local pulled = {}
        local report = assert(ledger:sweep(function(tok)
          pulled[#pulled + 1] = tok
          if tok == "W1" then return response(0, { attempt(true) }) end
          if tok == "W2" then return nil, "timeout" end
          error("boom")
        end))
        assert.same({ "W1", "W2", "W3" }, pulled)
        assert.equals(3, report.due)
        assert.equals(1, report.recorded)
        assert.equals(2, report.failed)
        assert.same({ EidToken = "W2", message = "pull failed: timeout" }, report.failures[1])
        assert.equals("passed", ledger:get("W1").state)
      end)
    end)
  end)
end

describe("eidkit.ledger.open", function()
  it("refuses malformed URLs naming what is wrong", function()
    local ok, err = pcall(ledger_mod.open, "mysql://x")
    assert.is_false(ok)
    assert.matches("url: unknown scheme %(expected sqlite:PATH or redis://HOST:PORT/DB%)", err)
    ok, err = pcall(ledger_mod.open, "redis://h:70000/0")
    assert.is_false(ok)
    assert.matches("url: redis port must be 1..65535", err)
  end)

  it("returns unavailable when Redis cannot be reached", function()
    local v, err = ledger_mod.open("redis://127.0.0.1:1/0", { timeout_ms = 500 })
    assert.is_nil(v)
    assert.equals("unavailable", err.code)
    assert.is_true(err.retryable)
  end)

  it("reads the payload key from the environment only when asked", function()
    local ok, err = pcall(ledger_mod.open, "sqlite::memory:", { keep_payloads = true })
    if os.getenv(ledger_mod.PAYLOAD_KEY_ENV) == nil then
      assert.is_false(ok)
      assert.matches("keep_payloads: no payload key; set EIDKIT_LEDGER_KEY to 64 hex digits", err)
    end
    ok, err = pcall(ledger_mod.open, "sqlite::memory:", { payload_key_hex = "zz" })
    assert.is_false(ok)
    assert.matches("payload_key_hex: expected 64 hex digits", err)
    assert(ledger_mod.open("sqlite::memory:", { payload_key_hex = ("ab"):rep(32) }))
  end)
end)

describe("eidkit.ledger.day_range", function()
  it("gives the UTC day", function()
    assert.same({ 1735603200, 1735689600 }, { ledger_mod.day_range("2024-12-31") })
    assert.same({ nil, "no such date" }, { ledger_mod.day_range("2023-02-29") })
    assert.same({ nil, "expected a date YYYY-MM-DD" }, { ledger_mod.day_range("31.12.2024") })
  end)
end)
