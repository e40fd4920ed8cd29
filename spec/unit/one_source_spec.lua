-- One source for each rule: the values that C defines and Lua code, docs and
-- the Redis scripts rely on must agree with what eidkit.core exports from C.
-- One describe per source; each fails if a copy drifts from it. (The flow's
-- and the transport's copies get their own describes here too.)
local core = require "eidkit.core"
local ledger_mod = require "eidkit.ledger"
local redis = require "support.redis"

local ROOT = debug.getinfo(1, "S").source:gsub("^@", ""):gsub("[^/]*$", "") .. "../../"

local function read(path)
  local f = assert(io.open(ROOT .. path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local T0 = 1735660800

-- A ledger on a frozen clock; url defaults to an in-memory SQLite one.
local function open(url, opts)
  opts = opts or {}
  opts.clock = function() return T0 end
  return assert(ledger_mod.open(url or "sqlite::memory:", opts))
end

local function raises(f)
  local ok, err = pcall(f)
  assert.is_false(ok, "expected an error")
  return tostring(err):match("%((.*)%)$") or tostring(err)
end

-- README's error table: value, name and the Lua code its row names, if one.
local function readme_statuses()
  local section = read("README.md"):match("\n## Errors\n(.-)\n## ")
  assert(section, "README.md has no '## Errors' section")
  local rows = {}
  for value, name, text in section:gmatch("\n| (%d+) | `([%w_]+)` | ([^\n]*) |") do
    -- "(Lua code `x`)", "(`x`)" or "(`x`, retryable)": one code for the status.
    local code = text:match("%(Lua code `([%w_]+)`%)$") or text:match("%(`([%w_]+)`%)$")
      or text:match("%(`([%w_]+)`, retryable%)$")
    rows[#rows + 1] = { value = tonumber(value), name = name, code = code }
  end
  return rows, section
end

describe("status codes: core.status_codes (eid_status_code in C)", function()
  local rows, section = readme_statuses()
  local value_of = {}
  for _, r in ipairs(rows) do value_of[r.name] = r.value end
  local known = {}
  for _, code in pairs(core.status_codes) do known[code] = true end

  it("has one code for each status in README's error table, and only those", function()
    assert.is_true(#rows >= 16)
    for _, r in ipairs(rows) do
      assert.is_string(core.status_codes[r.value], r.name .. " has no code")
    end
    for value in pairs(core.status_codes) do
      local documented = false
      for _, r in ipairs(rows) do documented = documented or r.value == value end
      assert.is_true(documented, "status " .. value .. " is not in README's error table")
    end
  end)

  it("gives each status the Lua code README names for it", function()
    local named = 0
    for _, r in ipairs(rows) do
      if r.code then
        named = named + 1
        assert.equals(r.code, core.status_codes[r.value], r.name)
      end
    end
    assert.is_true(named >= 8, "README names the Lua code of the ledger statuses")
  end)

  it("has the codes README lists for environment failures", function()
    local list = section:match("with%s+`code` %(([^)]*)%)")
    assert(list, "README names the codes of environment failures")
    local n = 0
    for code in list:gmatch('`"([%w_]+)"`') do
      n = n + 1
      assert.is_true(known[code], code)
    end
    assert.is_true(n >= 3)
  end)

  it("has every ledger code the ledger's Lua files compare err.code with", function()
    for _, path in ipairs { "lua/eidkit/ledger.lua", "lua/eidkit/cli/ledger.lua" } do
      for code in read(path):gmatch('code [=~]= "([%w_]+)"') do
        assert.is_true(known[code], path .. ": " .. code)
      end
    end
  end)

  it("is the code a ledger refusal carries", function()
    local l = open()
    assert(l:issue { EidToken = "T-1", MerchantId = "m", subject = "u" })
    local function code(...) return select(2, ...).code end
    assert.equals(core.status_codes[value_of.EID_E_LEDGER_UNKNOWN], code(l:get("T-2")))
    assert.equals(core.status_codes[value_of.EID_E_LEDGER_WRONG_SUBJECT], code(l:claim("T-1", "v")))
    assert.equals(core.status_codes[value_of.EID_E_LEDGER_EXISTS],
      code(l:issue { EidToken = "T-1", MerchantId = "m", subject = "u" }))
    assert.equals(core.status_codes[value_of.EID_E_LEDGER_PENDING], code(l:consume("T-1", "u")))
    l:close()
  end)
end)

describe("ledger limits: core.limits (EID_LEDGER_* in ledger.h)", function()
  local lim = core.limits
  local l
  before_each(function() l = open() end)
  after_each(function() l:close() end)

  local function issue(fields)
    local t = { EidToken = "T-1", MerchantId = "m", subject = "u" }
    for k, v in pairs(fields) do t[k] = v end
    return l:issue(t)
  end

  it("exports every limit as an integer", function()
    for _, k in ipairs { "token_max", "merchant_max", "subject_max", "extra_max", "request_id_max",
      "request_ids", "payload_max", "url_max", "default_ttl", "result_window", "redis_retention",
      "key_len" } do
      assert.equals("integer", math.type(lim[k]), k)
    end
  end)

  it("token_max: a token that long is accepted, one byte more refused", function()
    assert.is_true(issue { EidToken = ("t"):rep(lim.token_max) })
    assert.equals("EidToken: longer than " .. lim.token_max .. " bytes",
      raises(function() issue { EidToken = ("t"):rep(lim.token_max + 1) } end))
  end)

  it("subject_max, merchant_max, extra_max: the same at issue", function()
    assert.is_true(issue { EidToken = "A", subject = ("s"):rep(lim.subject_max) })
    assert.equals("subject: longer than " .. lim.subject_max .. " bytes",
      raises(function() issue { EidToken = "B", subject = ("s"):rep(lim.subject_max + 1) } end))
    assert.is_true(issue { EidToken = "C", MerchantId = ("m"):rep(lim.merchant_max) })
    assert.equals("MerchantId: longer than " .. lim.merchant_max .. " bytes",
      raises(function() issue { EidToken = "D", MerchantId = ("m"):rep(lim.merchant_max + 1) } end))
    assert.is_true(issue { EidToken = "E", Extra = ("x"):rep(lim.extra_max) })
    assert.equals("Extra: longer than " .. lim.extra_max .. " bytes",
      raises(function() issue { EidToken = "F", Extra = ("x"):rep(lim.extra_max + 1) } end))
  end)

  it("request_id_max and request_ids: the RequestIds kept per token", function()
    assert.is_true(issue {})
    assert(l:record("T-1", { RequestId = ("r"):rep(lim.request_id_max) }))
    assert.matches("^request_id: longer than " .. lim.request_id_max .. " bytes",
      raises(function() l:record("T-1", { RequestId = ("r"):rep(lim.request_id_max + 1) }) end))
    local rec
    for i = 1, lim.request_ids + 1 do rec = assert(l:record("T-1", { RequestId = "req-" .. i })) end
    assert.equals(lim.request_ids, #rec.request_ids)
    assert.equals("req-2", rec.request_ids[1])
  end)

  it("default_ttl and result_window: the times a token gets at issue", function()
    assert.is_true(issue {})
    local rec = assert(l:get("T-1"))
    assert.equals(T0 + lim.default_ttl, rec.expires_at)
    assert.equals(T0 + lim.result_window, rec.result_deadline)
  end)

  it("key_len and payload_max: the payload key and the largest payload", function()
    local k = open(nil, { payload_key = ("k"):rep(lim.key_len) })
    assert.is_true(k:issue { EidToken = "P", MerchantId = "m", subject = "u" })
    assert(k:record("P", {}, ("p"):rep(lim.payload_max)))
    assert.equals(lim.payload_max, #k:payload("P"))
    assert.equals("payload: longer than " .. lim.payload_max .. " bytes",
      raises(function() k:record("P", {}, ("p"):rep(lim.payload_max + 1)) end))
    k:close()
    assert.matches("payload_key", raises(function()
      ledger_mod.open("sqlite::memory:", { payload_key = ("k"):rep(lim.key_len - 1) })
    end))
  end)

  it("url_max: a longer URL is refused before it is parsed", function()
    assert.equals("url: longer than " .. lim.url_max .. " bytes",
      raises(function() ledger_mod.open("sqlite:" .. ("x"):rep(lim.url_max)) end))
  end)
end)

describe("Tencent ErrCodes: core.errcodes (EID_ERRCODE_* in ledger.h)", function()
  local E = core.errcodes
  local srv = redis.available and redis.start() or nil
  teardown(function() if srv then srv:destroy() end end)

  it("exports expired and pending", function()
    assert.same({ expired = 15, pending = 17 }, E)
  end)

  it("the Redis scripts use the prologue's names, never the numbers", function()
    local used = {}
    for _, name in ipairs { "issue", "record", "consume", "expire" } do
      local code = read("lua/eidkit/ledger/redis/" .. name .. ".lua"):gsub("%-%-[^\n]*", "")
      for _, v in pairs(E) do
        assert.is_nil(code:find("%f[%w_]" .. v .. "%f[^%w_]"), name .. ".lua has a bare " .. v)
      end
      for const in code:gmatch("ERR_[%u_]+") do used[const] = true end
    end
    assert.same({ ERR_EXPIRED = true }, used)
  end)

  local backends = { { "sqlite", function() return "sqlite::memory:" end } }
  backends[2] = { "redis", function() return srv and srv:url(0, "one-source:" .. os.time() .. ":") end }
  for _, b in ipairs(backends) do
    it("mean the same to the " .. b[1] .. " backend", function()
      local url = b[2]()
      if not url then return pending("no redis-server") end
      local l = open(url)
      assert(l:issue { EidToken = "E-1", MerchantId = "m", subject = "u" })
      local rec = assert(l:record("E-1", { Text = { ErrCode = E.pending } }))
      assert.equals("issued", rec.state) -- no verdict, only a pull
      assert.is_nil(rec.ErrCode)
      assert.equals(1, rec.pulls)
      rec = assert(l:record("E-1", { Text = { ErrCode = E.expired } }))
      assert.equals("expired", rec.state)
      assert.equals(E.expired, rec.ErrCode)
      assert(l:issue { EidToken = "E-2", MerchantId = "m", subject = "u" })
      rec = assert(l:record("E-2", { Error = { Code = "InvalidParameterValue.BizTokenExpired" } }))
      assert.equals(E.expired, rec.ErrCode)
      l:close()
    end)
  end
end)

describe("the flow's and the policy's copies: core.limits and core.errcodes", function()
  local flow_mod = require "eidkit.flow"
  local policy = require "eidkit.policy"
  local L, E = core.limits, core.errcodes

  -- A flow over a real ledger whose client is never reached: the checks
  -- under test run before any call upstream.
  local function flow()
    local client = { get_eid_result = function() error("no call expected") end }
    return flow_mod.new { client = client, ledger = open(), merchant_id = "m" }
  end

  it("take the subject limit from core.limits.subject_max", function()
    local f = flow()
    local ok = pcall(f.finish, f, { subject = ("s"):rep(L.subject_max), EidToken = "T-unknown" })
    assert.is_true(ok)
    local msg = raises(function()
      f:finish { subject = ("s"):rep(L.subject_max + 1), EidToken = "T-unknown" }
    end)
    assert.equals(("subject: expected 1-%d bytes without control characters"):format(L.subject_max), msg)
  end)

  it("take the Extra limit from core.limits.extra_max", function()
    local f = flow()
    local msg = raises(function() f:start { subject = "u", Extra = ("x"):rep(L.extra_max + 1) } end)
    assert.equals(("Extra: expected at most %d bytes without control characters"):format(L.extra_max), msg)
  end)

  it("treat a token of token_max bytes as a token and one byte more as none", function()
    local f = flow()
    local _, err = f:finish { subject = "u", EidToken = ("T"):rep(L.token_max) }
    assert.equals("unknown_token", err.code) -- asked the ledger, which does not hold it
    _, err = f:finish { subject = "u", EidToken = ("T"):rep(L.token_max + 1) }
    assert.equals("unknown_token", err.code)
  end)

  it("classify the ledger's ErrCodes as the ledger reads them", function()
    assert.same({ "expired", "token_expired" },
      { policy.code_group(E.expired).status, policy.code_group(E.expired).reason })
    assert.equals("pending", policy.code_group(E.pending).status)
  end)
end)

describe("transport codes: core.transport_codes (eid_client_transport_code in C)", function()
  local function listed(text)
    local set = {}
    for code in text:gmatch("`([%w_]+)`") do set[code] = true end
    return set
  end

  it("are the codes README's error table gives status 14", function()
    local row = read("README.md"):match("\n| 14 | `EID_E_CLIENT_TRANSPORT` | ([^\n]*) |")
    assert(row, "README.md has no row for status 14")
    local want = { ["http_NNN"] = true }
    for code in pairs(core.transport_codes) do want[code] = true end
    local got = listed(row)
    got.EID_E_CLIENT_TRANSPORT = nil
    assert.same(want, got)
  end)

  it("cover http_ followed by digits only, as the C predicate does", function()
    assert.equals("http_", core.transport_code_prefix)
    assert.is_true(core.is_transport_code("http_502"))
    assert.is_false(core.is_transport_code("http_"))
    assert.is_false(core.is_transport_code("http_50x"))
    for code in pairs(core.transport_codes) do assert.is_true(core.is_transport_code(code)) end
    assert.is_false(core.is_transport_code("InternalError"))
  end)
end)
