-- eidkit.openresty.ledger.open("sqlite:PATH") in a real nginx worker: the C
-- ledger through the FFI (eidkit.ledger.capi; blocking local calls), next to
-- eidkit.ledger (the Lua 5.4 binding) on the same SQLite file. The same
-- calls give the same records and errors, tokens cross between the hosts
-- both ways, payloads are sealed and opened by C with the same key, and the
-- one sweep runs there too. nginx missing is a failure.
local scratch = require "support.scratch"
local cjson = require "cjson"
local ledger_mod = require "eidkit.ledger"
local nginx = require "support.nginx"
local proc = require "support.proc"

local T0 = 1735660800
local KEY_HEX = ("0123456789abcdef"):rep(4)
local root = nginx.root:sub(1, 1) == "/" and nginx.root
  or proc.output("cd " .. proc.quote(nginx.root) .. " && pwd"):gsub("%s+$", "")

local SERVER = ([[
    client_body_buffer_size 1m;
    location = /ledger { content_by_lua_file %s/spec/support/orledger_worker.lua; }
]]):format(root)

local function response(code, n, rid)
  local d = {}
  for i = 1, n or 1 do
    d[i] = { Seq = "s" .. i, ReqTime = tostring(1735660800000 + i), Errcode = code, IsNeedCharge = i % 2 == 1,
      Sim = "95.1", LivenessMode = 2, CompareLibType = "权威库", Name = "NEVER", Idcard = "NEVER" }
  end
  return { Text = { ErrCode = code, LivenessDetail = d }, RequestId = rid or "req" }
end

describe("eidkit.openresty.ledger on sqlite: (the C ledger through the FFI)", function()
  local srv, dir, url, c_ledger, now
  local n_url = 0
  local extra

  local function call(op, ...)
    local req = { url = url, now = now, op = op, args = { ... } }
    for k, v in pairs(extra or {}) do req[k] = v end
    extra = nil
    local file = scratch.file()
    local f = assert(io.open(file, "wb"))
    f:write(cjson.encode(req))
    f:close()
    local out = proc.output(("curl -s --max-time 20 -X POST --data-binary @%s %s/ledger"):format(proc.quote(file), srv.url))
    os.remove(file)
    local okd, t = pcall(cjson.decode, out)
    if not okd then error("worker answered " .. out .. "\nerror.log:\n" .. srv:error_log(), 2) end
    if t.raised then error("worker raised: " .. t.raised, 2) end
    if t.res == cjson.null then t.res = nil end
    if t.err == cjson.null then t.err = nil end
    return t
  end

  local function plain(err)
    if err == nil then return nil end
    return { code = err.code, message = err.message, retryable = err.retryable }
  end

  local function c_call(op, ...)
    local res, err = c_ledger[op](c_ledger, ...)
    return { res = res, err = plain(err) }
  end

  setup(function()
    dir = proc.output("mktemp -d /tmp/eidkit-orsqlite-XXXXXX"):gsub("%s+$", "")
    srv = nginx.start { server = SERVER }
  end)

  teardown(function()
    if c_ledger then c_ledger:close() end
    if srv then srv:stop() end
    if dir then proc.sh("rm -rf " .. proc.quote(dir)) end
  end)

  -- A fresh file per test: the worker keeps one ledger per URL.
  before_each(function()
    n_url = n_url + 1
    url = ("sqlite:%s/ledger-%d.db"):format(dir, n_url)
    now = T0
    if c_ledger then c_ledger:close() end
    c_ledger = assert(ledger_mod.open(url, { clock = function() return now end }))
  end)

  it("gives eidkit.ledger's records and errors, call for call", function()
    local steps = {
      { "issue", { MerchantId = "m1", subject = "alice", Extra = "order-1" } },
      { "issue", { MerchantId = "m1", subject = "alice" } }, -- exists
      { "get" }, { "claim", "alice" }, { "claim", "bob" }, { "consume", "alice" }, -- pending
      { "record", response(17, 1, "r1") }, { "record", response(2006, 2, "r2") },
      { "due" }, { "consume", "alice" }, { "record", response(0, 3, "r3") }, -- a late pass
      { "get" }, { "attempts" }, { "stats" }, { "export" }, { "expire" },
    }
    local function run(tok, step)
      local out = {}
      for i, st in ipairs(steps) do
        now = T0 + i
        local op, a = st[1], st[2]
        local r
        if op == "issue" then
          local t = { EidToken = tok }
          for k, v in pairs(a) do t[k] = v end
          r = step("issue", t)
        elseif op == "due" then r = step("due", 10)
        elseif op == "stats" or op == "expire" or op == "export" then r = step(op)
        elseif a == nil then r = step(op, tok)
        else r = step(op, tok, a) end
        -- The two tokens differ only by name.
        local s = cjson.encode(r.res == nil and cjson.null or r.res):gsub(tok:gsub("%-", "%%-"), "TOKEN")
        out[i] = { res = cjson.decode(s), err = r.err }
      end
      return out
    end
    local c_out = run("C-TOKEN", c_call)
    -- Each host on its own file, so stats, due and export see one token.
    local c_url = url
    url = c_url .. "-nginx"
    local n_out = run("N-TOKEN", call)
    url = c_url
    for i = 1, #steps do assert.same(c_out[i], n_out[i], ("step %d (%s)"):format(i, steps[i][1])) end
    assert.equals("exists", n_out[2].err.code)
    assert.equals("wrong_subject", n_out[5].err.code)
    assert.equals("pending", n_out[6].err.code)
    assert.is_true(n_out[11].res.late)
    assert.equals(3, #n_out[13].res)
    assert.equals(1, n_out[14].res.consumed)
  end)

  it("shares the file with the C ledger both ways", function()
    assert.is_true(call("issue", { EidToken = "X-1", MerchantId = "m", subject = "alice" }).res)
    assert(c_ledger:record("X-1", response(0)))
    assert.equals("consumed", call("consume", "X-1", "alice").res.state)
    local _, err = c_ledger:consume("X-1", "alice")
    assert.equals("consumed", err.code)
    assert(c_ledger:issue { EidToken = "X-2", MerchantId = "m", subject = "bob" })
    assert.equals("failed", call("record", "X-2", response(2006, 2)).res.state)
    assert.same(assert(c_ledger:attempts("X-2")), call("attempts", "X-2").res)
    local rec = assert(c_ledger:get("X-2"))
    assert.same({ "failed", 2006, 1 }, { rec.state, rec.ErrCode, rec.billable })
  end)

  it("takes an answer as its JSON text, with or without the envelope, as its table", function()
    for i, body in ipairs { response(2006, 3, "rt"), { Response = response(0, 2, "rw") } } do
      local text = cjson.encode(body)
      local toks = { "TX-TABLE-" .. i, "TX-C-" .. i, "TX-N-" .. i }
      for _, tok in ipairs(toks) do assert(c_ledger:issue { EidToken = tok, MerchantId = "m", subject = "a" }) end
      local want = c_call("record", toks[1], body).res
      local c = c_call("record", toks[2], text).res
      local n = call("record", toks[3], text).res
      want.EidToken, c.EidToken, n.EidToken = "T", "T", "T"
      assert.same(want, c)
      assert.same(want, n)
      assert.same(assert(c_ledger:attempts(toks[1])), call("attempts", toks[3]).res)
    end
    local ok, msg = pcall(call, "record", "TX-N-1", "{not json")
    assert.is_false(ok)
    assert.matches("bad argument #2 to 'record' %(response: not JSON%)", msg)
    assert.equals(1, call("get", "TX-N-1").res.pulls)
  end)

  it("raises on misuse naming the field, and a malformed token is unknown_token", function()
    local ok, msg = pcall(call, "issue", { EidToken = "bad token", MerchantId = "m", subject = "a" })
    assert.is_false(ok)
    assert.matches("bad argument #1 to 'issue' %(EidToken:", msg)
    assert.is_true(call("issue", { EidToken = "M-1", MerchantId = "m", subject = "a" }).res)
    ok, msg = pcall(call, "record", "M-1", { Text = { ErrCode = "0" } })
    assert.is_false(ok)
    assert.matches("bad argument #2 to 'record' %(Text.ErrCode: expected integer%)", msg)
    assert.same(c_call("get", "bad token").err, call("get", "bad token").err)
    assert.equals("unknown_token", call("get", "bad token").err.code)
  end)

  it("stores payloads sealed by C with the ledger's key (keep_payloads); C opens them with the same key", function()
    local key = KEY_HEX:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end)
    c_ledger:close()
    c_ledger = assert(ledger_mod.open(url, { clock = function() return now end, payload_key = key }))
    assert(c_ledger:issue { EidToken = "PL-1", MerchantId = "m", subject = "a" })
    extra = { opts = { payload_key_hex = KEY_HEX, keep_payloads = true } }
    local r = call("record", "PL-1", response(0, 1, "rp"))
    assert.is_true(r.res.has_payload)
    local stored = assert(c_ledger:payload("PL-1"))
    assert.same(response(0, 1, "rp"), cjson.decode(stored))
    assert.equals(stored, call("payload", "PL-1").res)
    -- A ledger opened without a key refuses a payload, naming it.
    url = url .. "-nokey"
    assert.is_true(call("issue", { EidToken = "PL-2", MerchantId = "m", subject = "a" }).res)
    local ok, msg = pcall(call, "record", "PL-2", response(0), "bytes")
    assert.is_false(ok)
    assert.matches("bad argument #3 to 'record' %(payload: no payload key configured", msg)
  end)

  it("sweeps with eidkit.ledger.sweep, recording through C", function()
    assert(c_ledger:issue { EidToken = "SW-1", MerchantId = "m", subject = "a" })
    assert(c_ledger:issue { EidToken = "SW-2", MerchantId = "m", subject = "a" })
    now = T0 + 60
    extra = { answers = { ["SW-1"] = response(0, 1, "sw1") } }
    local rep = call("sweep", { limit = 10 }).res
    assert.same({ 2, 1, 1 }, { rep.due, rep.recorded, rep.failed })
    assert.equals("SW-2", rep.failures[1].EidToken)
    assert.equals("passed", assert(c_ledger:get("SW-1")).state)
  end)
end)
