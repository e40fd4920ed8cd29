-- eidkit.openresty.ledger in a real nginx worker (Debian's nginx, its Lua
-- module, lua-resty-redis) against a real redis-server, next to the C Redis
-- backend (eidkit.ledger from Lua 5.4) on the same server: the same calls
-- give the same records and errors, tokens cross between them, the scripts
-- are the C backend's own, Redis going away is `unavailable` and then
-- recovers, connections are pooled, and a worker waiting on Redis serves
-- other requests meanwhile. nginx or redis-server missing is a failure.
local cjson = require "cjson"
local ledger_mod = require "eidkit.ledger"
local nginx = require "support.nginx"
local proc = require "support.proc"
local redis = require "support.redis"

local T0 = 1735660800
-- nginx reads content_by_lua_file relative to its prefix: an absolute path.
local root = proc.output("cd " .. proc.quote(debug.getinfo(1, "S").source:match("^@(.*)/spec/openresty/[^/]*$")
  or ".") .. " && pwd"):gsub("%s+$", "")

local SERVER = ([[
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
  local function call(op, ...)
    local body = cjson.encode { url = url, now = now, op = op, args = { ... } }
    local file = os.tmpname()
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
    -- result through the C backend (record is not in the OpenResty ledger).
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
        elseif op == "take" then
          -- The bucket's clock in ms, so both sides wait the same.
          r = step("take", "bucket-" .. tok, a, c[3], now * 1000)
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
    end)

    it("for unknown and expired tokens", function()
      for _, step in ipairs { c_call, call } do
        assert.same({ code = "unknown_token", message = "token: unknown", retryable = false },
          step("get", "NO-SUCH-TOKEN").err)
        assert.same({ code = "unknown_token", message = "token: unknown", retryable = false },
          step("consume", "NO-SUCH-TOKEN", "alice").err)
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
      assert.equals("1", rds:cli("SCRIPT", "EXISTS", sha):match("%d"),
        "the worker's " .. name .. " script is not the one the C backend runs")
    end
    table.sort(names)
    assert.same({ "consume", "expire", "issue", "record", "take" }, names)
    -- So the worker's EVALSHA never needed EVAL.
    local before = call("get", "S-2").noscript
    assert.is_true(call("issue", { EidToken = "S-3", MerchantId = "m", subject = "a" }).res)
    assert.equals(before, call("consume", "S-3", "a").noscript)
    -- After a flush, the worker sends the text (EVAL) and goes on.
    rds:cli("SCRIPT", "FLUSH")
    assert.is_true(call("issue", { EidToken = "S-4", MerchantId = "m", subject = "a" }).res)
    assert.equals(before + 1, call("get", "S-4").noscript)
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

  it("does not block the worker while Redis is slow (one worker, 50 requests at once)", function()
    -- Redis holds every write for 400 ms. A worker that blocked on Redis
    -- would start the next request only after the previous one ended.
    local n = 50
    local list = {}
    local escaped = url:gsub("[^%w%-%.]", function(c) return ("%%%02X"):format(c:byte()) end)
    for i = 1, n do list[i] = ("url = \"%s/timed?url=%s&tok=W-%d\"\n"):format(srv.url, escaped, i) end
    local cfg = os.tmpname()
    local f = assert(io.open(cfg, "wb"))
    f:write(table.concat(list))
    f:close()
    assert.equals("OK", rds:cli("CLIENT", "PAUSE", "400", "WRITE"):match("OK"))
    local t0 = os.time()
    local out = proc.output(("curl -s --no-progress-meter -Z --parallel-immediate --parallel-max %d --max-time 20 -K %s"):format(n, proc.quote(cfg)))
    os.remove(cfg)
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
    local body = os.tmpname()
    local f = assert(io.open(body, "wb"))
    f:write(cjson.encode { url = url, op = "consume", args = { "ONCE-1", "alice" } })
    f:close()
    local cfg = os.tmpname()
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
