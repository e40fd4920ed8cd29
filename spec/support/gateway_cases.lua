-- One table of requests and the answers the gateway must give, run against
-- any running host with the shape of support.serveproc's handle (s.url,
-- s.sim_url): `eidkit serve --sim` and examples/openresty/run. A case's
-- answer is reduced to what a client sees (status, the error's code, field
-- and message, the body's keys, the headers that matter), so the two hosts
-- are compared on exactly that and each is checked against `want`.
--   local cases = require "support.gateway_cases"
--   local got = cases.run(s)   -- { [case name] = answer }
--   cases.check(got)           -- raises on the first answer that differs from its want
local cjson = require "cjson"
local sp = require "support.serveproc"

local _M = {}

-- What a client sees of an answer.
function _M.answer(r)
  local a = { status = r.status, content_type = r.headers["content-type"], retry_after = r.headers["retry-after"],
    allow = r.headers["allow"], cache_control = r.headers["cache-control"], empty = r.body == "" }
  local j = r.json
  if type(j) == "table" then
    if type(j.error) == "table" then
      a.code, a.field, a.message = j.error.code, j.error.field, j.error.message
    end
    local keys = {}
    for k in pairs(j) do keys[#keys + 1] = k end
    table.sort(keys)
    a.keys = table.concat(keys, ",")
    if j.status ~= nil then a.outcome, a.reason = j.status, j.reason end
    if j.code ~= nil and j.code ~= cjson.null then a.errcode = j.code end
  end
  local loc = r.headers["location"]
  if loc then a.location = loc:gsub("^.-%?", "?") end
  return a
end

local function req(s, method, path, o)
  return sp.request(s, method, path, o)
end

local function token(s, user)
  return sp.token(s, user)
end

local JSON = "application/json"

-- HEAD path on a raw connection, then GET /healthz on the same one: a host
-- that sent a body after the HEAD's head would put it before the second
-- status line. -> { status, headers, body = what came between the two }.
local function head(s, path, user)
  local host, port = s.url:match("^http://%[?([^%]/]-)%]?:(%d+)$")
  local hdr = user and ("X-Eidkit-Demo-User: " .. user .. "\r\n") or ""
  local script = ([[exec 3<>/dev/tcp/%s/%s || exit 1
printf 'HEAD %s HTTP/1.1\r\nHost: x\r\n%s\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' >&3
timeout 10 cat <&3]]):format(host, port, path, hdr)
  local out = require("support.proc").run({ "bash", "-c", script }).stdout or ""
  local first, rest = out:match("^(.-\r\n)\r\n(.*)$")
  assert(first, "no answer to HEAD " .. path .. ": " .. out)
  local r = { status = tonumber(first:match("^HTTP/1%.1 (%d+)")), headers = {} }
  for k, v in first:gmatch("\r\n([^:\r\n]+):%s*([^\r\n]*)") do r.headers[k:lower()] = v end
  r.body = rest:match("^(.-)HTTP/1%.1 ") or rest
  return r
end

-- { name, fn(s) -> the response, want = {fields the answer must have} }
_M.CASES = {
  { "a token for a user", function(s) return req(s, "POST", "/eid/token", { user = "case-alice" }) end,
    want = { status = 200, keys = "EidToken,Url,expires_at", content_type = JSON, cache_control = "no-store" } },
  { "health", function(s) return req(s, "GET", "/healthz", {}) end,
    want = { status = 200, keys = "status", outcome = "ok" } },
  { "no user", function(s) return req(s, "POST", "/eid/token", {}) end,
    want = { status = 401, code = "unauthorized" } },
  { "bad JSON", function(s) return req(s, "POST", "/eid/token", { user = "case-bob", body = "{nope" }) end,
    want = { status = 400, code = "bad_request", field = "body" } },
  { "a JSON array", function(s) return req(s, "POST", "/eid/result", { user = "case-bob", body = "[1]" }) end,
    want = { status = 400, code = "bad_request", field = "body" } },
  { "a field this gateway does not accept", function(s)
    return req(s, "POST", "/eid/token", { user = "case-bob", body = { Name = "x" } })
  end, want = { status = 400, code = "bad_request", field = "Name" } },
  { "an unknown field", function(s)
    return req(s, "POST", "/eid/token", { user = "case-bob", body = { Phone = "1" } })
  end, want = { status = 400, code = "bad_request", field = "Phone" } },
  { "EidToken of the wrong type", function(s)
    return req(s, "POST", "/eid/result", { user = "case-bob", body = { EidToken = 5 } })
  end, want = { status = 400, code = "bad_request", field = "EidToken", message = "EidToken: expected a string" } },
  { "EidToken missing", function(s) return req(s, "POST", "/eid/result", { user = "case-bob", body = {} }) end,
    want = { status = 400, code = "bad_request", field = "EidToken" } },
  { "an oversized body", function(s)
    return req(s, "POST", "/eid/token", { user = "case-bob", body = '{"Extra":"' .. ("x"):rep(20000) .. '"}' })
  end, want = { status = 413, code = "too_large" },
    -- `eidkit serve` answers this one from its HTTP server (core.http_server's
    -- too_large_body), which sends the gateway's body without Cache-Control.
    differs = { cache_control = true } },
  { "an oversized chunked body", function(s)
    return req(s, "POST", "/eid/token", { user = "case-bob", headers = { ["Transfer-Encoding"] = "chunked" },
      body = '{"Extra":"' .. ("x"):rep(20000) .. '"}' })
  end, want = { status = 413, code = "too_large" }, differs = { cache_control = true } },
  { "the H5 return: pending", function(s)
    local tok = token(s, "case-h5")
    return req(s, "GET", "/eid/h5/return?token=" .. tok, { user = "case-h5" })
  end, want = { status = 303, location = "?status=pending&reason=no_result" } },
  { "the H5 return: passed", function(s)
    local tok = token(s, "case-h5b")
    sp.sim_finish(s, tok, 0)
    return req(s, "GET", "/eid/h5/return?token=" .. tok, { user = "case-h5b" })
  end, want = { status = 303, location = "?status=passed&reason=passed" } },
  { "the H5 return without a token", function(s) return req(s, "GET", "/eid/h5/return", { user = "case-h5" }) end,
    want = { status = 303, location = "?status=error&code=bad_request" } },
  { "an unknown route", function(s) return req(s, "GET", "/nope", {}) end,
    want = { status = 404, code = "not_found" } },
  { "the wrong method", function(s) return req(s, "GET", "/eid/token", { user = "case-bob" }) end,
    want = { status = 405, code = "method_not_allowed", allow = "POST" } },
  -- HEAD where GET is safe: the head of the GET answer, no body
  { "HEAD of health", function(s) return head(s, "/healthz") end,
    want = { status = 200, content_type = JSON, empty = true } },
  { "HEAD of metrics", function(s) return head(s, "/metrics") end,
    want = { status = 200, empty = true } },
  { "POST to health", function(s) return req(s, "POST", "/healthz", {}) end,
    want = { status = 405, code = "method_not_allowed", allow = "GET, HEAD" } },
  { "HEAD of the H5 return, whose GET pulls a result", function(s)
    return head(s, "/eid/h5/return?token=x", "case-h5")
  end, want = { status = 405, allow = "GET", empty = true } },
  { "an unknown token", function(s)
    return req(s, "POST", "/eid/result", { user = "case-bob", body = { EidToken = "00000000-0000-4000-8000-000000000000" } })
  end, want = { status = 404, code = "unknown_token" } },
  { "another user's token", function(s)
    local tok = token(s, "case-carol")
    return req(s, "POST", "/eid/result", { user = "case-dave", body = { EidToken = tok } })
  end, want = { status = 403, code = "wrong_subject" } },
  { "no verdict yet: pending", function(s)
    local tok = token(s, "case-erin")
    return req(s, "POST", "/eid/result", { user = "case-erin", body = { EidToken = tok } })
  end, want = { status = 200, outcome = "pending", keys = "code,reason,retry_with_new_token,status" } },
  { "passed", function(s)
    local tok = token(s, "case-frank")
    sp.sim_finish(s, tok, 0)
    return req(s, "POST", "/eid/result", { user = "case-frank", body = { EidToken = tok } })
  end, want = { status = 200, outcome = "passed", reason = "passed" } },
  { "passed, replayed", function(s)
    local tok = token(s, "case-grace")
    sp.sim_finish(s, tok, 0)
    req(s, "POST", "/eid/result", { user = "case-grace", body = { EidToken = tok } })
    return req(s, "POST", "/eid/result", { user = "case-grace", body = { EidToken = tok } })
  end, want = { status = 200, outcome = "passed", reason = "passed" } },
  { "the per-subject limit", function(s)
    for _ = 1, 5 do req(s, "POST", "/eid/token", { user = "case-limit" }) end
    return req(s, "POST", "/eid/token", { user = "case-limit" })
  end, want = { status = 429, code = "rate_limited", retry_after = "120" } },
}

-- Each outcome class the C table (core/src/errcode.c) gives, one ErrCode each.
for i, f in ipairs {
  { 1, "failed", "merchant_config" }, { 4, "failed", "user_retry" }, { 16, "failed", "retry_limit" },
  { 301, "failed", "identity_rejected" }, { 1002, "failed", "liveness_rejected" },
  { 2002, "failed", "merchant_input" }, { 2004, "failed", "capture" }, { 15, "expired", "token_expired" },
  { 1006, "pending", "service_retry" },
} do
  local user = "case-family-" .. i
  table.insert(_M.CASES, #_M.CASES, { ("%s/%s (ErrCode %d)"):format(f[2], f[3], f[1]), function(s)
    local tok = token(s, user)
    sp.sim_finish(s, tok, f[1])
    return req(s, "POST", "/eid/result", { user = user, body = { EidToken = tok } })
  end, want = { status = 200, outcome = f[2], reason = f[3], errcode = f[1] } })
end

-- Upstream faults from the simulator (PUT /sim/faults): what GetEidToken's
-- failures become. The hosts run with --upstream-timeout 1.
local function with_fault(rule)
  return function(s)
    sp.sim_faults(s, { rule })
    local ok, r = pcall(req, s, "POST", "/eid/token", { user = "case-fault" })
    sp.sim_faults(s, {})
    assert(ok, r)
    return r
  end
end
for _, c in ipairs {
  { "upstream: a reset", { Action = "GetEidToken", Kind = "reset" }, { status = 502, code = "reset" } },
  { "upstream: HTTP 503", { Action = "GetEidToken", Kind = "http", Status = 503 }, { status = 502, code = "http_503" } },
  { "upstream: throttled", { Action = "GetEidToken", Kind = "throttle" },
    { status = 429, code = "RequestLimitExceeded", retry_after = "1" } },
  { "upstream: an error code", { Action = "GetEidToken", Kind = "error", Code = "InternalError" },
    { status = 502, code = "InternalError" } },
  { "upstream: too slow", { Action = "GetEidToken", Kind = "latency", Ms = 3000 }, { status = 504, code = "timeout" } },
} do
  table.insert(_M.CASES, #_M.CASES, { c[1], with_fault(c[2]), want = c[3] })
end
-- GetEidResult is a read: the client retries it within the deadline, then
-- the last failure is the answer.
for _, c in ipairs {
  { "upstream: GetEidResult reset every time", { Action = "GetEidResult", Kind = "reset" }, { status = 502, code = "reset" } },
  { "upstream: GetEidResult HTTP 502 every time", { Action = "GetEidResult", Kind = "http", Status = 502 },
    { status = 502, code = "http_502" } },
} do
  table.insert(_M.CASES, #_M.CASES, { c[1], function(s)
    local tok = token(s, "case-rfault")
    sp.sim_faults(s, { c[2] })
    local ok, r = pcall(req, s, "POST", "/eid/result", { user = "case-rfault", body = { EidToken = tok } })
    sp.sim_faults(s, {})
    assert(ok, r)
    return r
  end, want = c[3] })
end

-- The answers of two hosts, with what a case says may differ left out.
function _M.comparable(c, a)
  local out = {}
  for k, v in pairs(a) do
    if not (c.differs and c.differs[k]) then out[k] = v end
  end
  return out
end

-- run(s) -> { [name] = answer }
function _M.run(s)
  local got = {}
  for _, c in ipairs(_M.CASES) do got[c[1]] = _M.answer(c[2](s)) end
  return got
end

-- Every case's answer has its want.
function _M.check(got, host)
  for _, c in ipairs(_M.CASES) do
    local a = got[c[1]]
    for k, v in pairs(c.want) do
      if a[k] ~= v then
        error(("%s: %s: %s is %s, want %s (%s)"):format(host or "", c[1], k, tostring(a[k]), tostring(v),
          cjson.encode(a)), 2)
      end
    end
  end
end

return _M
