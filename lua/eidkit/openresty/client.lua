-- eidkit.openresty.client: the FaceID API client inside an nginx worker
-- (OpenResty, or Debian's nginx with its Lua module), without blocking it.
--
--   local client = require("eidkit.openresty.client").new{
--     endpoint = "http://127.0.0.1:8080", secret_id = id, secret_key = key }
--   local res, err = client:get_eid_result{ EidToken = tok }   -- in a request handler
--
-- The same results and err tables as eidkit.client on the Lua 5.4 host:
-- res is the decoded Response (Tencent's field names, RequestId included;
-- JSON null is cjson.null); err has code, message, request_id, trace_id,
-- http_status, attempts, retryable, sent, elapsed (and received: the first
-- bytes of an answer whose status is not 200, when eid_retry_decide's
-- keep_received says so), and prints as "code: message". Parameter mistakes
-- raise.
--
-- How: each attempt is signed through eidkit.ffi (libeidkit's C signer),
-- sent by nginx itself through the internal location of
-- nginx/eidkit_location.conf (ngx.location.capture: the request's coroutine
-- yields while nginx does the I/O), classified into eidkit/retry.h's facts,
-- and the next step (retry at once re-signed, wait, stop) is
-- eid_retry_decide's, through eidkit.ffi.retry: the same function the C
-- client decides with. Waits are ngx.sleep. Why this design:
-- docs/internals/openresty.md.
--
-- Runs where ngx.location.capture and ngx.sleep may yield: rewrite, access
-- and content handlers, and ngx.timer callbacks do not qualify (no
-- subrequests there). LuaJIT in nginx only.
local ngx = ngx
local ffi = require "ffi"
local cjson = require "cjson.safe"
local eidffi = require "eidkit.ffi"
local retry = require "eidkit.ffi.retry"
local compat = require "eidkit.compat"
local client_params = require "eidkit.client_params"
local resolve = require "eidkit.openresty.resolve"

local type, error, pairs, ipairs, setmetatable, tostring, tonumber = type, error, pairs, ipairs,
  setmetatable, tostring, tonumber
local format, min = string.format, math.min
local capture, sleep = ngx.location.capture, ngx.sleep

local _M = { _VERSION = eidffi.version() }
local mt = { __index = {} }
local methods = mt.__index

local LOCATION = "/_eidkit/upstream"
-- Signed header -> the variable nginx/eidkit_location.conf sends it from.
local HEADER_VARS = {
  Host = "eidkit_host", Authorization = "eidkit_authorization", ["Content-Type"] = "eidkit_content_type",
  ["X-TC-Action"] = "eidkit_action", ["X-TC-Version"] = "eidkit_version",
  ["X-TC-Timestamp"] = "eidkit_timestamp", ["X-TC-Region"] = "eidkit_region",
  ["X-TC-Token"] = "eidkit_token", ["X-TC-Language"] = "eidkit_language",
  ["X-TC-TraceId"] = "eidkit_trace_id", ["X-TC-RequestClient"] = "eidkit_request_client",
}
local REQUEST_CLIENT = "eidkit/" .. eidffi.version()
-- EID_RECEIVED_MAX (eidkit/client.h), a macro the FFI cannot read: the 503 case of
-- spec/support/received_cases.lua fails when the two differ.
local RECEIVED_MAX = 512
-- The numeric options' unit, default and range, and the default endpoint:
-- libeidkit's table (eid_client_option), which the C client applies too.
local C = eidffi.lib()
local OPTIONS = {}
for i = 0, 63 do
  local o = C.eid_client_option(i)
  if o == nil then break end
  OPTIONS[ffi.string(o.name)] = { unit = ffi.string(o.unit), def = tonumber(o.def), min = tonumber(o.min),
    max = tonumber(o.max) }
end
local DEFAULT_ENDPOINT = ffi.string(C.eid_client_default_endpoint())
local DEFAULT_SERVICE = ffi.string(C.eid_client_default_service())
-- Reads change nothing on the server: pooled connections (and retries after
-- a send) are safe. Which actions are reads is eid_client_is_read's.
local function is_read(action) return C.eid_client_is_read(action) ~= 0 end

local error_mt = { __tostring = function(e) return tostring(e.code) .. ": " .. tostring(e.message) end }

local function new_error(code, message, extra)
  local e = { code = code, message = message, retryable = false }
  for k, v in pairs(extra or {}) do e[k] = v end
  return setmetatable(e, error_mt)
end

-- ------------------------------------------------------------ randomness

-- Uniform in [0, 1), for the full-jitter backoff.
local rnd = ffi.new("uint32_t[1]")
local function jitter()
  assert(C.eid_random_bytes(rnd, 4) == 0, "eid_random_bytes failed")
  return rnd[0] / 4294967296
end

-- The X-TC-TraceId of a call, made as the C client makes it (eid_trace_id:
-- a seed plus a counter, no random draw per call). The seed is drawn once
-- per process: a worker forked from the master that loaded this draws its
-- own, so two workers never send the same id.
local trace_seed, trace_pid, trace_n = ffi.new("unsigned char[16]"), nil, 0
local trace_buf = ffi.new("char[64]")
local function trace_id()
  local pid = ngx.worker.pid()
  if pid ~= trace_pid then
    assert(C.eid_random_bytes(trace_seed, 16) == 0, "eid_random_bytes failed")
    trace_pid, trace_n = pid, 0
  end
  trace_n = trace_n + 1
  C.eid_trace_id(trace_seed, trace_n, trace_buf)
  return ffi.string(trace_buf, 36)
end

-- ------------------------------------------------------------ options

local function opterr(name, msg) error(format("bad option '%s' (%s)", name, msg), 3) end

-- http(s)://HOST[:PORT][/]. ngx.balancer connects to IPv4 addresses only,
-- and a worker must not block on DNS: a host name is resolved while nginx
-- starts (eidkit.openresty.resolve), or `peer` gives the address; the name
-- stays for Host and SNI.
local function parse_endpoint(endpoint, peer)
  if type(endpoint) ~= "string" then opterr("endpoint", "expected string, got " .. type(endpoint)) end
  local scheme, host, port = endpoint:match("^(https?)://([%w%.%-]+):?(%d*)/?$")
  if not scheme then opterr("endpoint", "expected http(s)://host[:port]") end
  port = tonumber(port) or (scheme == "https" and 443 or 80)
  local addrs = host:match("^%d+%.%d+%.%d+%.%d+$") and { host }
  if peer ~= nil then
    if type(peer) ~= "string" or not peer:match("^%d+%.%d+%.%d+%.%d+$") then
      opterr("peer", "expected an IPv4 address")
    end
    addrs = { peer }
  end
  if not addrs then
    local ok, list, why = pcall(resolve.ipv4, host)
    if not ok then opterr("endpoint", list) end
    if not list then opterr("endpoint", "cannot resolve '" .. host .. "': " .. tostring(why)) end
    addrs = list
  end
  local default_port = (scheme == "https" and port == 443) or (scheme == "http" and port == 80)
  return { scheme = scheme, host = default_port and host or (host .. ":" .. port), sni = host,
    addrs = addrs, port = port }
end

-- A numeric option by libeidkit's table: seconds (a number) or bytes (an
-- integer) in its range, with the messages of the Lua 5.4 binding
-- (bindings/client.c); the table's default when not given.
local function numeric(opts, name)
  local spec, v = OPTIONS[name], opts[name]
  if v == nil then return spec.def end
  if spec.unit == "bytes" then
    if not compat.is_integer(v) then opterr(name, "expected integer, got " .. type(v)) end
  elseif type(v) ~= "number" then
    opterr(name, "expected seconds, got " .. type(v))
  end
  if not (v >= spec.min and v <= spec.max) then
    opterr(name, format("out of range: %.15g..%.15g %s", spec.min, spec.max, spec.unit))
  end
  return v
end

-- Options of eidkit.client that nginx's configuration owns instead.
local CONFIGURED = {
  proxy = "nginx connects to the endpoint itself; route egress at the network level",
  ca_file = "set proxy_ssl_trusted_certificate in http { } or server { } (nginx/eidkit.conf sets the system store)",
  verify_tls = "TLS is verified by nginx (proxy_ssl_verify in nginx/eidkit_location.conf)",
  max_in_flight = "nginx's upstream keepalive pool (nginx/eidkit.conf) bounds connections",
  thread = "nginx makes the calls on the worker's own event loop; a worker never waits on one",
  headers = "only the signed headers are sent (nginx/eidkit_location.conf)",
}

local KNOWN = { endpoint = 1, peer = 1, region = 1, language = 1, service = 1, version = 1,
  connect_timeout = 1, timeout = 1, deadline = 1, max_response = 1, secret_id = 1, secret_key = 1,
  token = 1, credentials = 1, retry = 1, logger = 1 }

-- Credentials as given: static keys, or a provider with :get() returning
-- {secret_id, secret_key, token} (eidkit.credentials' shape).
local function static_provider(id, key, token)
  local creds = { secret_id = id, secret_key = key, token = token }
  return { get = function() return creds end }
end

-- new{...} -> client. See the file header.
function _M.new(opts)
  if opts ~= nil and type(opts) ~= "table" then
    error("bad argument #1 to 'new' (expected a table of options)", 2)
  end
  opts = opts or {}
  for k in pairs(opts) do
    if CONFIGURED[k] ~= nil then opterr(k, "not an option in OpenResty: " .. CONFIGURED[k]) end
    if not KNOWN[k] then opterr(tostring(k), "unknown option") end
  end
  local self = { ep = parse_endpoint(opts.endpoint or DEFAULT_ENDPOINT, opts.peer),
    connect_timeout = numeric(opts, "connect_timeout"), timeout = numeric(opts, "timeout"),
    deadline = numeric(opts, "deadline"), max_response = numeric(opts, "max_response"), skew = 0, requests = 0 }
  for _, k in ipairs { "region", "language", "service", "version" } do
    if opts[k] ~= nil and type(opts[k]) ~= "string" then opterr(k, "expected string, got " .. type(opts[k])) end
    self[k] = opts[k]
  end
  local r = opts.retry
  if type(r) == "function" then
    self.policy = r
  elseif type(r) == "table" then
    self.rules = {}
    for k, v in pairs(r) do
      if k ~= "max_attempts" and k ~= "base" and k ~= "cap" and k ~= "unsafe" then
        opterr("retry", format("unknown key '%s'; max_attempts, base, cap, unsafe", tostring(k)))
      end
      -- 0 means "the default" to eid_retry_check_rules (a zeroed C struct);
      -- from Lua, as for the Lua 5.4 binding, a knob left out is the default.
      if v == 0 and k ~= "unsafe" then
        opterr("retry", format("%s: must be more than 0 (leave it out for the default)", k))
      end
      self.rules[k] = v
    end
    retry.decide(self.rules, { action = "X", attempts = 1, outcome = "ok" }) -- raises on a bad rule
  elseif r ~= nil then
    opterr("retry", "expected a table or function(err, attempts)")
  end
  if opts.logger ~= nil and type(opts.logger) ~= "function" then
    opterr("logger", "expected function(level, event)")
  end
  self.logger = opts.logger
  if opts.secret_id ~= nil or opts.secret_key ~= nil then
    if type(opts.secret_id) ~= "string" or type(opts.secret_key) ~= "string" then
      opterr("secret_id'/'secret_key", "both strings, or neither")
    end
    if opts.credentials ~= nil then opterr("credentials", "give a provider or static keys, not both") end
    if opts.token ~= nil and type(opts.token) ~= "string" then opterr("token", "expected string") end
    self.provider = static_provider(opts.secret_id, opts.secret_key, opts.token)
  elseif opts.credentials ~= nil then
    if type(opts.credentials) ~= "table" or type(opts.credentials.get) ~= "function" then
      opterr("credentials", "expected a provider with :get()")
    end
    self.provider = opts.credentials
  else
    opterr("credentials", "give secret_id and secret_key, or a provider with :get()")
  end
  return setmetatable(self, mt)
end

-- ------------------------------------------------------------ one attempt

local function credentials(self)
  local ok, creds, why = pcall(self.provider.get, self.provider)
  if not ok then return nil, "the credential provider raised: " .. tostring(creds) end
  if type(creds) ~= "table" then
    return nil, type(why) == "table" and tostring(why.message) or tostring(why or "no credentials")
  end
  return creds
end

local function header(res, name)
  local v = res.header[name]
  if type(v) == "table" then v = v[1] end
  return v
end

local function present(t) return t ~= nil and t ~= "" and t ~= "-" end

-- The envelope of a 200 (the rules of core/src/envelope.c): a Response
-- without Error is a success, Error.Code a remote failure, anything else a
-- bad answer.
local function envelope(body)
  local doc = cjson.decode(body)
  local resp = type(doc) == "table" and doc.Response
  if type(resp) ~= "table" then return "malformed" end
  local e = resp.Error
  if e == nil then return "ok", resp end
  if type(e) ~= "table" or type(e.Code) ~= "string" or e.Code == "" then return "malformed" end
  return "remote", resp, e.Code, type(e.Message) == "string" and e.Message or ""
end

-- Send one attempt through nginx; its facts (eidkit/retry.h) and what the
-- error table needs.
local function send(self, call, body, remaining)
  local creds, why = credentials(self)
  if not creds then return nil, why end
  local signed, serr = eidffi.sign { secret_id = creds.secret_id, secret_key = creds.secret_key,
    token = creds.token, host = self.ep.host, service = self.service or DEFAULT_SERVICE, version = self.version,
    region = self.region, language = self.language, action = call.action, body = body,
    timestamp = ngx.time() + self.skew }
  if not signed then return nil, tostring(serr) end
  signed["X-TC-TraceId"] = call.trace_id
  signed["X-TC-RequestClient"] = REQUEST_CLIENT
  local budget = min(self.timeout, remaining)
  -- The balancer's and header filter's share (eidkit.openresty.upstream).
  local e = {
    -- Several addresses: each attempt takes the next (a retry goes elsewhere).
    addr = self.ep.addrs[(self.requests % #self.ep.addrs) + 1], port = self.ep.port,
    connect_timeout = min(self.connect_timeout, budget), timeout = budget }
  self.requests = self.requests + 1
  -- The location's variables, filled by the capture itself (no Lua hook
  -- runs in the subrequest before proxy_pass); each one always, "" for a
  -- header not sent, so none is ever read uninitialized.
  local vars = { eidkit_scheme = self.ep.scheme, eidkit_sni = self.ep.sni or "",
    eidkit_pool = is_read(call.action) and "eidkit_keepalive" or "eidkit_fresh" }
  for name, var in pairs(HEADER_VARS) do vars[var] = signed[name] or "" end
  local res = capture(LOCATION, { method = ngx.HTTP_POST, body = body, ctx = { eidkit = e }, vars = vars })
  signed.Authorization, vars.eidkit_authorization = nil, nil

  local f = { action = call.action, attempts = call.attempts, sent = true,
    skew_retried = call.skew_retried }
  local out = { http_status = 0 }
  if not e.filtered or e.balancer_error then
    -- The location never ran its filter (not configured: a 404), or the
    -- balancer refused the peer. Nothing reached the server; it is a setup
    -- problem, and retrying will not mend it.
    f.outcome, f.sent = "other", false
    out.message = format("nginx answered %d without reaching the endpoint: is nginx/eidkit_location.conf"
      .. " included in this server, and nginx/eidkit.conf in http? (see error.log)", res.status)
  elseif present(e.header_time) then
    -- The endpoint answered (its status, its body).
    out.http_status = res.status
    local text = res.body or ""
    -- The body goes into the error only if the verdict's keep_received
    -- allows it (not for a 200: it may hold an identity), so the status is
    -- a fact of every answer.
    f.http_status, out.body = res.status, text
    if res.truncated then
      f.outcome, out.message = "truncated", format("truncated body; %d bytes received", #text)
    elseif res.status ~= 200 then
      f.outcome = "http"
      out.message = format("HTTP %d; %d bytes received", res.status, #text)
    elseif #text > self.max_response then
      f.outcome, out.message = "too_big", format("response larger than %d bytes", self.max_response)
    else
      local kind, resp, code, message = envelope(text)
      f.outcome, out.resp = kind, resp
      if kind == "remote" then
        f.remote_code, out.message = code, message
        out.request_id = type(resp.RequestId) == "string" and resp.RequestId or nil
      elseif kind == "malformed" then
        out.message = format("not Tencent's answer envelope; %d bytes received", #text)
      end
      local date = header(res, "Date")
      f.server_time = date and ngx.parse_http_time(date) or 0
      f.local_time = ngx.time()
    end
  elseif res.status == 504 then
    -- nginx's own answer: out of time connecting (nothing sent) or waiting.
    f.outcome, f.sent = "timeout", present(e.connect_time)
    out.message = f.sent and "no answer in time" or "before sending: connect timed out"
  elseif not present(e.connect_time) then
    -- No connection (or no TLS session) came up: nothing was sent. nginx
    -- reports a refused connection and a failed certificate check alike
    -- (502); error.log says which.
    f.outcome, out.message = "connect", "could not connect (refused, or TLS failed; see error.log)"
  else
    f.outcome, out.message = "reset", "the connection broke before an answer"
  end
  return f, out
end

-- The body each Response table this client returned was decoded from, for
-- as long as the table lives (client:response_text).
local texts = setmetatable({}, { __mode = "k" })

local function log(self, level, event)
  if self.logger then self.logger(level, event) end
end

-- One call: attempts until eid_retry_decide (or the retry policy) says stop.
local function do_call(self, action, params)
  local body = cjson.encode(params)
  if not body then error("bad argument #2 (params cannot be encoded as JSON)", 3) end
  ngx.update_time()
  local start = ngx.now()
  local deadline = start + self.deadline
  local call = { action = action, attempts = 0, skew_retried = false, trace_id = trace_id() }
  local sent_any = false
  while true do
    ngx.update_time()
    local remaining = deadline - ngx.now()
    if remaining <= 0 then
      return nil, new_error("timeout", "deadline reached before sending", { attempts = call.attempts,
        trace_id = call.trace_id, sent = sent_any, retryable = true, elapsed = ngx.now() - start })
    end
    call.attempts = call.attempts + 1
    local t0 = ngx.now()
    local f, out = send(self, call, body, remaining)
    if not f then
      return nil, new_error("credentials", out, { attempts = call.attempts - 1, trace_id = call.trace_id,
        sent = sent_any })
    end
    ngx.update_time()
    local now = ngx.now()
    -- An answer that ends the call needs no backoff: no random draw for it.
    f.remaining, f.jitter = deadline - now, f.outcome == "ok" and 0 or jitter()
    local v = retry.decide(self.rules, f)
    sent_any = sent_any or v.sent
    local event = { event = "attempt", action = action, trace_id = call.trace_id, attempts = call.attempts,
      duration = now - t0, code = v.code ~= "" and v.code or nil,
      http_status = out.http_status ~= 0 and out.http_status or nil, request_id = out.request_id,
      skew = self.skew }
    if v.adopt_skew then
      call.skew_retried, self.skew = true, v.skew
      log(self, "warn", { event = "skew", action = action, trace_id = call.trace_id, attempts = call.attempts,
        duration = now - t0, code = v.code, skew = v.skew })
    end
    if v.resign then goto continue end
    if v.status == "ok" then
      log(self, "info", event)
      texts[out.resp] = out.body
      return out.resp, call.attempts
    end
    do
      local err = new_error(v.code, out.message or "", { request_id = out.request_id, trace_id = call.trace_id,
        http_status = out.http_status ~= 0 and out.http_status or nil, attempts = call.attempts,
        retryable = v.retryable, sent = sent_any,
        received = v.keep_received and out.body:sub(1, RECEIVED_MAX) or nil })
      local delay = v.delay
      if v.ask_policy and self.policy then
        local info = new_error(v.code, out.message or "", { action = action, http_status = out.http_status,
          attempts = call.attempts, retryable = v.retryable, sent = v.sent, default_delay = v.default_delay,
          remaining = f.remaining })
        delay = retry.delay(f.remaining, self.policy(info, call.attempts))
      end
      event.retry_delay = delay
      log(self, "warn", event)
      if not delay then
        ngx.update_time()
        err.elapsed = ngx.now() - start
        return nil, err
      end
      if delay > 0 then sleep(delay) end
    end
    ::continue::
  end
end

-- ------------------------------------------------------------ the calls

-- client:call(action, params) -> Response, attempts | nil, err
function methods.call(self, action, params)
  return do_call(self, action, client_params.check_call(action, params))
end

function methods.get_eid_token(self, p)
  client_params.check("get_eid_token", p)
  return do_call(self, "GetEidToken", p)
end

function methods.get_eid_result(self, p)
  client_params.check("get_eid_result", p)
  return do_call(self, "GetEidResult", p)
end

function methods.check_eid_token_status(self, p)
  client_params.check("check_eid_token_status", p)
  return do_call(self, "CheckEidTokenStatus", p)
end

-- client:response_text(res) -> the JSON text `res` was decoded from, when
-- `res` is a Response this client returned; else nil. The flow records that
-- text rather than encode the table again: LuaJIT interns every string and
-- hashes a long one from a sample of its bytes, and encoded answers, alike
-- but for a RequestId the sample may miss, crowded one bucket of its string
-- table (docs/internals/openresty.md, "The text of an answer").
function methods.response_text(_, res) return texts[res] end

-- The offset (seconds, server minus local) adopted after a SignatureExpire,
-- for this client in this worker.
function methods.skew(self) return self.skew end

function methods.set_skew(self, s)
  if not compat.is_integer(s) then error("bad argument #1 to 'set_skew' (expected integer seconds)", 2) end
  self.skew = s
end

-- {requests = n}: attempts sent by this client in this worker.
function methods.stats(self) return { requests = self.requests } end

mt.__tostring = function(self) return "eidkit.openresty.client (" .. self.ep.scheme .. "://" .. self.ep.host .. ")" end

setmetatable(_M, { __call = function(_, opts) return _M.new(opts) end })

return _M
