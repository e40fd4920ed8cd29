-- eidkit.gateway: the merchant backend's routes as host-agnostic Lua
-- (docs/internals/gateway.md). Built on eidkit.flow only; a host (the
-- `eidkit serve` program, OpenResty) turns HTTP into req tables and back.
--
--   local gw = require("eidkit.gateway"){ flow = flow,
--     token_fields = {}, token_params = { Config = { InputType = "1" } },
--     h5_return_url = "https://shop.example/verified" }
--   local resp = gw:handle{ method = "POST", path = "/eid/result", query = "",
--     headers = { cookie = "..." }, body = '{"EidToken":"..."}', remote_addr = "10.0.0.7" }
--   -- resp = { status = 200, headers = { ["Content-Type"] = "application/json", ... }, body = "..." }
--
-- Routes: POST /eid/token, POST /eid/result, GET /eid/h5/return, GET /healthz,
-- GET /metrics. handle never raises: a Lua error inside a route is answered
-- 500 `internal`, counted, and told to opts.on_error. Error bodies are
-- {"error":{"code","message"}} (plus "field" for 400); their messages are
-- the gateway's own words, never an upstream message, an identity or a
-- secret. Names and ID numbers never reach a response, the access log or a
-- metric.
--
-- Loaded by OpenResty too: only what Lua 5.4 and LuaJIT both run.
local cjson = require "cjson.safe"
local compat = require "eidkit.compat"
local metrics_mod = require "eidkit.metrics"
local limiter_mod = require "eidkit.limiter"

local type, error, pairs, ipairs, tostring, tonumber, setmetatable, pcall, xpcall, next =
  type, error, pairs, ipairs, tostring, tonumber, setmetatable, pcall, xpcall, next
local format, concat, sort, char = string.format, table.concat, table.sort, string.char
local floor, ceil = math.floor, math.ceil
local traceback = debug.traceback

local json = cjson.new()
json.decode_max_depth(32)
json.decode_invalid_numbers(false)
if json.encode_escape_forward_slash then json.encode_escape_forward_slash(false) end
local encode, decode, null = json.encode, json.decode, cjson.null

local _M = {}

-- Bodies above this are refused (413) before they are decoded.
_M.MAX_BODY = 16384

-- Body fields POST /eid/token can carry, and their JSON types. Which of them
-- a gateway accepts is its `token_fields` option (default: none).
local TOKEN_FIELDS = { Name = "string", IdCard = "string", Extra = "string", RedirectUrl = "string",
  Config = "object" }
-- Fields `token_params` may fix for every token (never an identity).
local TOKEN_PARAMS = { Extra = "string", RedirectUrl = "string", Config = "object" }
-- Outcome fields POST /eid/result may add to status, code, reason and
-- retry_with_new_token (`result_fields`). `result` is the Response (names,
-- images) and is there only when the flow's policy sets keep_result.
local RESULT_FIELDS = { billable = true, charges = true, attempts = true, intention = true,
  request_id = true, EidToken = true, result = true }

-- Defaults: 5 tokens per subject per 10 minutes. Upstream: Tencent allows
-- 100/s for GetEidToken and GetEidResult; a bucket lets through at most
-- burst + rate requests in any one second, so 80 + 20 stays under it.
_M.TOKEN_LIMIT = { count = 5, per = 600 }
-- What both hosts open the gateway's ledger with when given a URL.
-- request_ids = false: nothing the gateway or the flow does reads a
-- record's RequestIds (they stay in the ledger for `eidkit ledger export`),
-- and listing them built up to 32 strings on every pull.
_M.LEDGER_OPTIONS = { request_ids = false }
_M.UPSTREAM_LIMITS = { GetEidToken = { rate = 80, burst = 20 }, GetEidResult = { rate = 80, burst = 20 } }

-- Every failure's HTTP status, in one place. Families: a client code
-- http_NNN (an HTTP error from upstream) is 502; RequestLimitExceeded* (Tencent
-- throttled us) is 429 with Retry-After: 1; any other Error.Code Tencent
-- answered (err.http_status == 200) is 502 with the code passed through;
-- anything else is 500 `internal`.
local STATUS = {
  -- the gateway's own
  bad_request = 400, unauthorized = 401, not_found = 404, method_not_allowed = 405,
  too_large = 413, rate_limited = 429, internal = 500,
  -- eidkit.flow and its ledger
  wrong_subject = 403, unknown_token = 404, policy = 500, unavailable = 503, storage = 503,
  -- eidkit.client: transport
  timeout = 504, connect = 502, reset = 502, tls = 502, bad_response = 502,
}
local MESSAGES = {
  bad_request = "the request is malformed",
  unauthorized = "the request is not authorized",
  not_found = "no such route",
  method_not_allowed = "method not allowed",
  too_large = "the request body is too large",
  rate_limited = "too many requests; retry later",
  internal = "internal error",
  wrong_subject = "the token was issued to another user",
  unknown_token = "no such token",
  policy = "the merchant policy failed",
  unavailable = "the token ledger is unavailable",
  storage = "the token ledger failed",
  timeout = "the verification service did not answer in time",
  connect = "the verification service could not be reached",
  reset = "the verification service could not be reached",
  tls = "the verification service could not be reached",
  bad_response = "the verification service gave an unusable answer",
  http = "the verification service could not be reached",
  throttled = "the verification service is busy; retry later",
  tencent = "the verification service refused the request",
}

local JSON_HEADERS = { ["Content-Type"] = "application/json", ["Cache-Control"] = "no-store" }

local mt = { __index = {} }
local methods = mt.__index

-- ------------------------------------------------------------ helpers

local is_integer, finite = compat.is_integer, compat.finite

local function copy(t)
  if type(t) ~= "table" then return t end
  local c = {}
  for k, v in pairs(t) do c[k] = copy(v) end
  return c
end

local function headers_with(extra)
  local h = {}
  for k, v in pairs(JSON_HEADERS) do h[k] = v end
  if extra then for k, v in pairs(extra) do h[k] = v end end
  return h
end

local function json_response(status, obj, extra_headers)
  local body, err = encode(obj)
  if not body then error("cannot encode the answer: " .. tostring(err), 0) end
  return { status = status, headers = headers_with(extra_headers), body = body }
end

local function urlencode(s)
  return (s:gsub("[^%w%-%._~]", function(c) return format("%%%02X", c:byte()) end))
end

local function urldecode(s)
  s = s:gsub("+", " ")
  return (s:gsub("%%(%x%x)", function(h) return char(tonumber(h, 16)) end))
end

local function parse_query(s)
  local t = {}
  for pair in s:gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    k = urldecode(k)
    if t[k] == nil then t[k] = urldecode(v) end -- the first value wins
  end
  return t
end

-- url with params appended to its query (before any fragment).
local function with_query(url, params)
  local base, frag = url:match("^([^#]*)(#.*)$")
  if not base then base, frag = url, "" end
  local q = {}
  for _, p in ipairs(params) do q[#q + 1] = urlencode(p[1]) .. "=" .. urlencode(p[2]) end
  local sep = "?"
  if base:find("?", 1, true) then
    local last = base:sub(-1)
    sep = (last == "?" or last == "&") and "" or "&"
  end
  return base .. sep .. concat(q, "&") .. frag
end

-- A token from outside goes into logs only shortened, and only when it
-- looks like a token.
local function short_token(tok)
  if type(tok) ~= "string" or tok == "" or #tok > 128 or tok:find("[^%w%-_.]") then return nil end
  return tok:sub(1, 8) .. "..."
end

-- v as one line of at most max bytes, for a report to an operator.
local function one_line(v, max)
  return (tostring(v):gsub("%c", " "):sub(1, max))
end

-- A public error code: ours, the client's, or Tencent's Error.Code as long
-- as it looks like one.
local function safe_code(code)
  if type(code) == "string" and #code <= 64 and code:match("^[%w_.]+$") then return code end
  return nil
end

-- A failure as the gateway answers it: {status, code, message, field,
-- retry_after}. err: an eidkit error table (flow, ledger, client) or one
-- of the gateway's own ({code =, message =, field =, retry_after =}).
local function answer_of(err)
  local code = type(err) == "table" and safe_code(err.code) or nil
  if code == nil then return { status = 500, code = "internal", message = MESSAGES.internal } end
  local own = err.own == true
  local a = { code = code, field = own and err.field or nil, retry_after = own and err.retry_after or nil }
  local status = STATUS[code]
  if status then
    a.status = status
    a.message = own and err.message or MESSAGES[code]
  elseif code:match("^http_%d%d%d$") then
    a.status, a.message = 502, MESSAGES.http
  elseif code:find("^RequestLimitExceeded") then
    a.status, a.message, a.retry_after = 429, MESSAGES.throttled, 1
  elseif err.http_status == 200 then
    a.status, a.message = 502, MESSAGES.tencent
  else
    a.status, a.code, a.message = 500, "internal", MESSAGES.internal
  end
  return a
end

-- One of the gateway's own failures.
local function problem(code, message, extra)
  local p = { code = code, message = message or MESSAGES[code], own = true }
  if extra then for k, v in pairs(extra) do p[k] = v end end
  return p
end

-- 400 naming the field; a name from the body that is not a plain
-- identifier is not repeated back (it is "body").
local function bad_request(field, what)
  if #field > 64 or not field:match("^[%w_]+$") then field = "body" end
  return problem("bad_request", field .. ": " .. what, { field = field })
end

-- Whole seconds, at least 1; a float a hair above an integer (1 / (5/600))
-- is that integer.
local function retry_after_header(s)
  if not finite(s) or s < 1 then s = 1 end
  if s > 86400 then s = 86400 end
  return format("%d", ceil(s - 1e-9))
end

-- The JSON error answer for a failure; ctx remembers the code for metrics
-- and the access log.
local function fail(ctx, err)
  local a = answer_of(err)
  ctx.code = a.code
  -- An error the gateway has no answer for is a 500 whose cause the caller
  -- never sees: handle reports it, so the operator does.
  if a.code == "internal" and not (type(err) == "table" and err.own) then ctx.unmapped = err end
  local extra
  if a.status == 429 then extra = { ["Retry-After"] = retry_after_header(a.retry_after) } end
  local e = { code = a.code, message = a.message, field = a.field }
  return json_response(a.status, { error = e }, extra)
end

-- gateway.error_response(code) -> resp: the gateway's answer for one of its
-- own codes (STATUS), for a host that must answer before handle can, e.g.
-- 413 `too_large` for a body it refuses to buffer.
function _M.error_response(code)
  if type(code) ~= "string" or not STATUS[code] then
    error("bad argument #1 to 'error_response' (expected an error code such as 'too_large')", 2)
  end
  return fail({}, problem(code))
end

-- ------------------------------------------------------------ metrics

-- The gateway's metrics in a registry (declaring them again returns the
-- same ones, so client_logger and new may both call this).
local function declare_metrics(reg)
  return {
    requests = reg:counter("eidkit_gateway_requests_total", "Requests answered, by route and HTTP status.",
      { "route", "status" }),
    errors = reg:counter("eidkit_gateway_errors_total", "Error answers, by route and error code.",
      { "route", "code" }),
    in_flight = reg:gauge("eidkit_gateway_in_flight_requests", "Requests being handled now."),
    outcomes = reg:counter("eidkit_gateway_outcomes_total",
      "Verification outcomes answered (replays included), by status and reason.", { "status", "reason" }),
    limited = reg:counter("eidkit_gateway_rate_limited_total",
      "Requests refused by a rate limit: subject (per-subject tokens) or the upstream action.", { "limit" }),
    log_failures = reg:counter("eidkit_gateway_log_failures_total",
      "Access log lines lost: the access logger raised, or the host could not write them."),
    flow_log_failures = reg:counter("eidkit_flow_log_failures_total",
      "Flow events dropped because the policy's redact hook or the flow's logger failed."),
    flow_unclassified = reg:counter("eidkit_flow_unclassified_errcodes_total",
      "Results whose Text.ErrCode eidkit does not know (classified failed/unclassified), by code.",
      { "code" }),
    ledger_up = reg:gauge("eidkit_ledger_up", "1 when the token ledger answered the last stats call, else 0."),
    ledger_tokens = reg:gauge("eidkit_ledger_tokens", "Tokens in the ledger, by state.", { "state" }),
    ledger_due = reg:gauge("eidkit_ledger_due_tokens", "Tokens the sweep would pull now."),
    lua_memory = reg:gauge("eidkit_lua_memory_bytes",
      "Memory the Lua state holds (collectgarbage count), next to the process's RSS."),
    skew = reg:gauge("eidkit_upstream_clock_skew_seconds",
      "The API client's clock skew: the server's clock minus ours."),
    upstream = reg:histogram("eidkit_upstream_duration_seconds",
      "Duration of one attempt of an API call, by action.", { "action" }),
    retries = reg:counter("eidkit_upstream_retries_total",
      "Attempts of an API call that the client followed with another.", { "action" }),
    upstream_errors = reg:counter("eidkit_upstream_errors_total",
      "Failed attempts of an API call, by action and code.", { "action", "code" }),
  }
end

-- Bound series (metric:bind) for the label sets the request path counts,
-- found once instead of on every request. At most BOUND_MAX sets a cache:
-- some values come from outside (a policy's reasons, Tencent's codes), and
-- past that a set is counted the slow way, never lost.
local BOUND_MAX = 256

local function bound_cache()
  return { rows = {}, n = 0 }
end

local function bound2(cache, metric, k1, v1, k2, v2)
  local row = cache.rows[v1]
  local b = row and row[v2]
  if b then return b end
  b = metric:bind({ [k1] = v1, [k2] = v2 })
  if cache.n < BOUND_MAX and v1 == v1 and v2 == v2 then -- NaN is no table key
    if not row then
      row = {}
      cache.rows[v1] = row
    end
    row[v2] = b
    cache.n = cache.n + 1
  end
  return b
end

-- gateway.client_logger(registry [, next]) -> function(level, event) for
-- eidkit.client's `logger` option: each attempt's duration into
-- eidkit_upstream_duration_seconds, retries, failed attempts by code, the
-- skew; then next(level, event). It never raises (a raising client logger
-- would end the client's calls): a failing next is ignored.
function _M.client_logger(reg, nxt)
  if type(reg) ~= "table" or type(reg.counter) ~= "function" then
    error("bad argument #1 to 'client_logger' (expected an eidkit.metrics registry)", 2)
  end
  if nxt ~= nil and type(nxt) ~= "function" then
    error("bad argument #2 to 'client_logger' (expected function(level, event))", 2)
  end
  local m = declare_metrics(reg)
  local skew = m.skew:bind(nil)
  -- Per action as the client names it: its label and bound series (a
  -- client has a handful of actions; a logger fed others stops caching).
  local actions, n_actions = {}, 0
  local function action_of(raw)
    local a = actions[raw]
    if a then return a end
    local name = safe_code(raw) or "unknown"
    a = { name = name, upstream = m.upstream:bind({ action = name }),
      retries = m.retries:bind({ action = name }), errors = bound_cache() }
    if type(raw) == "string" and n_actions < 64 then
      actions[raw] = a
      n_actions = n_actions + 1
    end
    return a
  end
  local function record(ev)
    local what = ev.event
    if what ~= "attempt" and what ~= "skew" then return end
    local a = action_of(ev.action)
    local dur = ev.duration or ev.dur
    if finite(dur) and dur >= 0 then a.upstream:observe(dur) end
    local code = ev.code
    if type(code) == "string" and code ~= "" then
      bound2(a.errors, m.upstream_errors, "action", a.name, "code", safe_code(code) or "other"):inc()
    end
    if what == "skew" or (finite(ev.retry_delay) and ev.retry_delay >= 0) then a.retries:inc() end
    if finite(ev.skew) then skew:set(ev.skew) end
  end
  return function(level, ev)
    if type(ev) == "table" then pcall(record, ev) end
    if nxt then pcall(nxt, level, ev) end
  end
end

-- ledger:stats() -> counts | nil, err; never raises.
local function ledger_stats(ledger)
  local ok, fn = pcall(function() return ledger.stats end)
  if not ok or type(fn) ~= "function" then return nil, "the ledger has no stats method" end
  local cok, s, err = pcall(fn, ledger)
  if not cok then return nil, s end
  if type(s) ~= "table" then return nil, err end
  return s
end

-- Fields of ledger stats that are not a state.
local NOT_STATES = { total = true, billable = true, due = true }

-- Ledger counts, skew and flow log failures into the registry. true when
-- the ledger answered.
local function refresh(self)
  local m = self.m
  local s = ledger_stats(self.flow.ledger)
  m.ledger_up:set(nil, s and 1 or 0)
  if s then
    for k, v in pairs(s) do
      if type(k) == "string" and not NOT_STATES[k] and finite(v) then m.ledger_tokens:set({ state = k }, v) end
    end
    if finite(s.due) then m.ledger_due:set(nil, s.due) end
  end
  local client = self.flow.client
  local ok, skew = pcall(function() return client:skew() end)
  if ok and finite(skew) then m.skew:set(nil, skew) end
  local lok, n = pcall(function() return self.flow:log_failures() end)
  if lok and finite(n) then m.flow_log_failures:set(nil, n) end
  local uok, codes = pcall(function() return self.flow:unclassified_codes() end)
  if uok and type(codes) == "table" then
    for code, count in pairs(codes) do
      if finite(count) then m.flow_unclassified:set({ code = code }, count) end
    end
  end
  m.lua_memory:set(nil, collectgarbage("count") * 1024)
  return s ~= nil
end

-- ------------------------------------------------------------ requests

-- The request as routes and the authorize hook see it: header names
-- lower-cased, the query a table (first value of a repeated name), the
-- path without its query.
local function view_of(req)
  local path = req.path
  local query = req.query
  local qpos = path:find("?", 1, true)
  if qpos then
    if query == nil or query == "" then query = path:sub(qpos + 1) end
    path = path:sub(1, qpos - 1)
  end
  local q = {}
  if type(query) == "string" then
    if query ~= "" then q = parse_query(query) end
  elseif type(query) == "table" then
    for k, v in pairs(query) do
      if type(v) == "table" then v = v[1] end
      if v == true then v = "" end
      if type(k) == "string" and type(v) == "string" then q[k] = v end
    end
  end
  local h = {}
  if type(req.headers) == "table" then
    for k, v in pairs(req.headers) do
      if type(k) == "string" then h[k:lower()] = v end
    end
  end
  return { method = req.method, path = path, query = q, headers = h, body = req.body,
    remote_addr = req.remote_addr or req.remote }
end

-- A JSON object body: the table, or nil, problem. nil and "" are {}.
local function decode_object(body)
  if body == nil or body == "" then return {} end
  local v = decode(body)
  if type(v) ~= "table" then return nil, bad_request("body", "expected a JSON object") end
  for k in pairs(v) do
    if type(k) ~= "string" then return nil, bad_request("body", "expected a JSON object") end
  end
  return v
end

-- Numbers inside Config must be finite (1e400 decodes to inf, which the
-- client could not encode).
local function check_nested(v, depth)
  if type(v) == "number" then return finite(v) end
  if type(v) ~= "table" then return true end
  if depth > 32 then return false end
  for k, x in pairs(v) do
    if not check_nested(k, depth + 1) or not check_nested(x, depth + 1) then return false end
  end
  return true
end

local function check_type(field, v, want)
  if want == "string" then
    if type(v) ~= "string" then return bad_request(field, "expected a string") end
  elseif type(v) ~= "table" or (next(v) ~= nil and type(next(v)) ~= "string") then
    return bad_request(field, "expected a JSON object")
  elseif not check_nested(v, 1) then
    return bad_request(field, "numbers must be finite")
  end
  return nil
end

-- flow:authorize(view) -> subject | nil, err (unauthorized, policy)
local function authorize(self, view)
  return self.flow:authorize(view)
end

-- Does obj have a method `name`? (An object whose __index raises has none.)
local function has_method(obj, name)
  local ok, yes = pcall(function() return type(obj[name]) == "function" end)
  return ok and yes
end

-- Take one token from a bucket: nil when allowed, else the problem.
local function take(self, key, rate, burst, label)
  local ok, allowed, retry = pcall(self.limiter.take, self.limiter, key, rate, burst, self.clock())
  if ok and allowed == true then return nil end
  if ok and allowed == false then
    self.m.limited:inc({ limit = label })
    return problem("rate_limited", nil, { retry_after = retry })
  end
  self:report_error("the rate limiter failed: " .. tostring(ok and retry or allowed))
  return problem("unavailable", "the rate limiter is unavailable")
end

local function take_upstream(self, action)
  local l = self.upstream[action]
  if not l then return nil end
  return take(self, "upstream:" .. action, l.rate, l.burst, action)
end

-- Give back a token a take took for a request that never reached Tencent,
-- so refusing it costs the caller nothing. A limiter without give (a
-- merchant's own) keeps the token; a give that fails only costs a token,
-- so it is reported and the answer stands.
local function give(self, key, rate, burst)
  if not self.limiter_gives then return end
  local lim = self.limiter
  local gok, done, err = pcall(lim.give, lim, key, rate, burst, self.clock())
  if not gok or not done then
    self:report_error("the rate limiter failed to give a token back: " .. tostring(gok and err or done))
  end
end

local function give_subject(self, subject)
  local l = self.token_limit
  if l then give(self, "subject:" .. subject, l.rate, l.burst) end
end

local function give_upstream(self, action)
  local l = self.upstream[action]
  if l then give(self, "upstream:" .. action, l.rate, l.burst) end
end

-- ------------------------------------------------------------ routes

-- flow:start's misuse raises name the field it refused (Extra too long, ...):
-- the caller's mistake, so 400 naming it.
local function start(self, params)
  local ok, started, err = pcall(self.flow.start, self.flow, params)
  if ok then return started, err end
  local field, what = tostring(started):match("bad argument #1 to 'start' %((%w+): (.*)%)$")
  if field and TOKEN_FIELDS[field] then return nil, bad_request(field, what) end
  error(started, 0)
end

-- POST /eid/token
local function route_token(self, view, ctx)
  local subject, aerr = authorize(self, view)
  if not subject then return fail(ctx, aerr) end
  local body, berr = decode_object(view.body)
  if not body then return fail(ctx, berr) end
  local params = { subject = subject }
  for k, v in pairs(self.token_params) do params[k] = copy(v) end
  local keys = {}
  for k in pairs(body) do keys[#keys + 1] = k end
  sort(keys)
  for _, k in ipairs(keys) do
    local v = body[k]
    local want = TOKEN_FIELDS[k]
    if not want then return fail(ctx, bad_request(k, "unknown field")) end
    if not self.token_fields[k] then return fail(ctx, bad_request(k, "not accepted by this gateway")) end
    if v ~= null then
      local terr = check_type(k, v, want)
      if terr then return fail(ctx, terr) end
      params[k] = v
    end
  end
  -- The subject's limit first, so one caller's flood cannot drain the
  -- upstream bucket every caller shares; a request refused after it (the
  -- upstream bucket, or flow:start refusing an argument before any call)
  -- gets its tokens back.
  local lim = self.token_limit and take(self, "subject:" .. subject, self.token_limit.rate,
    self.token_limit.burst, "subject")
  if lim then return fail(ctx, lim) end
  lim = take_upstream(self, "GetEidToken")
  if lim then
    give_subject(self, subject)
    return fail(ctx, lim)
  end
  local started, err = start(self, params)
  if not started then
    if type(err) == "table" and err.own and err.code == "bad_request" then
      give_subject(self, subject)
      give_upstream(self, "GetEidToken")
    end
    return fail(ctx, err)
  end
  ctx.token = started.EidToken
  return json_response(200, { EidToken = started.EidToken, Url = started.Url,
    expires_at = started.expires_at })
end

-- flow:finish for the subject; the outcome or nil, err. Counts outcomes.
local function finish(self, subject, tok, ctx)
  ctx.token = tok
  local gated = self.gates_pulls
  if not gated then
    local lim = take_upstream(self, "GetEidResult")
    if lim then return nil, lim end
  end
  local outcome, err = self.flow:finish { subject = subject, EidToken = tok }
  if not outcome then
    -- The ledger refused the token before any pull: it reached nobody, so
    -- a caller posting other users' or made-up tokens cannot drain the
    -- bucket every caller's results share.
    if not gated and type(err) == "table" and (err.code == "unknown_token" or err.code == "wrong_subject") then
      give_upstream(self, "GetEidResult")
    end
    return nil, err
  end
  local status = type(outcome.status) == "string" and outcome.status or "unknown"
  local reason = type(outcome.reason) == "string" and outcome.reason or "none"
  ctx.outcome, ctx.reason = status, reason
  bound2(self.outcomes_bound, self.m.outcomes, "status", status, "reason", reason):inc()
  return outcome
end

-- POST /eid/result
local function route_result(self, view, ctx)
  local subject, aerr = authorize(self, view)
  if not subject then return fail(ctx, aerr) end
  local body, berr = decode_object(view.body)
  if not body then return fail(ctx, berr) end
  local unknown
  for k in pairs(body) do
    -- The first unknown name in sorted order: the same answer for the same body.
    if k ~= "EidToken" and (unknown == nil or k < unknown) then unknown = k end
  end
  if unknown then return fail(ctx, bad_request(unknown, "unknown field")) end
  local tok = body.EidToken
  if type(tok) ~= "string" then return fail(ctx, bad_request("EidToken", "expected a string")) end
  local outcome, err = finish(self, subject, tok, ctx)
  if not outcome then return fail(ctx, err) end
  local answer = { status = outcome.status, code = outcome.code, reason = outcome.reason,
    retry_with_new_token = outcome.retry_with_new_token == true }
  if answer.code == nil then answer.code = null end
  for k in pairs(self.result_fields) do answer[k] = outcome[k] end
  return json_response(200, answer)
end

-- GET /eid/h5/return?token=...: the H5 RedirectUrl landing. Always a 303 to
-- h5_return_url: ?status=<outcome status>&reason=<reason>, or
-- ?status=error&code=<code> when the token is missing, unknown, another
-- user's, or the result could not be had.
local function route_h5_return(self, view, ctx)
  local function redirect(params)
    return { status = 303, headers = { Location = with_query(self.h5_return_url, params),
      ["Cache-Control"] = "no-store" }, body = "" }
  end
  local function fail_redirect(err)
    local a = answer_of(err)
    ctx.code = a.code
    return redirect({ { "status", "error" }, { "code", a.code } })
  end
  local subject, aerr = authorize(self, view)
  if not subject then return fail_redirect(aerr) end
  local tok = view.query.token
  if type(tok) ~= "string" or tok == "" then return fail_redirect(bad_request("token", "missing")) end
  local outcome, err = finish(self, subject, tok, ctx)
  if not outcome then return fail_redirect(err) end
  return redirect({ { "status", ctx.outcome }, { "reason", ctx.reason } })
end

-- GET /healthz: 200 only when the ledger answers.
local function route_healthz(self, _, ctx)
  if refresh(self) then return json_response(200, { status = "ok" }) end
  return fail(ctx, problem("unavailable"))
end

-- GET /metrics
local function route_metrics(self)
  refresh(self)
  return { status = 200, headers = { ["Content-Type"] = metrics_mod.CONTENT_TYPE,
    ["Cache-Control"] = "no-store" }, body = self.metrics:render() }
end

local ROUTES = {
  ["/eid/token"] = { method = "POST", fn = route_token },
  ["/eid/result"] = { method = "POST", fn = route_result },
  ["/eid/h5/return"] = { method = "GET", fn = route_h5_return, needs = "h5_return_url" },
  -- HEAD too where GET is safe (a load balancer's check; the host sends
  -- the head alone). Not the H5 landing: its GET pulls a result.
  ["/healthz"] = { method = "GET", fn = route_healthz, head = true },
  ["/metrics"] = { method = "GET", fn = route_metrics, head = true },
}

local function dispatch(self, req, ctx)
  if type(req) ~= "table" or type(req.path) ~= "string" or type(req.method) ~= "string"
    or (req.body ~= nil and type(req.body) ~= "string") then
    error("the host passed a malformed request (expected method, path and body strings)", 0)
  end
  local view = view_of(req)
  ctx.view = view
  local route = ROUTES[view.path]
  if not route or (route.needs and not self[route.needs]) then return fail(ctx, problem("not_found")) end
  ctx.route = view.path
  if view.method ~= route.method and not (route.head and view.method == "HEAD") then
    local resp = fail(ctx, problem("method_not_allowed"))
    resp.headers.Allow = route.head and route.method .. ", HEAD" or route.method
    return resp
  end
  if req.body and #req.body > self.max_body then
    return fail(ctx, problem("too_large", format("the request body is larger than %d bytes", self.max_body)))
  end
  return route.fn(self, view, ctx)
end

-- The access log: one JSON object per request. No body, no query string
-- (it carries the token), no subject, no header; the token shortened.
local function access_log(self, ctx, resp, t0)
  if not self.access_log then return end
  local view = ctx.view or {}
  local path = ctx.route
  if path == "other" and type(view.path) == "string" then
    path = view.path:sub(1, 128):gsub("[^%w%-%._~/]", "_")
  end
  local dur = self.clock() - t0
  local line = encode({ time = t0, method = type(view.method) == "string" and view.method:sub(1, 16) or nil,
    path = path, status = resp.status, duration = finite(dur) and floor(dur * 1e6 + 0.5) / 1e6 or nil,
    remote_addr = type(view.remote_addr) == "string" and view.remote_addr:sub(1, 64) or nil,
    code = ctx.code, token = short_token(ctx.token), outcome = ctx.outcome, reason = ctx.reason })
  local ok, err = pcall(self.access_log, line)
  if not ok then self:log_lost(1, "the access logger raised: " .. tostring(err)) end
end

-- gw:log_lost(n, why): n access log lines were lost (the logger raised, or
-- a host's buffered writer failed later): counted, and said once.
function methods.log_lost(self, n, why)
  self.m.log_failures:inc(nil, n)
  self.log_failure_count = self.log_failure_count + n
  if self.log_failure_count == n then
    pcall(self.on_log_failure, one_line(why, 200))
  end
end

local function handle(self, req)
  local t0 = self.clock()
  local ctx = { route = "other" }
  self.in_flight:inc()
  local ok, resp = xpcall(dispatch, traceback, self, req, ctx)
  self.in_flight:dec()
  if not ok then
    self:report_error("a route raised: " .. tostring(resp))
    resp = fail(ctx, problem("internal"))
  elseif ctx.unmapped ~= nil then
    local e = ctx.unmapped
    local code, message = e, ""
    if type(e) == "table" then code, message = e.code, e.message end
    self:report_error(format("%s answered 500 internal for an error it does not map: %s: %s", ctx.route,
      one_line(code, 64), one_line(message, 200)))
  end
  bound2(self.requests_bound, self.m.requests, "route", ctx.route, "status", resp.status):inc()
  if ctx.code then bound2(self.errors_bound, self.m.errors, "route", ctx.route, "code", ctx.code):inc() end
  access_log(self, ctx, resp, t0)
  return resp
end

local INTERNAL = '{"error":{"code":"internal","message":"internal error"}}'

-- gw:handle(req) -> resp. Never raises.
function methods.handle(self, req)
  local ok, resp = xpcall(handle, traceback, self, req)
  if ok then return resp end
  pcall(self.report_error, self, "the gateway failed around a route: " .. tostring(resp))
  return { status = 500, headers = headers_with(), body = INTERNAL }
end

-- gw:report_error(message): a Lua error the gateway caught, to opts.on_error
-- (never to the caller). Never raises.
function methods.report_error(self, message)
  pcall(self.on_error, message)
end

-- gw:client_logger([next]) -> a logger for eidkit.client recording into gw.metrics.
function methods.client_logger(self, nxt)
  return _M.client_logger(self.metrics, nxt)
end

-- ------------------------------------------------------------ the module

local function to_stderr_error(message)
  io.stderr:write("eidkit.gateway: ", message, "\n")
end

local function to_stderr_log(why)
  io.stderr:write("eidkit.gateway: an access log line could not be written (", why, "); lines that ",
    "fail are counted in eidkit_gateway_log_failures_total, and this is said once\n")
end

local function names_set(v, allowed, option)
  if v == nil then return {} end
  if type(v) ~= "table" then error(format("bad option '%s' (expected a list of field names)", option), 3) end
  local set = {}
  for i, k in pairs(v) do
    if not is_integer(i) or not allowed[k] then
      local names = {}
      for n in pairs(allowed) do names[#names + 1] = n end
      sort(names)
      error(format("bad option '%s' (unknown field '%s'; expected some of %s)", option, tostring(k),
        concat(names, ", ")), 3)
    end
    set[k] = true
  end
  return set
end

local function rate_option(v, option)
  if type(v) ~= "table" or not finite(v.rate) or v.rate <= 0 or not finite(v.burst) or v.burst < 1 then
    error(format("bad option '%s' (expected {rate = tokens per second > 0, burst = n >= 1})", option), 3)
  end
  for k in pairs(v) do
    if k ~= "rate" and k ~= "burst" then
      error(format("bad option '%s' (unknown key '%s')", option, tostring(k)), 3)
    end
  end
  return { rate = v.rate, burst = v.burst }
end

local KNOWN = { flow = 1, metrics = 1, limiter = 1, clock = 1, token_fields = 1, token_params = 1,
  result_fields = 1, h5_return_url = 1, token_limit = 1, upstream_limits = 1, max_body = 1,
  access_log = 1, on_log_failure = 1, on_error = 1 }

-- gateway.new{flow = ..., ...} -> gw (options: docs/internals/gateway.md)
function _M.new(opts)
  if type(opts) ~= "table" then error("bad argument #1 to 'gateway' (expected a table of options)", 2) end
  for k in pairs(opts) do
    if not KNOWN[k] then error(format("bad option '%s' (unknown option)", tostring(k)), 2) end
  end
  local flow = opts.flow
  local fok, shaped = pcall(function()
    return type(flow.start) == "function" and type(flow.finish) == "function"
      and type(flow.authorize) == "function"
  end)
  if not fok or not shaped then error("bad option 'flow' (expected an eidkit.flow)", 2) end
  for _, k in ipairs { "clock", "access_log", "on_log_failure", "on_error" } do
    if opts[k] ~= nil and type(opts[k]) ~= "function" then
      error(format("bad option '%s' (expected a function)", k), 2)
    end
  end
  local reg = opts.metrics
  if reg == nil then
    reg = metrics_mod.new()
  elseif type(reg) ~= "table" or type(reg.counter) ~= "function" or type(reg.render) ~= "function" then
    error("bad option 'metrics' (expected an eidkit.metrics registry)", 2)
  end
  local lim = opts.limiter
  if lim == nil then
    lim = limiter_mod.memory()
  else
    if not has_method(lim, "take") then
      error("bad option 'limiter' (expected an object with take(key, rate, burst, now))", 2)
    end
  end
  local token_params = {}
  if opts.token_params ~= nil then
    if type(opts.token_params) ~= "table" then error("bad option 'token_params' (expected a table)", 2) end
    for k, v in pairs(opts.token_params) do
      local want = TOKEN_PARAMS[k]
      if not want then
        error(format("bad option 'token_params' (%s: not a field a gateway may fix; Config, Extra, "
          .. "RedirectUrl)", tostring(k)), 2)
      end
      if (want == "string") ~= (type(v) == "string") or (want == "object" and type(v) ~= "table") then
        error(format("bad option 'token_params' (%s: expected %s)", k, want == "string" and "string" or "table"), 2)
      end
      token_params[k] = copy(v)
    end
  end
  local h5 = opts.h5_return_url
  if h5 ~= nil and (type(h5) ~= "string" or h5:find("%c") or #h5 > 2048
    or not (h5:find("^https?://[^/]") or h5:find("^/[^/]") or h5 == "/")) then
    error("bad option 'h5_return_url' (expected an http(s) URL or an absolute path, without control "
      .. "characters)", 2)
  end
  local token_limit = opts.token_limit
  if token_limit == nil then token_limit = _M.TOKEN_LIMIT end
  if token_limit ~= false then
    local t = token_limit
    if type(t) ~= "table" or not is_integer(t.count) or t.count < 1 or not finite(t.per) or t.per <= 0 then
      error("bad option 'token_limit' (expected {count = n >= 1, per = seconds > 0} or false)", 2)
    end
    for k in pairs(t) do
      if k ~= "count" and k ~= "per" then error(format("bad option 'token_limit' (unknown key '%s')", tostring(k)), 2) end
    end
    token_limit = { rate = t.count / t.per, burst = t.count }
  end
  local upstream = {}
  for action, l in pairs(_M.UPSTREAM_LIMITS) do upstream[action] = { rate = l.rate, burst = l.burst } end
  if opts.upstream_limits ~= nil then
    if type(opts.upstream_limits) ~= "table" then
      error("bad option 'upstream_limits' (expected {GetEidToken = {rate =, burst =}, GetEidResult = ...})", 2)
    end
    for action, l in pairs(opts.upstream_limits) do
      if not _M.UPSTREAM_LIMITS[action] then
        error(format("bad option 'upstream_limits' (unknown action '%s'; GetEidToken, GetEidResult)",
          tostring(action)), 2)
      end
      upstream[action] = l ~= false and rate_option(l, "upstream_limits." .. action) or nil
    end
  end
  local max_body = opts.max_body or _M.MAX_BODY
  if not is_integer(max_body) or max_body < 1 or max_body > 1048576 then
    error("bad option 'max_body' (expected an integer 1..1048576 bytes)", 2)
  end
  local clock = opts.clock or (type(flow.clock) == "function" and flow.clock) or os.time
  local self = setmetatable({
    flow = flow, metrics = reg, limiter = lim, limiter_gives = has_method(lim, "give"), clock = clock,
    token_fields = names_set(opts.token_fields, TOKEN_FIELDS, "token_fields"),
    token_params = token_params,
    result_fields = names_set(opts.result_fields, RESULT_FIELDS, "result_fields"),
    h5_return_url = h5, token_limit = token_limit or nil, upstream = upstream, max_body = max_body,
    access_log = opts.access_log, on_log_failure = opts.on_log_failure or to_stderr_log,
    on_error = opts.on_error or to_stderr_error, log_failure_count = 0,
  }, mt)
  self.m = declare_metrics(reg)
  self.in_flight = self.m.in_flight:bind(nil)
  self.requests_bound, self.errors_bound = bound_cache(), bound_cache()
  self.outcomes_bound = bound_cache()
  -- The GetEidResult bucket at the flow's call, so an answer the flow
  -- gives without one (a front end polling a settled token: the memo, a
  -- kept payload) costs no token. A flow without gate_pulls (a merchant's
  -- own object) gets it taken before every finish instead.
  if has_method(flow, "gate_pulls") then
    flow:gate_pulls(function() return take_upstream(self, "GetEidResult") end)
    self.gates_pulls = true
  end
  return self
end

mt.__name = "eidkit.Gateway"
mt.__tostring = function() return "eidkit.gateway" end

setmetatable(_M, { __call = function(_, opts) return _M.new(opts) end })

return _M
