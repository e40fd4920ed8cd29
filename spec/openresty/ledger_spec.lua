-- eidkit.openresty.ledger in a real nginx worker (Debian's nginx, its Lua
-- module, lua-resty-redis) against a real redis-server, next to the C Redis
-- backend (eidkit.ledger from Lua 5.4) on the same server: the same calls
-- give the same records and errors (record through both digests of a
-- GetEidResult answer; due, export, expire, stats, attempts and the sweep
-- on data either host wrote), tokens cross between them, the scripts
-- are the C backend's own, Redis going away is `unavailable` and then
-- recovers, connections are pooled, and a worker waiting on Redis serves
-- other requests meanwhile. nginx or redis-server missing is a failure.
local scratch = require "support.scratch"
local cjson = require "cjson"
local ledger_mod = require "eidkit.ledger"
local nginx = require "support.nginx"
local proc = require "support.proc"
local redis = require "support.redis"

local T0 = 1735660800
-- nginx reads content_by_lua_file relative to its prefix: an absolute path.
local root = proc.output("cd " .. proc.quote(debug.getinfo(1, "S").source:match("^@(.*)/spec/openresty/[^/]*$")
  or ".") .. " && pwd"):gsub("%s+$", "")

-- Bodies up to 1 MB stay in memory (ngx.req.get_body_data).
local SERVER = ([[
    client_body_buffer_size 1m;
    location = /ledger { content_by_lua_file %s/spec/support/orledger_worker.lua; }
    location = /shas { content_by_lua_file %s/spec/support/orledger_worker.lua; }
    location = /timed { content_by_lua_file %s/spec/support/orledger_worker.lua; }
]]):format(root, root, root)

local function curl(args)
  local words = { "curl", "-s", "--max-time", "20" }
  for _, a in ipairs(args) do words[#words + 1] = proc.quote(a) end
  return proc.output(table.concat(words, " "))
end

local function response(code, rid)
  return { Text = { ErrCode = code, LivenessDetail = { { Seq = "1", IsNeedCharge = true, Errcode = code } } },
    RequestId = rid or "req-1" }
end

-- An error table as data (the metatable gives only __tostring).
local function plain(err)
  if err == nil then return nil end
  return { code = err.code, message = err.message, retryable = err.retryable }
end

describe("eidkit.openresty.ledger", function()
  local srv, rds, url, c_ledger, now
  local prefix_n = 0

  -- One call in the nginx worker: {res, err} as data, or raises with what
  -- the worker raised.
  local extra -- more request fields for the next call (sweep's answers)
  local function call(op, ...)
    local req = { url = url, now = now, op = op, args = { ... } }
    for k, v in pairs(extra or {}) do req[k] = v end
    extra = nil
    local body = cjson.encode(req)
    local file = scratch.file()
    local f = assert(io.open(file, "wb"))
    f:write(body)
    f:close()
    local out = curl { "-X", "POST", "--data-binary", "@" .. file, srv.url .. "/ledger" }
    os.remove(file)
    local okd, t = pcall(cjson.decode, out)
    if not okd then error("worker answered " .. out .. "\nerror.log:\n" .. srv:error_log(), 2) end
    if t.raised then error("worker raised: " .. t.raised, 2) end
    if t.res == cjson.null then t.res = nil end
    return t
  end

  -- n requests to /timed at once (curl's parallel mode), for tokens
  -- NAME1..NAMEn on the ledger at ledger_url (query: more of /timed's
  -- arguments), while Redis holds writes for pause_ms: curl's output, one
  -- JSON answer a request.
  local function burst(ledger_url, name, n, pause_ms, query)
    local escaped = ledger_url:gsub("[^%w%-%.]", function(c) return ("%%%02X"):format(c:byte()) end)
    local list = {}
    for i = 1, n do
      list[i] = ("url = \"%s/timed?url=%s&tok=%s%d%s\"\n"):format(srv.url, escaped, name, i, query or "")
    end
    local cfg = scratch.file()
    local f = assert(io.open(cfg, "wb"))
    f:write(table.concat(list))
    f:close()
    assert.equals("OK", rds:cli("CLIENT", "PAUSE", tostring(pause_ms), "WRITE"):match("OK"))
    local out = proc.output(("curl -s --no-progress-meter -Z --parallel-immediate --parallel-max %d --max-time 20 -K %s")
      :format(n, proc.quote(cfg)))
    os.remove(cfg)
    return out
  end

  local function c_call(op, ...)
    local res, err = c_ledger[op](c_ledger, ...)
    if op == "take" and res ~= nil then return { res = res, retry = err and ("%.17g"):format(err) } end
    return { res = res, err = plain(err) }
  end

  setup(function()
    assert(redis.available, "redis-server is not installed: run scripts/setup-deps")
    rds = redis.start()
    srv = nginx.start { server = SERVER }
  end)

  teardown(function()
    if c_ledger then c_ledger:close() end
    if srv then srv:stop() end
    if rds then rds:destroy() end
  end)

  before_each(function()
    -- A fresh key prefix per test: the nginx worker keeps one ledger per URL.
    prefix_n = prefix_n + 1
    url = rds:url(0, ("or%d-%d:"):format(os.time(), prefix_n))
    now = T0
    if c_ledger then c_ledger:close() end
    c_ledger = assert(ledger_mod.open(url, { clock = function() return now end }))
  end)

  describe("gives the C Redis backend's answers", function()
    -- Each case: the calls, run once through the C backend (Lua 5.4) and
    -- once through the worker, each on its own token; `verdict` records a
    -- result through the C backend on both tokens (record's own comparison
    -- is the "record" block below).
    local cases = {
      { "issue", { MerchantId = "m1", subject = "alice", Extra = "order-1" } },
      { "issue", { MerchantId = "m1", subject = "alice" } }, -- exists
      { "get" },
      { "claim", "alice" },
      { "claim", "bob" },
      { "consume", "bob" },
      { "consume", "alice" }, -- pending: no verdict yet
      { "verdict", 0 },
      { "claim", "alice" },
      { "consume", "alice" },
      { "consume", "alice" }, -- consumed
      { "claim", "alice" },
      { "get" },
      { "take", 0.1, 2 },
      { "take", 0.1, 2 },
      { "take", 0.1, 2 }, -- empty: false, the wait
      { "give", 0.1, 2 }, -- one back
      { "take", 0.1, 2 }, -- so this one is allowed
      { "give", 0.1, 2 },
      { "give", 0.1, 2 },
      { "give", 0.1, 2 }, -- never above burst:
      { "take", 0.1, 2 },
      { "take", 0.1, 2 },
      { "take", 0.1, 2 }, -- empty again
    }

    local function run_cases(tok, step)
      local out = {}
      for i, c in ipairs(cases) do
        local op, a = c[1], c[2]
        local r
        if op == "verdict" then
          r = c_call("record", tok, response(a))
        elseif op == "issue" then
          local t = { EidToken = tok }
          for k, v in pairs(a) do t[k] = v end
          r = step("issue", t)
        elseif op == "get" then
          r = step("get", tok)
        elseif op == "take" or op == "give" then
          -- The bucket's clock in ms, so both sides wait the same.
          r = step(op, "bucket-" .. tok, a, c[3], now * 1000)
          r.res = { r.res, r.retry }
        else
          r = step(op, tok, a)
        end
        now = now + 1
        out[i] = { res = r.res, err = r.err }
        if type(r.res) == "table" and r.res.EidToken then r.res.EidToken = "TOKEN" end
      end
      return out
    end

    it("for issue, get, claim and consume, record by record and error by error", function()
      local c_out = run_cases("C-TOKEN-1", c_call)
      now = T0
      local n_out = run_cases("N-TOKEN-1", call)
      for i = 1, #cases do
        assert.same(c_out[i], n_out[i], ("case %d (%s)"):format(i, cases[i][1]))
      end
      -- The errors are the ones a flow checks for.
      assert.equals("exists", n_out[2].err.code)
      assert.equals("wrong_subject", n_out[5].err.code)
      assert.equals("pending", n_out[7].err.code)
      assert.equals("consumed", n_out[11].err.code)
      assert.equals("consumed", n_out[13].res.state)
      assert.same({ true }, n_out[14].res)
      assert.is_false(n_out[16].res[1])
      assert.is_true(tonumber(n_out[16].res[2]) > 0)
      -- give: a token back, never above burst (2)
      assert.same({ true }, n_out[17].res)
      assert.same({ true }, n_out[18].res)
      assert.same({ true }, n_out[22].res)
      assert.same({ true }, n_out[23].res)
      assert.is_false(n_out[24].res[1])
    end)

    it("for unknown and expired tokens", function()
      for _, step in ipairs { c_call, call } do
        assert.same({ code = "unknown_token", message = "token: unknown", retryable = false },
          step("get", "NO-SUCH-TOKEN").err)
        assert.same({ code = "unknown_token", message = "token: unknown", retryable = false },
          step("consume", "NO-SUCH-TOKEN", "alice").err)
      end
      -- A malformed token (it usually comes from a user) is not in the
      -- ledger: unknown_token with the check's message, as from eidkit.core.
      for _, op in ipairs { "get", "claim", "consume", "attempts" } do
        local c = c_call(op, "bad token{}", "alice")
        assert.equals("unknown_token", c.err.code)
        assert.same(c.err, call(op, "bad token{}", "alice").err, op)
      end
      assert.is_true(c_call("issue", { EidToken = "C-EXP", MerchantId = "m", subject = "a", expires_at = T0 + 10 }).res)
      assert.is_true(call("issue", { EidToken = "N-EXP", MerchantId = "m", subject = "a", expires_at = T0 + 10 }).res)
      now = T0 + 20
      for _, op in ipairs { "claim", "consume" } do
        local c, n = c_call(op, "C-EXP", "a"), call(op, "N-EXP", "a")
        assert.equals("expired", n.err.code)
        assert.same(c.err, n.err)
      end
    end)

    it("raises on misuse as the C binding does, naming the field", function()
      local ok, msg = pcall(function() return call("issue", { EidToken = "bad token{}", MerchantId = "m", subject = "a" }) end)
      assert.is_false(ok)
      assert.matches("bad argument #1 to 'issue' %(token:", msg)
      local ok2 = pcall(c_ledger.issue, c_ledger, { EidToken = "bad token{}", MerchantId = "m", subject = "a" })
      assert.is_false(ok2)
    end)
  end)

  describe("record", function()
    -- One table of GetEidResult answers, recorded through the Lua 5.4
    -- binding's digest (eidkit.ledger on the C Redis backend) and through
    -- the nginx ledger's (cjson text -> eid_ledger_digest_json ->
    -- eid_ledger_redis_record_args), each on its own token: the records,
    -- the stored attempts and the raised errors must be the same.
    local null = cjson.null
    local function details(n, charged_every)
      local t = {}
      for i = 1, n do
        t[i] = { Seq = ("s-%03d"):format(i), ReqTime = tostring(1735660800000 + i), Errcode = i % 3 == 0 and 1001 or 0,
          IsNeedCharge = i % charged_every == 0, Sim = "9" .. (i % 10) .. ".5", LivenessMode = i % 4,
          CompareLibType = "公安", Name = "NAME-NEVER-STORED", Idcard = "IDCARD-NEVER-STORED" }
      end
      return t
    end
    local answers = {
      { "pending", { Text = { LivenessDetail = {} }, RequestId = "r-pend" } },
      { "pending, no Text", { RequestId = "r-none" } },
      { "passed, one detail, ReqTime as string", { Text = { ErrCode = 0, LivenessDetail = {
        { Seq = "a1", ReqTime = "1735660800123", Errcode = 0, IsNeedCharge = true, Sim = "95.27",
          LivenessMode = 1, CompareLibType = "权威库" } } }, RequestId = "r-pass" } },
      { "failed, many details", { Text = { ErrCode = 2006, LivenessDetail = details(7, 2) }, RequestId = "r-f" } },
      { "more than 100 details", { Text = { ErrCode = 0, LivenessDetail = details(130, 3) }, RequestId = "r-130" } },
      { "zero details", { Text = { ErrCode = 1001, LivenessDetail = {} } } },
      { "BizTokenExpired", { Error = { Code = "InvalidParameterValue.BizTokenExpired", Message = "x" },
        RequestId = "r-exp" } },
      { "no verdict (17)", { Text = { ErrCode = 17, LivenessDetail = details(1, 1) }, RequestId = "r-17" } },
      { "a Response wrapper, intention", { Response = { Text = { ErrCode = 0, LivenessDetail = details(2, 1) },
        IsVerifyIntention = true, RequestId = "r-wrap" } } },
      { "JSON null members", { Error = null, Text = { ErrCode = null, LivenessDetail = null }, RequestId = "r-null" } },
      { "null Text", { Text = null, RequestId = "r-nt" } },
      { "odd details", { Text = { ErrCode = 0, LivenessDetail = {
        { Seq = ("x"):rep(65), IsNeedCharge = true },           -- Seq too long: counted, not stored
        { Seq = 7, IsNeedCharge = "yes" },                       -- Seq not text: not stored
        { Seq = "neg", ReqTime = -5, Errcode = null, Sim = "9\0019.1\127", LivenessMode = "2" },
        { Seq = "bad-time", ReqTime = "soon", Errcode = "12", Sim = ("9"):rep(40), CompareLibType = 5 },
        { Seq = "float", ReqTime = 1735660800000.5, Errcode = 1.0, IsNeedCharge = true },
      } }, RequestId = "r-odd" } },
      -- Raised, naming the member.
      { "ErrCode as a string", { Text = { ErrCode = "0" } }, raises = "Text.ErrCode" },
      { "ErrCode not whole", { Text = { ErrCode = 1.5 } }, raises = "Text.ErrCode" },
      { "Text not a table", { Text = "passed" }, raises = "Text" },
      { "LivenessDetail not a list", { Text = { ErrCode = 0, LivenessDetail = "x" } }, raises = "Text.LivenessDetail" },
      { "LivenessDetail of numbers", { Text = { ErrCode = 0, LivenessDetail = { 1, 2 } } }, raises = "Text.LivenessDetail" },
      { "another Error", { Error = { Code = "InternalError" } }, raises = "Error" },
      { "Error not a table", { Error = "x" }, raises = "Error" },
      { "RequestId a number", { Text = { ErrCode = 0 }, RequestId = 5 }, raises = "RequestId" },
      { "RequestId null", { Text = { ErrCode = 0 }, RequestId = null }, raises = "RequestId" },
      { "RequestId with a space", { Text = { ErrCode = 0 }, RequestId = "a b" }, raises = "request_id" },
    }

    -- What the binding raised, as "(field: message)".
    local function raised(msg)
      return tostring(msg):match("bad argument #2 to 'record' %((.*)%)")
    end

    local function attempts(tok)
      local list = assert(c_ledger:attempts(tok))
      for _, a in ipairs(list) do assert.is_nil(a.Name) assert.is_nil(a.Idcard) end
      return list
    end

    -- Each answer goes in as a table and as its JSON text (what the flow
    -- hands over when the client kept the body it decoded), on both hosts.
    for i, case in ipairs(answers) do
      it(("stores the same as the C backend: %s"):format(case[1]), function()
        local ctok, ntok = "RC-" .. i, "RN-" .. i
        local text = cjson.encode(case[2])
        local toks = { ctok, ntok, "RCT-" .. i, "RNT-" .. i }
        for _, tok in ipairs(toks) do assert(c_ledger:issue { EidToken = tok, MerchantId = "m", subject = "a" }) end
        now = T0 + 30
        if case.raises then
          local okc, cmsg = pcall(c_ledger.record, c_ledger, ctok, case[2])
          assert.is_false(okc)
          local okn, nmsg = pcall(call, "record", ntok, case[2])
          assert.is_false(okn)
          local okct, ctmsg = pcall(c_ledger.record, c_ledger, toks[3], text)
          assert.is_false(okct)
          local oknt, ntmsg = pcall(call, "record", toks[4], text)
          assert.is_false(oknt)
          local cm, nm = raised(cmsg), raised(nmsg)
          assert(cm, cmsg)
          assert(nm, nmsg)
          assert.equals(case.raises, cm:match("^([^:]+):"))
          assert.equals(case.raises, nm:match("^([^:]+):"))
          -- The words too, but for the name of the wrong type (the binding
          -- sees userdata where JSON has null).
          if not cm:find("got", 1, true) then assert.equals(cm, nm) end
          -- Text is read by the one digest on both hosts: the same words.
          assert.equals(nm, raised(ctmsg))
          assert.equals(nm, raised(ntmsg))
          -- Nothing was recorded on any.
          for _, tok in ipairs(toks) do assert.equals(0, assert(c_ledger:get(tok)).pulls) end
          return
        end
        local c = c_call("record", ctok, case[2])
        local n = call("record", ntok, case[2])
        local ct = c_call("record", toks[3], text)
        local nt = call("record", toks[4], text)
        assert.is_nil(c.err)
        assert.is_nil(n.err)
        assert.is_nil(ct.err)
        assert.is_nil(nt.err)
        c.res.EidToken, n.res.EidToken, ct.res.EidToken, nt.res.EidToken = "TOKEN", "TOKEN", "TOKEN", "TOKEN"
        assert.same(c.res, n.res)
        assert.same(c.res, ct.res)
        assert.same(c.res, nt.res)
        assert.same(attempts(ctok), attempts(toks[3]))
        assert.same(attempts(ctok), attempts(toks[4]))
        assert.same(c_call("get", ctok).res.request_ids, n.res.request_ids)
        assert.same(attempts(ctok), attempts(ntok))
        -- And C reads the nginx-recorded token as its own.
        local cg, ng = c_call("get", ctok).res, c_call("get", ntok).res
        cg.EidToken, ng.EidToken = "TOKEN", "TOKEN"
        assert.same(cg, ng)
      end)
    end

    it("applies a sequence of answers as C does (retry on the token, consume, late verdict)", function()
      assert(c_ledger:issue { EidToken = "SEQ-C", MerchantId = "m", subject = "a" })
      assert(c_ledger:issue { EidToken = "SEQ-N", MerchantId = "m", subject = "a" })
      local steps = {
        { Text = { ErrCode = 17 }, RequestId = "q1" },
        { Text = { ErrCode = 2006, LivenessDetail = details(1, 1) }, RequestId = "q2" },
        "consume",
        { Text = { ErrCode = 2006, LivenessDetail = details(1, 1) }, RequestId = "q2" },
        { Text = { ErrCode = 0, LivenessDetail = details(2, 1) }, RequestId = "q3" },
        { Text = { ErrCode = 1001, LivenessDetail = details(3, 1) }, RequestId = "q4" },
      }
      for i, st in ipairs(steps) do
        now = T0 + 10 * i
        local c, n
        if st == "consume" then
          c, n = c_call("consume", "SEQ-C", "a"), call("consume", "SEQ-N", "a")
        else
          c, n = c_call("record", "SEQ-C", st), call("record", "SEQ-N", st)
        end
        assert.is_nil(n.err)
        c.res.EidToken, n.res.EidToken = "TOKEN", "TOKEN"
        assert.same(c.res, n.res, "step " .. i)
      end
      local last = call("get", "SEQ-N").res
      assert.equals(0, last.late_ErrCode)
      assert.equals(2006, last.ErrCode)
    end)

    it("keeps the same 16 most recent RequestIds as C, each once", function()
      assert(c_ledger:issue { EidToken = "IDS-C", MerchantId = "m", subject = "a" })
      assert(c_ledger:issue { EidToken = "IDS-N", MerchantId = "m", subject = "a" })
      local c, n
      for i = 1, 20 do
        now = T0 + i
        for _, rid in ipairs { ("r%d-x"):format(i), ("r%d-x"):format(math.max(1, i - 2)) } do
          c, n = c_call("record", "IDS-C", { RequestId = rid }), call("record", "IDS-N", { RequestId = rid })
          assert.is_nil(n.err)
        end
      end
      local want = {}
      for i = 5, 20 do want[#want + 1] = ("r%d-x"):format(i) end
      assert.same(want, n.res.request_ids)
      assert.same(c.res.request_ids, n.res.request_ids)
      assert.equals(40, n.res.pulls)
    end)

    it("answers unknown_token for a token never issued or malformed, as C", function()
      local resp = { Text = { ErrCode = 0 } }
      assert.same(c_call("record", "NEVER", resp).err, call("record", "NEVER", resp).err)
      assert.same(c_call("record", "bad token", resp).err, call("record", "bad token", resp).err)
      assert.equals("unknown_token", call("record", "bad token", resp).err.code)
    end)

    it("leaves the due index like C once a token is settled", function()
      assert(c_ledger:issue { EidToken = "D-N", MerchantId = "m", subject = "a" })
      assert.equals("1", rds:cli("ZSCORE", url:match("prefix=(.*)$") .. "due", "D-N"):match("^(%d)"))
      assert.is_nil(call("record", "D-N", { Text = { ErrCode = 0 } }).err)
      assert.equals("", (rds:cli("ZSCORE", url:match("prefix=(.*)$") .. "due", "D-N"):gsub("%s+", "")))
    end)

    it("refuses a payload: the nginx ledger holds no payload key", function()
      assert(c_ledger:issue { EidToken = "PL-N", MerchantId = "m", subject = "a" })
      local ok, msg = pcall(call, "record", "PL-N", { Text = { ErrCode = 0 } }, "bytes")
      assert.is_false(ok)
      assert.matches("bad argument #3 to 'record' %(payloads are not stored", msg)
    end)
  end)

  describe("due, export, expire, stats, attempts and sweep", function()
    -- The same tokens written twice: on prefix A by the C backend alone, on
    -- prefix B by the nginx ledger (issue, record, consume). Then every
    -- reader is run as C on A, C on B (C reads what nginx wrote), nginx on A
    -- (nginx reads what C wrote) and nginx on B: all four must agree.
    local url_a, url_b, c_b
    local function answer(code, n, rid)
      local d = {}
      for i = 1, n or 0 do d[i] = { Seq = "q" .. i, ReqTime = tostring(1735660800000 + 1000 * i), IsNeedCharge = i % 2 == 1 } end
      return { Text = { ErrCode = code, LivenessDetail = d }, RequestId = rid or "r" }
    end
    local TOKENS = { "P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8", "P9" }
    local script = {
      { "issue", "P1" },
      { "issue", "P2" }, { "record", "P2", answer(17, 1, "r2") },
      { "issue", "P3" }, { "record", "P3", answer(0, 2, "r3") },
      { "issue", "P4" }, { "record", "P4", answer(2006, 3, "r4") },
      { "issue", "P5" }, { "record", "P5", answer(0, 1, "r5") }, { "consume", "P5" },
      { "issue", "P6" }, { "record", "P6", answer(1001, 1, "r6") }, { "consume", "P6" },
      { "issue", "P7", expires_at = T0 + 100 },
      { "issue", "P8" }, { "record", "P8", { Error = { Code = "InvalidParameterValue.BizTokenExpired" }, RequestId = "r8" } },
      { "issue", "P9", expires_at = T0 + 100 }, { "record", "P9", answer(2006, 1, "r9") },
    }

    local function build(step)
      for i, st in ipairs(script) do
        now = T0 + i
        if st[1] == "issue" then
          assert.is_true(step("issue", { EidToken = st[2], MerchantId = "m", subject = "s", expires_at = st.expires_at }).res)
        elseif st[1] == "record" then
          assert.is_nil(step("record", st[2], st[3]).err)
        else
          assert.is_nil(step("consume", st[2], "s").err)
        end
      end
    end

    -- op on all four (ledger, host) pairs; returns their results.
    local function four(op, ...)
      local args = { ... }
      local saved = url
      local out = {}
      out.c_a = c_call(op, ...)
      local c_ledger0 = c_ledger
      c_ledger = c_b
      out.c_b = c_call(op, ...)
      c_ledger = c_ledger0
      url = url_a
      out.n_a = call(op, table.unpack(args))
      url = url_b
      out.n_b = call(op, table.unpack(args))
      url = saved
      return out
    end

    local function agree(op, ...)
      local r = four(op, ...)
      local what = op .. " " .. cjson.encode({ ... })
      assert.is_nil(r.c_a.err, what)
      assert.same(r.c_a.res, r.c_b.res, what .. ": C reading nginx's data")
      assert.same(r.c_a.res, r.n_a.res, what .. ": nginx reading C's data")
      assert.same(r.c_a.res, r.n_b.res, what .. ": nginx reading its own data")
      return r.c_a.res
    end

    local function reads()
      agree("due", 100)
      agree("due", 2)
      agree("export")
      agree("export", { from = T0 + 4, to = T0 + 12 })
      agree("export", { from = T0 + 12 })
      agree("stats")
      for _, tok in ipairs(TOKENS) do agree("attempts", tok) end
    end

    before_each(function()
      url_a, url_b = url, url .. "b"
      c_b = assert(ledger_mod.open(url_b, { clock = function() return now end }))
      build(c_call)
      url = url_b
      build(call)
      url = url_a
    end)

    after_each(function() c_b:close() end)

    it("read the same from data either host wrote", function()
      now = T0 + 50
      reads()
      local due = agree("due", 100)
      local names = {}
      for _, r in ipairs(due) do names[#names + 1] = r.EidToken end
      assert.same({ "P1", "P2", "P4", "P6", "P7", "P9" }, names)
      local stats = agree("stats")
      assert.same({ issued = 3, passed = 1, failed = 2, consumed = 2, expired = 1, abandoned = 0, total = 9,
        billable = 1 + 1 + 2 + 1 + 1 + 1, due = 6 }, stats)
      assert.equals(3, #agree("attempts", "P4"))
      local exp = agree("export")
      assert.equals(9, #exp)
      assert.is_true(exp[1].open)
    end)

    it("expire: the same counts, then the same reads, past the TTL and past the result window", function()
      for _, at in ipairs { T0 + 200, T0 + 4 * 86400 } do
        now = at
        local c1 = c_call("expire").res
        local saved = c_ledger
        c_ledger = c_b
        local c2 = c_call("expire").res
        c_ledger = saved
        assert.same(c1, c2)
        reads()
        -- A second expire finds nothing more, in nginx as in C.
        local r = four("expire")
        assert.same({ expired = 0, abandoned = 0 }, r.c_a.res)
        assert.same(r.c_a.res, r.n_a.res)
        assert.same(r.c_a.res, r.n_b.res)
      end
      -- P1, P2 (issued), P7 (expired by its TTL) and P8 (by Tencent).
      assert.equals(4, agree("stats").abandoned)
    end)

    it("expire in nginx gives the counts and the data C's gives", function()
      now = T0 + 200
      local c = c_call("expire").res
      url = url_b
      local n = call("expire").res
      url = url_a
      assert.same({ expired = 1, abandoned = 0 }, c)
      assert.same(c, n)
      reads()
      now = T0 + 4 * 86400
      c = c_call("expire").res
      url = url_b
      n = call("expire").res
      url = url_a
      assert.same(c, n)
      assert.equals(4, n.abandoned)
      reads()
    end)

    it("sweep: the same report from eidkit.ledger.sweep in both hosts, each on the other's data", function()
      now = T0 + 150
      local answers = { P1 = answer(0, 1, "s1"), P2 = answer(2006, 2, "s2"), P4 = answer(0, 4, "s4") }
      -- P6, P7, P9 get no answer: failures, in the same order.
      local pull = function(tok) if answers[tok] then return answers[tok] end return nil, "no answer for this token" end
      -- Each host sweeps the data the other wrote: C sweeps B, nginx sweeps A.
      local c_rep = assert(c_b:sweep(pull, { limit = 50 }))
      extra = { answers = answers }
      local n = call("sweep", { limit = 50 })
      assert.is_nil(n.err)
      local n_rep = n.res
      assert.same(c_rep, n_rep)
      assert.equals(3, n_rep.recorded)
      assert.equals(1, n_rep.expired)
      reads()
    end)
  end)

  it("shares tokens with the C backend both ways", function()
    -- Issued in nginx, recorded and consumed by C.
    assert.is_true(call("issue", { EidToken = "X-1", MerchantId = "m", subject = "alice" }).res)
    assert(c_ledger:record("X-1", response(0)))
    local rec = assert(c_ledger:consume("X-1", "alice"))
    assert.equals("consumed", rec.state)
    assert.equals("consumed", call("consume", "X-1", "alice").err.code)
    -- Issued by C, consumed in nginx, then refused by C.
    assert(c_ledger:issue { EidToken = "X-2", MerchantId = "m", subject = "bob" })
    assert(c_ledger:record("X-2", response(2006)))
    local got = call("consume", "X-2", "bob")
    assert.equals("consumed", got.res.state)
    assert.equals(2006, got.res.ErrCode)
    local _, err = c_ledger:consume("X-2", "bob")
    assert.equals("consumed", err.code)
    -- And the C sweep sees the nginx-issued tokens (same indexes).
    assert(call("issue", { EidToken = "X-3", MerchantId = "m", subject = "c" }).res)
    local due = assert(c_ledger:due(100))
    local seen = {}
    for _, r in ipairs(due) do seen[r.EidToken] = true end
    assert.is_true(seen["X-3"])
  end)

  it("runs exactly the C backend's scripts (EVALSHA finds what C loaded)", function()
    assert.equals("OK", rds:cli("SCRIPT", "FLUSH"):match("OK"))
    -- The C backend loads each of its five scripts (EVAL after NOSCRIPT).
    assert(c_ledger:issue { EidToken = "S-1", MerchantId = "m", subject = "a", expires_at = T0 + 5 })
    assert(c_ledger:issue { EidToken = "S-2", MerchantId = "m", subject = "a" })
    assert(c_ledger:record("S-2", response(0)))
    assert(c_ledger:consume("S-2", "a"))
    assert(c_ledger:take("bucket", 10, 10))
    now = T0 + 10
    assert.equals(1, c_ledger:expire().expired)
    local shas = cjson.decode(curl { srv.url .. "/shas?url=" .. url })
    local names = {}
    for name, sha in pairs(shas) do
      names[#names + 1] = name
      assert.matches("^%x+$", sha)
      -- "read" is the worker's alone (the C backend reads with HMGET); its
      -- text comes from libeidkit all the same.
      if name ~= "read" then
        assert.equals("1", rds:cli("SCRIPT", "EXISTS", sha):match("%d"),
          "the worker's " .. name .. " script is not the one the C backend runs")
      end
    end
    table.sort(names)
    assert.same({ "consume", "expire", "issue", "read", "record", "take" }, names)
    -- So the worker's EVALSHA never needed EVAL.
    local before = call("get", "S-2").noscript
    assert.is_true(call("issue", { EidToken = "S-3", MerchantId = "m", subject = "a" }).res)
    assert.equals(before, call("consume", "S-3", "a").noscript)
    -- After a flush, the worker sends the text (EVAL) once per script and
    -- goes on: issue's, then read's (get).
    rds:cli("SCRIPT", "FLUSH")
    assert.is_true(call("issue", { EidToken = "S-4", MerchantId = "m", subject = "a" }).res)
    assert.equals(before + 2, call("get", "S-4").noscript)
    assert.equals(before + 2, call("get", "S-4").noscript)
  end)

  it("answers unavailable while Redis is down, then recovers, and the worker lives on", function()
    assert.is_true(call("issue", { EidToken = "R-1", MerchantId = "m", subject = "a" }).res)
    local pid = call("get", "R-1").pid
    rds:stop()
    for _, r in ipairs { call("get", "R-1"), call("consume", "R-1", "a"),
      call("issue", { EidToken = "R-2", MerchantId = "m", subject = "a" }) } do
      assert.is_nil(r.res)
      assert.equals("unavailable", r.err.code)
      assert.is_true(r.err.retryable)
      assert.equals(pid, r.pid)
    end
    assert(rds:launch())
    local r = call("get", "R-1")
    assert.equals("issued", r.res.state)
    assert.equals(pid, r.pid)
    assert.is_true(call("issue", { EidToken = "R-2", MerchantId = "m", subject = "a" }).res)
    -- error.log has nginx's own line for each refused connect (no token,
    -- no subject, no key), and nothing else at error level.
    local log = srv:error_log()
    assert.is_nil(log:find("R-", 1, true))
    assert.is_nil(log:find("{", 1, true))
    local refused = 0
    for line in log:gmatch("[^\n]*%[error%][^\n]*") do
      assert.matches("connect%(%) failed %(111: Connection refused%)", line)
      refused = refused + 1
    end
    assert.is_true(refused > 0)
  end)

  it("Redis killed with a full pool: record, due, stats unavailable, then the first call after works, nothing lost", function()
    assert.is_true(call("issue", { EidToken = "K-1", MerchantId = "m", subject = "a" }).res)
    assert.is_nil(call("record", "K-1", response(2006, "k1")).err)
    -- 20 requests at once while Redis holds writes: the worker opens 20
    -- connections, all kept in its pool afterwards.
    burst(url, "K-P", 20, 300)
    assert.is_true(tonumber(rds:cli("INFO", "clients"):match("connected_clients:(%d+)")) >= 10)
    rds:stop("KILL")
    for _, r in ipairs { call("record", "K-1", response(0, "k2")), call("due", 10), call("stats"),
      call("expire"), call("attempts", "K-1"), call("export") } do
      assert.is_nil(r.res)
      assert.same({ "unavailable", true }, { r.err.code, r.err.retryable })
    end
    assert(rds:launch())
    -- The dead pooled connections are not handed out again.
    local r = call("record", "K-1", response(0, "k2"))
    assert.is_nil(r.err)
    assert.same({ "passed", 0, { "k1", "k2" } }, { r.res.state, r.res.ErrCode, r.res.request_ids })
    local st = call("stats").res
    assert.equals(21, st.total)
    assert.equals(1, st.passed)
  end)

  it("reuses pooled connections (set_keepalive)", function()
    assert.is_true(call("issue", { EidToken = "P-1", MerchantId = "m", subject = "a" }).res)
    local function received()
      return tonumber(rds:cli("INFO", "stats"):match("total_connections_received:(%d+)"))
    end
    local before = received()
    -- 100 requests, each its own HTTP request and its own ledger call.
    for _ = 1, 100 do assert.equals("issued", call("get", "P-1").res.state) end
    local after = received()
    -- One worker, sequential requests: the pool's connection serves them all
    -- (a few more only if Redis closed one).
    assert.is_true(after - before <= 2, ("%d connections for 100 calls"):format(after - before))
    local clients = tonumber(rds:cli("INFO", "clients"):match("connected_clients:(%d+)"))
    assert.is_true(clients <= 3, clients .. " clients connected")
  end)

  it("a burst waits for pooled connections (backlog) rather than opening one a request", function()
    -- 40 requests at once while Redis holds writes, on a ledger with a pool
    -- of 3 (database 1: a pool of its own). Without the backlog each request
    -- would open a connection and close it again after use.
    local burst_url = rds:url(1, ("burst%d:"):format(os.time()))
    local function received()
      return tonumber(rds:cli("INFO", "stats"):match("total_connections_received:(%d+)"))
    end
    local before = received()
    local out = burst(burst_url, "B-", 40, 200, "&pool_size=3")
    local opened = received() - before
    local starts, first_finish = {}, math.huge
    for line in out:gmatch("%b{}") do
      local t = assert(cjson.decode(line))
      assert.is_true(t.ok, line)
      starts[#starts + 1] = t.start
      first_finish = math.min(first_finish, t.finish)
    end
    assert.equals(40, #starts)
    -- Without the backlog: one connection a request (42 here, with this
    -- spec's INFO and PAUSE). With it the pool's 3, each call keeping its
    -- one connection to the end. A request arriving once connections are
    -- being freed may take the one nginx handed a queued waiter, which then
    -- opens another: one more for each such late request.
    local late = 0
    for _, t in ipairs(starts) do
      if t >= first_finish then late = late + 1 end
    end
    assert.is_true(opened <= 2 + 3 + late,
      ("%d connections for a burst of 40 on a pool of 3 (%d requests late)"):format(opened, late))
  end)

  it("does not block the worker while Redis is slow (one worker, 50 requests at once)", function()
    -- Redis holds every write for 400 ms. A worker that blocked on Redis
    -- would start the next request only after the previous one ended.
    local n = 50
    local t0 = os.time()
    local out = burst(url, "W-", n, 400)
    assert.is_true(os.time() - t0 <= 3)
    local starts, finishes = {}, {}
    for line in out:gmatch("%b{}") do
      local okd, t = pcall(cjson.decode, line)
      assert(okd, "not JSON: " .. line)
      assert.is_true(t.ok, line)
      starts[#starts + 1], finishes[#finishes + 1] = t.start, t.finish
    end
    assert.equals(n, #starts)
    table.sort(starts)
    table.sort(finishes)
    -- Every request had started before the first one finished: they waited
    -- on Redis together.
    assert.is_true(starts[n] < finishes[1], ("last start %.3f, first finish %.3f"):format(starts[n], finishes[1]))
    -- And they did wait for the pause.
    assert.is_true(finishes[n] - starts[1] >= 0.3)
    assert.is_true(finishes[n] - starts[1] < 1.5, ("took %.3f s"):format(finishes[n] - starts[1]))
  end)

  it("sends the records of concurrent requests together, each stored once", function()
    -- 40 requests record at once while Redis holds writes. Sent one by one
    -- they would make 40 round trips; batched, the first few batches (one
    -- per flusher) wait on the pause and everything after them queues into
    -- the next. (Without batching the ledger counts no pipeline at all.)
    local n = 40
    for i = 1, n do assert.is_true(call("issue", { EidToken = "Q-" .. i, MerchantId = "m", subject = "s" }).res) end
    local function evalshas()
      return tonumber(rds:cli("INFO", "commandstats"):match("cmdstat_evalsha:calls=(%d+)"))
    end
    local before = call("get", "Q-1").batches
    local sent_before = evalshas()
    local out = burst(url, "Q-", n, 300, "&op=record")
    local answered, batches = 0, before
    for line in out:gmatch("%b{}") do
      local t = assert(cjson.decode(line))
      assert.is_true(t.ok, line)
      answered = answered + 1
      batches = math.max(batches, t.batches)
    end
    assert.equals(n, answered)
    local pipelines = batches - before
    assert.is_true(pipelines >= 1 and pipelines <= 8, ("%d pipelines for %d records"):format(pipelines, n))
    -- Each record went to Redis once (one EVALSHA each, no resend) and
    -- stored its own answer on its own token.
    assert.equals(n, evalshas() - sent_before)
    for i = 1, n do
      local rec = call("get", "Q-" .. i).res
      assert.same({ "issued", 1, { "rq-Q-" .. i } }, { rec.state, rec.pulls, rec.request_ids })
    end
  end)

  it("records one by one with batch = false: the same records, no pipeline", function()
    url = rds:url(0, ("nobatch%d:"):format(os.time()))
    extra = { opts = { batch = false } } -- read when the worker first opens this URL
    assert.is_true(call("issue", { EidToken = "N-1", MerchantId = "m", subject = "s" }).res)
    local r1 = call("record", "N-1", response(2006, "n1"))
    assert.same({ "failed", 1, { "n1" } }, { r1.res.state, r1.res.pulls, r1.res.request_ids })
    local r2 = call("record", "N-1", response(0, "n2"))
    assert.same({ "passed", 2, { "n1", "n2" } }, { r2.res.state, r2.res.pulls, r2.res.request_ids })
    assert.equals(0, r2.batches)
  end)

  describe("on a Redis that wants a password", function()
    local PW = "or-pw/5:q@z"
    local LIMITED_PW = "limited-pw-7c1d"
    local pw
    setup(function() pw = redis.start { requirepass = PW } end)
    teardown(function() if pw then pw:destroy() end end)

    it("logs in with the URL's password, and again after Redis restarts", function()
      url = pw:url(0, "orpw:")
      assert.is_true(call("issue", { EidToken = "ORPW-1", MerchantId = "m", subject = "s" }).res)
      -- The C backend, logged in with the same URL, reads what the worker wrote.
      local c = assert(ledger_mod.open(url))
      assert.equals("issued", c:get("ORPW-1").state)
      c:close()
      pw:stop()
      assert(pw:launch())
      -- The pooled connections broke: new ones log in.
      assert.equals("issued", call("get", "ORPW-1").res.state)
      assert.is_nil(srv:error_log():find("or-pw", 1, true))
    end)

    it("refuses as the C backend does, in its words, without the password", function()
      local bad = pw:url(0, "orpw:"):gsub("or%-pw", "no-such-pw")
      local _, c_err = ledger_mod.open(bad)
      url = bad
      local t = call("get", "ORPW-1")
      assert.same({ code = "unavailable", message = c_err.message, retryable = true }, t.err)
      assert.matches("^redis: AUTH at 127%.0%.0%.1:%d+ failed: WRONGPASS", t.err.message)
      assert.is_nil(t.err.message:find("no-such-pw", 1, true))
      -- No password where one is wanted: the same hint on both hosts.
      url = ("redis://127.0.0.1:%d/1"):format(pw.port)
      _, c_err = ledger_mod.open(url)
      t = call("get", "ORPW-1")
      assert.same({ code = "unavailable", message = c_err.message, retryable = true }, t.err)
      assert.matches("%(give the password in the URL: redis://:PASSWORD@HOST:PORT/DB%)$", t.err.message)
      -- A URL the C parser refuses, refused in the same words.
      local ok, perr = pcall(ledger_mod.open, "redis://hunter2@127.0.0.1:1/0")
      assert.is_false(ok)
      assert.matches("url: redis URL names a user without a password", perr)
      url = "redis://hunter2@127.0.0.1:1/0"
      local rok, raised = pcall(call, "get", "ORPW-1") -- the worker's open refuses it
      assert.is_false(rok)
      assert.matches("invalid: url: redis URL names a user without a password", raised)
      assert.is_nil(raised:find("hunter2", 1, true))
    end)

    it("never hands a connection logged in as one user to a ledger opened as another", function()
      -- limited may touch lim:* keys only: a pooled connection of its own
      -- handed to the other ledger would make its calls fail NOPERM.
      assert.matches("OK", pw:cli("ACL", "SETUSER", "limited", "on", ">" .. LIMITED_PW, "~lim:*", "&*", "+@all"))
      local limited = ("redis://limited:%s@127.0.0.1:%d/0?prefix=lim:"):format(LIMITED_PW, pw.port)
      local full = pw:url(0, "orpw2:")
      for i = 1, 4 do
        url = limited
        assert.is_true(call("issue", { EidToken = "LIM-" .. i, MerchantId = "m", subject = "s" }).res)
        url = full
        local t = call("issue", { EidToken = "FULL-" .. i, MerchantId = "m", subject = "s" })
        assert.is_true(t.res, t.err and t.err.message)
      end
      assert.matches("NOPERM", pw:cli("--user", "limited", "--pass", LIMITED_PW, "GET", "orpw2:x"))
    end)
  end)
end)

describe("eidkit.openresty.ledger with two workers", function()
  local srv, rds, c_ledger

  setup(function()
    rds = redis.start()
    srv = nginx.start { server = SERVER, workers = 2 }
  end)

  teardown(function()
    if c_ledger then c_ledger:close() end
    if srv then srv:stop() end
    if rds then rds:destroy() end
  end)

  it("consumes a token exactly once under 40 concurrent consumes across workers", function()
    local url = rds:url(0, "two:")
    c_ledger = assert(ledger_mod.open(url))
    assert(c_ledger:issue { EidToken = "ONCE-1", MerchantId = "m", subject = "alice" })
    assert(c_ledger:record("ONCE-1", response(0)))
    local body = scratch.file()
    local f = assert(io.open(body, "wb"))
    f:write(cjson.encode { url = url, op = "consume", args = { "ONCE-1", "alice" } })
    f:close()
    local cfg = scratch.file()
    f = assert(io.open(cfg, "wb"))
    for _ = 1, 40 do f:write(("url = \"%s/ledger\"\n"):format(srv.url)) end
    f:close()
    local out = proc.output(("curl -s --no-progress-meter -Z --parallel-immediate --parallel-max 40 --max-time 20"
      .. " -X POST --data-binary @%s -K %s"):format(proc.quote(body), proc.quote(cfg)))
    os.remove(body)
    os.remove(cfg)
    local won, refused = 0, 0
    for reply in out:gmatch("%b{}") do
      local t = cjson.decode(reply)
      if t.res ~= nil and t.res ~= cjson.null and t.res.state == "consumed" then
        won = won + 1
      elseif t.err and t.err ~= cjson.null and t.err.code == "consumed" then
        refused = refused + 1
      end
    end
    assert.equals(1, won)
    assert.equals(39, refused)
    assert.equals("consumed", assert(c_ledger:get("ONCE-1")).state)
  end)
end)

describe("eidkit.openresty.ledger in two nginx instances on one Redis", function()
  local srv1, srv2, rds, c_ledger

  setup(function()
    rds = redis.start()
    srv1 = nginx.start { server = SERVER }
    srv2 = nginx.start { server = SERVER }
  end)

  teardown(function()
    if c_ledger then c_ledger:close() end
    if srv1 then srv1:stop() end
    if srv2 then srv2:stop() end
    if rds then rds:destroy() end
  end)

  local function post(srv, t)
    local body = scratch.file()
    local f = assert(io.open(body, "wb"))
    f:write(cjson.encode(t))
    f:close()
    local out = curl { "-X", "POST", "--data-binary", "@" .. body, srv.url .. "/ledger" }
    os.remove(body)
    local r = cjson.decode(out)
    assert(not r.raised, r.raised)
    return r
  end

  it("issued on one, recorded on the other, consumed exactly once under 40 consumes split across both", function()
    local url = rds:url(0, "twonodes:")
    c_ledger = assert(ledger_mod.open(url))
    assert.is_true(post(srv1, { url = url, op = "issue", args = { { EidToken = "TWO-1", MerchantId = "m", subject = "alice" } } }).res)
    assert.equals("passed", post(srv2, { url = url, op = "record", args = { "TWO-1", response(0) } }).res.state)
    local body = scratch.file()
    local f = assert(io.open(body, "wb"))
    f:write(cjson.encode { url = url, op = "consume", args = { "TWO-1", "alice" } })
    f:close()
    local cfg = scratch.file()
    f = assert(io.open(cfg, "wb"))
    for i = 1, 40 do f:write(("url = \"%s/ledger\"\n"):format((i % 2 == 0 and srv1 or srv2).url)) end
    f:close()
    local out = proc.output(("curl -s --no-progress-meter -Z --parallel-immediate --parallel-max 40 --max-time 20"
      .. " -X POST --data-binary @%s -K %s"):format(proc.quote(body), proc.quote(cfg)))
    os.remove(body)
    os.remove(cfg)
    local won, refused, pids = 0, 0, {}
    for reply in out:gmatch("%b{}") do
      local t = cjson.decode(reply)
      pids[t.pid] = true
      if t.res ~= nil and t.res ~= cjson.null and t.res.state == "consumed" then
        won = won + 1
      elseif t.err and t.err ~= cjson.null and t.err.code == "consumed" then
        refused = refused + 1
      end
    end
    assert.same({ 1, 39 }, { won, refused })
    local n = 0
    for _ in pairs(pids) do n = n + 1 end
    assert.equals(2, n) -- both instances answered
    assert.equals("consumed", assert(c_ledger:get("TWO-1")).state)
    -- Either instance's due and stats see the same ledger.
    assert.same(post(srv1, { url = url, op = "stats" }).res, post(srv2, { url = url, op = "stats" }).res)
  end)
end)
