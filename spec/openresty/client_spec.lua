-- eidkit.openresty.client inside a real nginx (Debian's nginx, its Lua
-- module, OpenResty's LuaJIT) against a real `eidkit sim`, all on loopback:
-- the calls, the simulator's faults giving the same retries as eidkit.client
-- on the Lua 5.4 host (counted by the simulator's receipts), GetEidToken never
-- resent once it may have arrived, a worker that never blocks (200 calls
-- with 200 ms of upstream latency on one worker), and no secret in
-- error.log or in any answer. nginx missing is a failure, never a skip.
local cjson = require "cjson"
local client_mod = require "eidkit.client"
local nginx = require "support.nginx"
local proc = require "support.proc"
local simctl = require "support.simctl"
local simproc = require "support.simproc"

local SECRET_ID = "AKIDopenrestySpec0000000000000000000"
local SECRET_KEY = "openrestySpecSecretKey0123456789"
local MERCHANT = "0NSJ000000000000000000ORSPEC"

-- The handlers a merchant would write: build a client, make one call, answer
-- with what came back. The keys are in the handler, never in a request.
local SERVER = [[
    include %s/nginx/eidkit_location.conf;
    location = /t/call {
      content_by_lua_block {
        local cjson = require "cjson"
        ngx.req.read_body()
        local req = cjson.decode(ngx.req.get_body_data())
        local opts = req.opts
        opts.secret_id, opts.secret_key = "%s", "%s"
        local c = require("eidkit.openresty.client").new(opts)
        local res, err = c:call(req.action, req.params)
        local out = { requests = c:stats().requests }
        if res then
          out.res, out.attempts = res, err
          -- The body behind the Response (what the flow records), and
          -- nothing for a table this client did not return.
          out.text, out.text_of_other = c:response_text(res), c:response_text({ RequestId = res.RequestId })
        else
          out.err = { code = err.code, message = err.message, attempts = err.attempts, sent = err.sent,
            retryable = err.retryable, http_status = err.http_status, trace_id = err.trace_id,
            received = err.received, text = tostring(err) }
          if req.whole then out.whole = err end -- every field, for the identity check
        end
        ngx.say(cjson.encode(out))
      }
    }
    location = /t/policy {
      content_by_lua_block {
        local cjson = require "cjson"
        local seen, events = {}, {}
        local c = require("eidkit.openresty.client").new {
          endpoint = ngx.unescape_uri(ngx.var.arg_endpoint), secret_id = "%s", secret_key = "%s",
          retry = function(err, attempts)
            seen[#seen + 1] = { code = err.code, attempts = attempts, sent = err.sent,
              retryable = err.retryable, has_default = err.default_delay ~= nil }
            if attempts < 2 then return 0.01 end
          end,
          logger = function(level, ev)
            events[#events + 1] = { level = level, event = ev.event, code = ev.code, attempts = ev.attempts,
              retry_delay = ev.retry_delay, action = ev.action }
          end }
        local res, err = c:get_eid_result { EidToken = ngx.var.arg_token }
        ngx.say(cjson.encode { code = err and err.code, attempts = err and err.attempts, seen = seen,
          events = events })
      }
    }
    location = /t/misuse {
      content_by_lua_block {
        local new = require("eidkit.openresty.client").new
        local key = { secret_id = "id", secret_key = "%s", endpoint = "http://127.0.0.1:9" }
        local function try(extra)
          local o = {}
          for k, v in pairs(key) do o[k] = v end
          for k, v in pairs(extra) do o[k] = v end
          local ok, err = pcall(new, o)
          ngx.say(ok and "accepted" or err)
        end
        try { proxy = "http://proxy:3128" }
        try { ca_file = "/tmp/ca.pem" }
        try { endpoint = "https://faceid.tencentcloudapi.com" }
        try { endpoint = "ftp://x" }
        try { timeout = 0 }
        try { retry = { tries = 3 } }
        try { secretKey = "x" }
        try { endpoint = "https://faceid.tencentcloudapi.com", peer = "1.2.3.4" }
        local ok, err = pcall(new { endpoint = "http://127.0.0.1:9", secret_id = "a", secret_key = "b" }
          .get_eid_result, nil, { EidToken = 5 })
        ngx.say(ok and "accepted" or err)
      }
    }
    location = /t/named {
      content_by_lua_block {
        local c = package.loaded["spec.named_client"]
        local res, err = c:get_eid_token { MerchantId = ngx.var.arg_merchant }
        ngx.say(res and res.EidToken or tostring(err))
      }
    }
    location = /t/result {
      content_by_lua_block {
        local c = require("eidkit.openresty.client").new {
          endpoint = ngx.unescape_uri(ngx.var.arg_endpoint), secret_id = "%s", secret_key = "%s" }
        local res, err = c:get_eid_result { EidToken = ngx.var.arg_token }
        if not res then ngx.status = 502 ngx.say(tostring(err)) return end
        ngx.say(res.RequestId)
      }
    }
]]

local function post(srv, path, body)
  local r = proc.run { "curl", "-s", "--max-time", "30", "-H", "Content-Type: application/json",
    "--data-binary", cjson.encode(body), srv.url .. path }
  assert(r.code == 0, "curl failed: " .. tostring(r.stderr))
  return r.stdout
end

local function received(s) -- every request the simulator has read, this one included
  local status, h = simctl.request(s, "GET", "/sim/health")
  assert.equals(200, status)
  return h.Requests
end

describe("eidkit.openresty.client in nginx", function()
  local s, srv
  local answers = {} -- everything nginx answered, for the secrets check
  lazy_setup(function()
    s = simproc.start { "--seed", "7", "--credential", SECRET_ID .. ":" .. SECRET_KEY, "--merchant", MERCHANT }
    -- A client for a named endpoint, made while the worker starts (the name
    -- is resolved there, never while serving).
    local init = ([[
  init_worker_by_lua_block {
    package.loaded["spec.named_client"] = require("eidkit.openresty.client").new {
      endpoint = "http://localhost:%d", secret_id = "%s", secret_key = "%s" }
  }]]):format(s.port, SECRET_ID, SECRET_KEY)
    srv = nginx.start {
      http = ("  include %s/nginx/eidkit.conf;\n"):format(nginx.root) .. init,
      -- the placeholders in order: /t/call, /t/policy, /t/misuse, /t/result
      server = SERVER:format(nginx.root, SECRET_ID, SECRET_KEY, SECRET_ID, SECRET_KEY, SECRET_KEY,
        SECRET_ID, SECRET_KEY),
      worker_connections = 1024,
    }
  end)
  lazy_teardown(function()
    if srv then srv:stop() end
    if s then simproc.stop(s) end
  end)
  after_each(function() if s then simctl.clear(s) end end)

  -- One call through nginx: the decoded answer.
  local function call(action, params, opts)
    opts = opts or {}
    opts.endpoint = opts.endpoint or s.url
    local text = post(srv, "/t/call", { action = action, params = params or {}, opts = opts })
    answers[#answers + 1] = text
    local ok, out = pcall(cjson.decode, text)
    assert(ok, "nginx answered: " .. text .. "\nerror.log:\n" .. srv:error_log():sub(-3000))
    return out
  end

  -- The same call through eidkit.client on this (Lua 5.4) host.
  local function call_lua54(action, params, opts)
    opts = opts or {}
    opts.endpoint = opts.endpoint or s.url
    opts.secret_id, opts.secret_key = SECRET_ID, SECRET_KEY
    local c = client_mod.new(opts)
    local res, err = c:call(action, params or {})
    c:close()
    if res then return { res = res, attempts = nil } end
    return { err = err }
  end

  local function new_token()
    local out = call("GetEidToken", { MerchantId = MERCHANT })
    assert(out.res, "GetEidToken failed: " .. cjson.encode(out))
    return out.res.EidToken
  end

  it("GetEidToken and GetEidResult against the simulator", function()
    local out = call("GetEidToken", { MerchantId = MERCHANT, Extra = "o-1" })
    assert.equal(1, out.attempts)
    assert.matches("^[%w%-]+$", out.res.EidToken)
    assert.truthy(out.res.RequestId)
    local tok = out.res.EidToken
    assert.equal(200, simctl.finish(s, tok, { ErrCode = 0 }))
    out = call("GetEidResult", { EidToken = tok })
    assert.equal(1, out.attempts)
    assert.equal("0", out.res.Text.ErrCode == 0 and "0" or tostring(out.res.Text.ErrCode))
    assert.same(out.res, cjson.decode(out.text).Response)
    assert.is_nil(out.text_of_other)
    -- a remote error keeps Tencent's code and the call's trace id
    out = call("GetEidResult", { EidToken = "nope" })
    assert.truthy(out.err.code:match("^InvalidParameter") or out.err.code:match("^FailedOperation"),
      out.err.code)
    assert.equal(1, out.err.attempts)
    assert.matches("^%x+%-%x+%-4%x+%-%x+%-%x+$", out.err.trace_id)
    -- eid_trace_id, as the C client: the worker's seed plus a counter
    local again = call("GetEidResult", { EidToken = "nope" })
    assert.matches("^%x%x%x%x%x%x%x%x%-%x%x%x%x%-4%x%x%x%-[89ab]%x%x%x%-%x+$", again.err.trace_id)
    assert.are_not.equal(out.err.trace_id, again.err.trace_id)
    assert.equal(out.err.trace_id:sub(1, 19), again.err.trace_id:sub(1, 19))
  end)

  it("refuses misuse naming the option or field, never echoing the secret", function()
    local r = proc.run { "curl", "-s", "--max-time", "10", srv.url .. "/t/misuse" }
    answers[#answers + 1] = r.stdout
    local lines = {}
    for line in r.stdout:gmatch("[^\n]+") do lines[#lines + 1] = line:gsub("^.-: bad", "bad") end
    assert.same({
      "bad option 'proxy' (not an option in OpenResty: nginx connects to the endpoint itself; route egress at the network level)",
      "bad option 'ca_file' (not an option in OpenResty: set proxy_ssl_trusted_certificate in http { } or server { } (nginx/eidkit.conf sets the system store))",
      "bad option 'endpoint' (resolving 'faceid.tencentcloudapi.com' would block this worker (phase content): make the client in init_by_lua* or init_worker_by_lua*, or give peer = \"IP\")",
      "bad option 'endpoint' (expected http(s)://host[:port])",
      "bad option 'timeout' (out of range: 0.001..3600 s)",
      "bad option 'retry' (unknown key 'tries'; max_attempts, base, cap, unsafe)",
      "bad option 'secretKey' (unknown option)",
      "accepted",
      "bad argument #1 to 'get_eid_result' (EidToken: expected a non-empty string)",
    }, lines)
  end)

  it("resolves a named endpoint while the worker starts, and sends the name as Host", function()
    local r = proc.run { "curl", "-s", "--max-time", "10", srv.url .. "/t/named?merchant=" .. MERCHANT }
    answers[#answers + 1] = r.stdout
    assert.matches("^[%w%-]+\n$", r.stdout)
  end)

  it("says plainly when nothing listens at the endpoint (connect, never sent, retried)", function()
    local port = require("support.child").free_port()
    local ep = "http://127.0.0.1:" .. port
    local out = call("GetEidToken", { MerchantId = MERCHANT }, { endpoint = ep, retry = { base = 0.01 } })
    local ref = call_lua54("GetEidToken", { MerchantId = MERCHANT }, { endpoint = ep, retry = { base = 0.01 } })
    assert.same({ "connect", 4, false }, { out.err.code, out.err.attempts, out.err.sent })
    assert.same({ ref.err.code, ref.err.attempts, ref.err.sent }, { out.err.code, out.err.attempts, out.err.sent })
  end)

  -- Each fault, on the same call, through both hosts: the same outcome, the
  -- same attempts, and the simulator read exactly that many requests.
  -- want = { code or "ok", attempts, sent (for a failure) }
  local FAULTS = {
    { "reset once, read", "GetEidResult", { Kind = "reset", First = 1 }, { "ok", 2 } },
    { "503 twice, read", "GetEidResult", { Kind = "http", Status = 503, First = 2 }, { "ok", 3 } },
    { "503 always, read: every attempt", "GetEidResult", { Kind = "http", Status = 503 }, { "http_503", 4, true } },
    { "throttled once, read", "GetEidResult", { Kind = "throttle", First = 1 }, { "ok", 2 } },
    { "truncated once, read", "GetEidResult", { Kind = "truncate", First = 1 }, { "ok", 2 } },
    { "malformed: final", "GetEidResult", { Kind = "malformed", First = 1 }, { "bad_response", 1, true } },
    { "InternalError once, read", "GetEidResult", { Kind = "error", Code = "InternalError", First = 1 }, { "ok", 2 } },
    { "late once, read", "GetEidResult", { Kind = "latency", Ms = 800, First = 1 }, { "ok", 2 }, { timeout = 0.3 } },
    { "GetEidToken throttled once: retried", "GetEidToken", { Kind = "throttle", First = 1 }, { "ok", 2 } },
    { "GetEidToken reset: may have arrived, never resent", "GetEidToken", { Kind = "reset", First = 1 },
      { "reset", 1, true } },
    { "GetEidToken 502: never resent", "GetEidToken", { Kind = "http", Status = 502, First = 1 },
      { "http_502", 1, true } },
    { "GetEidToken InternalError: never resent", "GetEidToken", { Kind = "error", Code = "InternalError", First = 1 },
      { "InternalError", 1, true } },
    { "GetEidToken late: timed out after sending, never resent", "GetEidToken",
      { Kind = "latency", Ms = 800, First = 1 }, { "timeout", 1, true }, { timeout = 0.3 } },
  }

  describe("under the simulator's faults, the same retries as eidkit.client on Lua 5.4", function()
    local tok
    lazy_setup(function()
      tok = new_token()
      assert.equal(200, simctl.finish(s, tok, { ErrCode = 0 }))
    end)
    for _, case in ipairs(FAULTS) do
      it(case[1], function()
        local action, want = case[2], case[4]
        local params = action == "GetEidToken" and { MerchantId = MERCHANT } or { EidToken = tok }
        local function run(via)
          local rule = { Action = action }
          for k, v in pairs(case[3]) do rule[k] = v end
          simctl.faults(s, { rule })
          local opts = { retry = { base = 0.01, cap = 0.05 } }
          for k, v in pairs(case[5] or {}) do opts[k] = v end
          local before = received(s)
          local out = via(action, params, opts)
          if case[3].Kind == "latency" then os.execute("sleep 0.6") end -- let the late answer land
          local got = out.err and { out.err.code, out.err.attempts, out.err.sent } or { "ok", out.attempts }
          return got, received(s) - before - 1
        end
        local got, receipts = run(call)
        local ref, ref_receipts = run(call_lua54)
        ref[2] = ref[2] or got[2] -- eidkit.client's result carries no count on success
        assert.same(want, got, "nginx")
        assert.equal(want[2], receipts, "the simulator's receipts (nginx)")
        if want[1] ~= "ok" then assert.same(want, ref, "Lua 5.4") end
        assert.equal(receipts, ref_receipts, "the simulator's receipts: nginx vs Lua 5.4")
      end)
    end

    it("adopts the server's clock on AuthFailure.SignatureExpire and re-signs once, as on Lua 5.4", function()
      simctl.advance(s, 600)
      finally(function() simctl.advance(s, -600) end)
      local before = received(s)
      local out = call("GetEidToken", { MerchantId = MERCHANT })
      assert.equal(2, out.attempts)
      local ref = call_lua54("GetEidToken", { MerchantId = MERCHANT })
      assert.truthy(ref.res)
      assert.equal(4, received(s) - before - 1)
    end)
  end)

  -- spec/support/received_cases.lua, the table spec/client/client_spec.lua
  -- runs through eidkit.client on Lua 5.4.
  describe("an unusable answer with an identity in it (received), as on Lua 5.4", function()
    local child = require "support.child"
    local cases = require "support.received_cases"
    for _, case in ipairs(cases.cases) do
      it(case[1], function()
        assert.is_false(cases.clean(case[3]) and case[2] == 200, "the 200 bodies carry the fake identity")
        local srv_static = child.start({ proc.bin(), "spec/support/static_server.lua", tostring(case[2]),
          case[3], case.fault }, { ready = "port (%d+)" })
        local ok, e = pcall(function()
          local opts = { endpoint = "http://127.0.0.1:" .. srv_static.ready, retry = { max_attempts = 1 } }
          for k, v in pairs(case.opts or {}) do opts[k] = v end
          local text = post(srv, "/t/call", { action = "GetEidResult", params = { EidToken = "x" }, opts = opts,
            whole = true })
          answers[#answers + 1] = text
          -- Booleans, so a failure cannot print the identity.
          assert.is_true(cases.clean(text), "the identity is in nginx's answer")
          local out = cjson.decode(text)
          assert.is_true(cases.clean(cases.dump(out.whole)), "the identity is in the error table")
          assert.equal(case.code, out.err.code)
          assert.equal(case[2], out.err.http_status)
          assert.is_truthy(out.err.message:find(case.message.openresty, 1, true), out.err.message)
          assert.equal(case.received, out.err.received)
        end)
        child.stop(srv_static)
        assert(ok, e)
      end)
    end
  end)

  it("asks a retry policy after each failure and logs each attempt, as eidkit.client does", function()
    local tok = new_token()
    simctl.faults(s, { { Action = "GetEidResult", Kind = "http", Status = 503 } })
    local before = received(s)
    local r = proc.run { "curl", "-s", "--max-time", "20", srv.url .. "/t/policy?endpoint="
      .. s.url:gsub(":", "%%3A"):gsub("/", "%%2F") .. "&token=" .. tok }
    answers[#answers + 1] = r.stdout
    local out = cjson.decode(r.stdout)
    assert.equal(2, received(s) - before - 1)
    assert.same({ "http_503", 2 }, { out.code, out.attempts })
    assert.same({
      { code = "http_503", attempts = 1, sent = true, retryable = true, has_default = true },
      { code = "http_503", attempts = 2, sent = true, retryable = true, has_default = true },
    }, out.seen)
    assert.same({
      { level = "warn", event = "attempt", code = "http_503", attempts = 1, retry_delay = 0.01, action = "GetEidResult" },
      { level = "warn", event = "attempt", code = "http_503", attempts = 2, action = "GetEidResult" },
    }, out.events)
    -- the same policy on the Lua 5.4 host: the same attempts
    local ref = call_lua54("GetEidResult", { EidToken = tok },
      { retry = function(_, attempts) if attempts < 2 then return 0.01 end end })
    assert.same({ "http_503", 2 }, { ref.err.code, ref.err.attempts })
  end)

  it("never blocks its worker: 200 calls with 200 ms upstream latency on one worker in well under 1 s", function()
    local tok = new_token()
    simctl.faults(s, { { Action = "GetEidResult", Kind = "latency", Ms = 200 } })
    local url = srv.url .. "/t/result?endpoint=" .. s.url:gsub(":", "%%3A"):gsub("/", "%%2F") .. "&token=" .. tok
    local argv = { "curl", "-s", "--parallel", "--parallel-immediate", "--parallel-max", "200", "--max-time", "10",
      "-w", "%{http_code}\n" }
    for _ = 1, 200 do
      argv[#argv + 1] = "-o"
      argv[#argv + 1] = "/dev/null"
      argv[#argv + 1] = url
    end
    local function batch()
      local t0 = simproc.now()
      local r = proc.run(argv)
      local elapsed = simproc.now() - t0
      local ok = select(2, r.stdout:gsub("200\n", ""))
      assert.equal(200, ok, "answers: " .. r.stdout:sub(1, 200))
      return elapsed
    end
    -- Once to warm up (LuaJIT's traces, the keep-alive pool), then measured.
    -- Blocking would take 200 x 200 ms = 40 s in every batch; yielding takes
    -- ~200 ms plus curl's and the simulator's share of the machine, which
    -- other specs running beside this one can take for a moment: the
    -- fastest of three batches is the worker's own figure.
    batch()
    local elapsed = math.huge
    for _ = 1, 3 do
      elapsed = math.min(elapsed, batch())
      if elapsed < 0.8 then break end
    end
    assert.is_true(elapsed < 0.8, ("200 calls took %.3f s"):format(elapsed))
  end)

  it("keeps secrets out of error.log and out of every answer", function()
    local log = srv:error_log()
    assert.truthy(#answers > 10)
    for _, text in ipairs(answers) do
      assert.is_nil(text:find(SECRET_KEY, 1, true))
      assert.is_nil(text:find("Signature=", 1, true))
    end
    assert.is_nil(log:find(SECRET_KEY, 1, true))
    assert.is_nil(log:find("Signature=", 1, true))
    assert.is_nil(log:find("TC3-HMAC", 1, true))
    assert.is_nil(log:find("[error]", 1, true) and log:find("eidkit:", 1, true), "eidkit logged an error")
    local identity = require "support.received_cases"
    assert.is_true(identity.clean(log), "an identity in error.log")
  end)
end)
