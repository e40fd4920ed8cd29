-- eidkit.gateway, eidkit.metrics and eidkit.limiter with nothing but
-- lua-cjson: the check that they load and run under LuaJIT (OpenResty) as
-- under Lua 5.4. Each request runs in its own coroutine and the stand-in
-- flow yields inside start and finish, as a host's upstream calls will
-- (curl multi, cosockets): the yields cross the gateway's pcall/xpcall.
-- Raises on the first failure; prints "ok <interpreter>" at the end.
--   LUA_PATH="lua/?.lua;;" luajit spec/gateway/portable_check.lua
local gateway = require "eidkit.gateway"
local metrics = require "eidkit.metrics"
local limiter = require "eidkit.limiter"
local cjson = require "cjson"

local function check(cond, what)
  if not cond then error("portable_check: " .. what, 2) end
end

local TOKEN = "CE661F1A-0F1E-45BD-BE13-34C05CEA7681"
local yields = 0
local closed = false
local flow = {
  clock = function() return 1700000000 end,
  client = { skew = function() return -3 end },
  ledger = { stats = function()
    if closed then error("attempt to use a closed eidkit.Ledger") end
    return { issued = 1, passed = 0, failed = 0, consumed = 1, expired = 0, abandoned = 0, total = 2,
      billable = 1, due = 1 }
  end },
  authorize = function(_, req)
    local u = req.headers["x-user"]
    if u then return u end
    return nil, { code = "unauthorized", message = "refused" }
  end,
  start = function(_, p)
    coroutine.yield("GetEidToken")
    yields = yields + 1
    return { EidToken = TOKEN, Url = "https://h5.example/?token=" .. TOKEN, expires_at = 1700007200,
      subject = p.subject }
  end,
  finish = function(_, p)
    coroutine.yield("GetEidResult")
    yields = yields + 1
    if p.EidToken ~= TOKEN then return nil, { code = "unknown_token", message = "no such token" } end
    if p.subject ~= "u1" then return nil, { code = "wrong_subject", message = "not yours" } end
    return { status = "passed", code = 0, reason = "passed", retry_with_new_token = false }
  end,
  log_failures = function() return 0 end,
}

local lines = {}
local gw = gateway { flow = flow, h5_return_url = "https://shop.example/v?a=1",
  token_limit = { count = 2, per = 60 }, access_log = function(l) lines[#lines + 1] = l end,
  on_error = function() end }

-- One request in its own coroutine, resumed until it returns (a host's loop).
local function run(req)
  local co = coroutine.create(function() return gw:handle(req) end)
  while true do
    local ok, v = coroutine.resume(co)
    check(ok, "handle raised: " .. tostring(v))
    if coroutine.status(co) == "dead" then return v end
  end
end

local resp = run { method = "POST", path = "/eid/token", headers = { ["X-User"] = "u1" }, body = "{}" }
check(resp.status == 200, "token: status " .. resp.status)
check(cjson.decode(resp.body).EidToken == TOKEN, "token: body")

resp = run { method = "POST", path = "/eid/result", headers = { ["x-user"] = "u1" },
  body = '{"EidToken":"' .. TOKEN .. '"}' }
check(resp.status == 200 and cjson.decode(resp.body).status == "passed", "result: " .. resp.body)

resp = run { method = "POST", path = "/eid/result", headers = { ["x-user"] = "u2" },
  body = '{"EidToken":"' .. TOKEN .. '"}' }
check(resp.status == 403, "result: wrong subject")

resp = run { method = "GET", path = "/eid/h5/return", query = "token=" .. TOKEN, headers = { ["x-user"] = "u1" } }
check(resp.status == 303 and resp.headers.Location == "https://shop.example/v?a=1&status=passed&reason=passed",
  "h5 return: " .. tostring(resp.headers.Location))

run { method = "POST", path = "/eid/token", headers = { ["x-user"] = "u1" }, body = "{}" }
resp = run { method = "POST", path = "/eid/token", headers = { ["x-user"] = "u1" }, body = "{}" }
check(resp.status == 429 and resp.headers["Retry-After"] == "30", "subject limit")

check(run { method = "POST", path = "/eid/token", headers = {}, body = ("x"):rep(16385) }.status == 413, "413")
check(run { method = "GET", path = "/eid/token", headers = {} }.status == 405, "405")
check(run { method = "POST", path = "/eid/token", headers = { ["x-user"] = "u1" }, body = "[1" }.status == 400, "400")
check(gw:handle(nil).status == 500, "malformed request")
check(yields == 5, "the flow yielded " .. yields .. " times")

resp = run { method = "GET", path = "/healthz", headers = {} }
check(resp.status == 200, "healthz")
closed = true
check(run { method = "GET", path = "/healthz", headers = {} }.status == 503, "healthz, ledger closed")

local text = run { method = "GET", path = "/metrics", headers = {} }.body
for _, want in ipairs {
  'eidkit_gateway_requests_total{route="/eid/token",status="200"} 2\n',
  'eidkit_gateway_requests_total{route="/eid/result",status="403"} 1\n',
  'eidkit_gateway_outcomes_total{status="passed",reason="passed"} 2\n',
  'eidkit_gateway_rate_limited_total{limit="subject"} 1\n',
  "eidkit_ledger_up 0\n",
  'eidkit_ledger_tokens{state="consumed"} 1\n',
  "eidkit_upstream_clock_skew_seconds -3\n",
  "eidkit_gateway_in_flight_requests 1\n",
} do
  check(text:find(want, 1, true), "metrics lack " .. want)
end
check(#lines == 13, "access log lines: " .. #lines)
for _, l in ipairs(lines) do
  check(type(cjson.decode(l)) == "table" and not l:find(TOKEN, 1, true), "access log line " .. l)
end

-- The client logger: attempts, retries, failed attempts by code.
local reg = metrics.new()
local log = gateway.client_logger(reg)
log("warn", { event = "attempt", action = "GetEidResult", attempt = 1, duration = 0.2,
  code = "RequestLimitExceeded", retry_delay = 0.05 })
log("info", { event = "attempt", action = "GetEidResult", attempt = 2, duration = 0.04 })
local h = reg:get("eidkit_upstream_duration_seconds")
local n, sum = h:value({ action = "GetEidResult" })
check(n == 2 and math.abs(sum - 0.24) < 1e-9, "histogram")
check(reg:get("eidkit_upstream_retries_total"):value({ action = "GetEidResult" }) == 1, "retries")

local lim = limiter.memory { max_keys = 2 }
check(lim:take("a", 1, 1, 0) == true and lim:take("a", 1, 1, 0) == false, "limiter")

-- limiter.ledger hands the ledger whole milliseconds, rounded.
local got
local shared = limiter.ledger { take = function(_, key, rate, burst, now_ms)
  got = { key, rate, burst, now_ms }
  return false, 0.25
end }
local ok, retry = shared:take("upstream:GetEidToken", 80, 20, 1700000000.001)
check(ok == false and retry == 0.25 and got[1] == "upstream:GetEidToken" and got[4] == 1700000000001
  and got[4] % 1 == 0, "limiter.ledger")

local jit = rawget(_G, "jit") -- LuaJIT's, absent elsewhere
print("ok " .. (jit and jit.version or _VERSION))
