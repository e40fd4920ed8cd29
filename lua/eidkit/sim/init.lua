-- A local E证通 service: the three eID actions of faceid.tencentcloudapi.com
-- with TC3 signature checks, error envelopes, token lifecycle and fault
-- injection, plus an unsigned control API for playing the user
-- (docs/SIMULATOR.md). Transport-free: handle(req) -> resp, so specs can
-- drive it in-process and `eidkit sim` serves it over core.http_server.
local core = require "eidkit.core"
local util = require "eidkit.sim.util"
local validate = require "eidkit.sim.validate"
local results = require "eidkit.sim.results"
local faults = require "eidkit.sim.faults"
local identity = require "eidkit.sim.identity"

local format, type, pairs, ipairs, tonumber, pcall = string.format, type, pairs, ipairs, tonumber, pcall
local json_encode, json_decode, null = util.json_encode, util.json_decode, util.null
local os_time, os_date = os.time, os.date

local _M = {}

-- Documented demo identity, used when no credential or merchant is given.
-- Not secret: it only opens a simulator on loopback.
_M.demo = {
  SecretId = "AKIDeidkitSimDemo00000000000000000000",
  SecretKey = "eidkitSimDemoSecretKey000000000",
  MerchantId = "0NSJ000000000000000000EIDKIT",
}

_M.VERSION = "2018-03-01"
_M.TOKEN_TTL = 7200          -- the integration guide; current API docs say 600
_M.RESULT_WINDOW = 3 * 86400 -- results pullable for 3 days after issue
_M.MAX_SKEW = 300            -- X-TC-Timestamp tolerance
_M.MAX_BODY = 10 * 1024 * 1024

local actions = { GetEidToken = true, GetEidResult = true, CheckEidTokenStatus = true }

local mt = { __index = {} }
local methods = mt.__index

-- opts: credentials = { {SecretId=, SecretKey=, Token=}, ... }, merchants = { id, ... },
-- token_ttl, result_window, max_tokens, seed, faults = {rules}, tencent_limits,
-- clock_offset, base_url, log = function(line), log_requests (default true: a
-- line per request to log, else only internal errors), encryption_keys =
-- {key, ...}, eidinfo_public_key, ocr_identity = {name, idnum}
-- (lua/eidkit/sim/identity.lua).
function _M.new(opts)
  opts = opts or {}
  local self = setmetatable({}, mt)
  self.credentials = {}
  local creds = opts.credentials
  if not creds or #creds == 0 then
    creds = { { SecretId = _M.demo.SecretId, SecretKey = _M.demo.SecretKey } }
    self.using_demo_credential = true
  end
  for i, c in ipairs(creds) do
    if type(c.SecretId) ~= "string" or c.SecretId == "" or type(c.SecretKey) ~= "string"
      or c.SecretKey == "" then
      error(format("credentials[%d]: SecretId and SecretKey must be non-empty strings", i), 2)
    end
    if c.Token ~= nil and (type(c.Token) ~= "string" or c.Token == "") then
      error(format("credentials[%d]: Token must be a non-empty string", i), 2)
    end
    self.credentials[c.SecretId] = c
  end
  self.merchants = {}
  local merchants = opts.merchants
  if not merchants or #merchants == 0 then
    merchants = { _M.demo.MerchantId }
    self.using_demo_merchant = true
  end
  for _, m in ipairs(merchants) do self.merchants[m] = true end
  self.token_ttl = opts.token_ttl or _M.TOKEN_TTL
  self.result_window = opts.result_window or _M.RESULT_WINDOW
  self.max_tokens = opts.max_tokens or 100000
  self.seed = opts.seed or util.random_seed(core)
  self.rng = util.rng(self.seed)
  self.faults = faults.new(opts.faults, self.seed)
  self.limiter = opts.tencent_limits and faults.limiter(faults.tencent_limits, os_time) or nil
  self.clock_offset = opts.clock_offset or 0
  self.base_url = opts.base_url or "http://127.0.0.1"
  self.log = opts.log
  -- Off, no request line is formatted: under load that was a format call a
  -- request for a log that dropped it.
  self.log_requests = self.log ~= nil and opts.log_requests ~= false
  self.attempt_log = opts.attempt_log
  self.signer = core.signer { cache_slots = 64 }
  self.values, self.canonical = {}, {} -- scratch for authenticate
  identity.setup(self, opts)
  self:reset()
  return self
end

function methods:now() return self.clock_frozen or os_time() + self.clock_offset end

function methods:reset()
  self.tokens, self.order, self.head, self.live = {}, {}, 1, 0
  self.stats = { requests = 0, errors = 0 }
end

-- ------------------------------------------------------------- envelope

local function http_date(t) return os_date("!%a, %d %b %Y %H:%M:%S GMT", t) end

-- fields: the Response table, or { [JSON] = "<encoded object>" } for a body
-- encoded earlier (GetEidResult caches its answer per token state).
local JSON = {}

function methods:reply(fields, status, extra_headers)
  local id = util.uuid(self.rng)
  local body
  if fields[JSON] then
    body = '{"Response":' .. fields[JSON]:sub(1, -2) .. ',"RequestId":"' .. id .. '"}}'
  else
    fields.RequestId = id
    body = json_encode { Response = fields }
  end
  local now = self:now()
  if now ~= self.date_at then self.date_at, self.date_text = now, http_date(now) end
  local headers = { ["Content-Type"] = "application/json", Date = self.date_text }
  if extra_headers then
    for k, v in pairs(extra_headers) do headers[k] = v end
  end
  return { status = status or 200, headers = headers, body = body }
end

function methods:error_reply(code, message)
  self.stats.errors = self.stats.errors + 1
  return self:reply { Error = { Code = code, Message = message } }
end

-- --------------------------------------------------------------- tokens

function methods:prune(now)
  -- Tokens are appended in issue order; a token is forgotten one day after
  -- its result window, so late pulls still get BizTokenExpired for a while.
  local order = self.order
  while self.head <= #order do
    local tok = self.tokens[order[self.head]]
    if tok and tok.created + self.result_window + 86400 > now then break end
    if tok then
      self.tokens[tok.EidToken] = nil
      self.live = self.live - 1
    end
    order[self.head] = nil
    self.head = self.head + 1
  end
  if self.head > 1024 and self.head > #order / 2 then
    local compact = {}
    for i = self.head, #order do compact[#compact + 1] = order[i] end
    self.order, self.head = compact, 1
  end
end

function methods:token(id) return self.tokens[id] end

-- The lifecycle state CheckEidTokenStatus reports.
function methods.status_of(_, tok, now)
  if #tok.attempts > 0 then return "finished" end
  if now >= tok.expires then return "timeout" end
  return tok.state
end

function methods:summary(tok)
  local now = self:now()
  local attempts = {}
  for i, a in ipairs(tok.attempts) do
    attempts[i] = { ErrCode = a.ErrCode, IntentionErrCode = a.IntentionErrCode, Time = a.time,
      IsNeedCharge = results.charged(a), FlowState = a.flow_state or nil, Seq = a.seq }
  end
  return {
    EidToken = tok.EidToken, MerchantId = tok.merchant, Status = self:status_of(tok, now),
    CreatedAt = tok.created, ExpiresAt = tok.expires,
    ResultDeadline = tok.created + self.result_window, Attempts = attempts,
    UseIntentionVerify = tok.intention, RedirectUrl = tok.redirect or null,
    -- The identity the token was issued for, decrypted: for tests only.
    Identity = tok.identity and { Name = tok.identity.name, IdCard = tok.identity.idnum } or null,
  }
end

-- -------------------------------------------------------------- actions

local handlers = {}

function handlers.GetEidToken(self, p, now, cred)
  local v = validate.get_eid_token(p, self.merchants)
  local session = identity.decrypt_request(self, p)
  if session then v = validate.get_eid_token(p, self.merchants) end -- the plain values
  self:prune(now)
  if self.live >= self.max_tokens then
    validate.raise_api_error("LimitExceeded", "The simulator holds %d unexpired tokens (--max-tokens).",
      self.max_tokens)
  end
  local id = util.uuid(self.rng):upper()
  local cfg = p.Config or {}
  local tok = {
    EidToken = id, merchant = p.MerchantId, secret_id = cred.SecretId, created = now,
    expires = now + self.token_ttl, state = "init", attempts = {}, input_type = v.input_type,
    extra = p.Extra, redirect = p.RedirectUrl, intention = cfg.UseIntentionVerify == true,
    intention_mode = cfg.IntentionMode or "1", intention_text = cfg.IntentionVerifyText,
    identity = (p.Encryption == nil and p.Name) and { name = p.Name, idnum = p.IdCard } or nil,
    questions = type(cfg.IntentionQuestions) == "table" and #cfg.IntentionQuestions or 0,
  }
  self.tokens[id] = tok
  self.order[#self.order + 1] = id
  self.live = self.live + 1
  local res = { EidToken = id, Url = format("%s/sim/h5?token=%s", self.base_url, id) }
  if session then identity.encrypt_response(session, res, p) end
  return res
end

function methods.passed(_, tok)
  for _, a in ipairs(tok.attempts) do
    if a.ErrCode == 0 then return true end
  end
  return false
end

function methods:lookup(id, now)
  local tok = self.tokens[id]
  if not tok then
    validate.raise_api_error("InvalidParameterValue.BizTokenIllegal", "The EidToken is not valid.")
  end
  if now >= tok.created + self.result_window then
    validate.raise_api_error("InvalidParameterValue.BizTokenExpired",
      "The EidToken expired: results are kept for %d seconds after issue.", self.result_window)
  end
  return tok
end

function handlers.GetEidResult(self, p, now)
  local opts = validate.get_eid_result(p)
  local tok = self:lookup(p.EidToken, now)
  -- The answer changes only with the attempts, the lifetime passing and the
  -- options, so pollers re-pulling a token get a cached encoding.
  local key = string.format("%s|%d|%s|%s|%d|%s", p.InfoType or "0", opts.frames,
    opts.cut, opts.avatar, #tok.attempts, now >= tok.expires)
  local cache = tok.cache
  if not cache or cache.key ~= key then
    local r = results.build(tok, opts, now)
    if opts.parts["1"] and self:passed(tok) then r.EidInfo = identity.eidinfo(self, tok) or null end
    cache = { key = key, json = json_encode(r) }
    tok.cache = cache
  end
  return { [JSON] = cache.json }
end

function handlers.CheckEidTokenStatus(self, p, now)
  validate.check_eid_token_status(p)
  return { Status = self:status_of(self:lookup(p.EidToken, now), now) }
end

-- ---------------------------------------------------------------- auth

local function err(code, fmt, ...) return { Code = code, Message = format(fmt, ...) } end

-- Services a client may have put in the credential scope: "faceid", or what
-- an SDK derives from the endpoint it was given (the Node SDK takes the
-- first dot-separated label of host[:port]).
local function service_ok(service, host)
  if service == "faceid" then return true end
  local bare = host:match("^(.-):%d+$") or host
  return service == bare:match("^[^.]*") or service == host:match("^[^.]*")
end

-- Check the TC3 signature of req against a registered credential. Returns
-- the credential, or nil and an error {Code, Message}.
function methods:authenticate(req, now, ts)
  local h = req.headers
  local value = h.authorization
  if value == nil or value == "" then
    return nil, err("AuthFailure.InvalidAuthorization", "The Authorization header is missing.")
  end
  local a, perr = core.parse_authorization(value)
  if not a then
    return nil, err("AuthFailure.InvalidAuthorization", "The Authorization header is malformed (%s).",
      perr.message:gsub("^authorization: ", ""))
  end
  if ts < now - _M.MAX_SKEW or ts > now + _M.MAX_SKEW then
    return nil, err("AuthFailure.SignatureExpire",
      "The signature expired: X-TC-Timestamp %d is %d seconds from the server time %d "
      .. "(at most %d allowed).", ts, ts - now, now, _M.MAX_SKEW)
  end
  local cred = self.credentials[a.secret_id]
  if not cred then
    return nil, err("AuthFailure.SecretIdNotFound", "The SecretId is not found.")
  end
  if a.date ~= core.utc_date(ts) then
    return nil, err("AuthFailure.SignatureFailure",
      "The credential date %s is not the UTC date of X-TC-Timestamp.", a.date)
  end
  local host = h.host or ""
  if not service_ok(a.service, host) then
    return nil, err("AuthFailure.SignatureFailure",
      "The credential scope names service '%s'; expected faceid.", a.service)
  end
  -- Recompute for the headers the client chose. Clients differ on whether
  -- header values are lower-cased (the TC3 document says so, the SDKs only
  -- sign content-type and host) and on whether the host carries the port
  -- (the SDKs sign it without); a request signed any of these ways is
  -- accepted if the signature matches. The common form is tried first, and
  -- the tables are reused: this runs on every call.
  local names, values, host_at, has_type = a.headers, self.values, nil, false
  for i = 1, #names do
    local name = names[i]
    values[i] = h[name] or false
    if name == "host" then host_at = i elseif name == "content-type" then has_type = true end
  end
  for i = #names + 1, #values do values[i] = nil end
  if not (host_at and has_type) then
    return nil, err("AuthFailure.SignatureFailure", "SignedHeaders must include content-type and host.")
  end
  local c = self.canonical
  c.secret_key, c.date, c.service, c.timestamp = cred.SecretKey, a.date, a.service, h["x-tc-timestamp"]
  c.signed_headers, c.values, c.body, c.method, c.query = a.signed_headers, values, req.body,
    req.method, req.query or ""
  local signer, want = self.signer, a.signature
  local function matches(host_value, lower)
    values[host_at] = host_value
    c.lower_values = lower
    local sig = signer:compute(c)
    return sig and core.equal(sig, want)
  end
  local bare = host:match("^(.-):%d+$")
  local ok = matches(host, true) or (bare and matches(bare, true)) or matches(host, false)
    or (bare and matches(bare, false))
  c.secret_key, c.body = nil, nil -- hold no secret or body between calls
  if not ok then
    return nil, err("AuthFailure.SignatureFailure",
      "The provided credentials could not be validated. Please check your signature is correct.")
  end
  if cred.Token and not core.equal(h["x-tc-token"] or "", cred.Token) then
    return nil, err("AuthFailure.TokenFailure", "The session token (X-TC-Token) is missing or invalid.")
  end
  return cred
end

-- ------------------------------------------------------------ dispatch

-- A request for "/" as the real endpoint sees it, before faults.
function methods:api(req)
  local h = req.headers
  local now = self:now()
  if req.method ~= "POST" then
    return self:error_reply("UnsupportedProtocol",
      "The simulator accepts POST requests with a JSON body.")
  end
  local action = h["x-tc-action"]
  if not action or action == "" then
    return self:error_reply("MissingParameter", "The request is missing a required parameter `Action`.")
  end
  if not actions[action] then
    return self:error_reply("InvalidAction", format("The action `%s` is not supported.",
      action:sub(1, 64)))
  end
  local version = h["x-tc-version"]
  if not version or version == "" then
    return self:error_reply("MissingParameter", "The request is missing a required parameter `Version`.")
  end
  if version ~= _M.VERSION then
    return self:error_reply("NoSuchVersion", format("The API version `%s` does not exist; use %s.",
      version:sub(1, 32), _M.VERSION))
  end
  local ts_text = h["x-tc-timestamp"]
  local ts = ts_text and ts_text:match("^%d+$") and #ts_text <= 12 and tonumber(ts_text)
  if not ts_text then
    return self:error_reply("MissingParameter", "The request is missing a required parameter `Timestamp`.")
  elseif not ts or ts > 253402300799 then
    return self:error_reply("InvalidParameter", "X-TC-Timestamp must be integer Unix seconds.")
  end
  local cred, aerr = self:authenticate(req, now, math.tointeger(ts))
  if not cred then return self:error_reply(aerr.Code, aerr.Message) end
  if self.limiter and not self.limiter(action) then
    return self:error_reply("RequestLimitExceeded", format("Your requests to %s exceed the "
      .. "frequency limit (%d/s).", action, faults.tencent_limits[action]))
  end
  if #req.body > _M.MAX_BODY then
    return self:error_reply("RequestSizeLimitExceeded", "The request body exceeds 10 MB.")
  end
  local ctype = (h["content-type"] or ""):lower()
  if not ctype:match("^application/json") then
    return self:error_reply("InvalidParameter", "Content-Type must be application/json.")
  end
  local params = json_decode(req.body)
  if type(params) ~= "table" or (#params > 0) then
    return self:error_reply("InvalidParameter", "The request body must be a JSON object.")
  end
  local ok, res = pcall(handlers[action], self, params, now, cred)
  if not ok then
    if type(res) == "table" and res.Code then return self:error_reply(res.Code, res.Message) end
    if self.log then self.log("internal error in " .. action .. ": " .. tostring(res)) end
    return self:error_reply("InternalError", "An internal error occurred in the simulator.")
  end
  return self:reply(res)
end

-- What a gateway in front of the API answers with when it fails.
local function gateway_error(status)
  local text = { [502] = "Bad Gateway", [503] = "Service Unavailable", [504] = "Gateway Timeout" }
  local reason = text[status] or "Error"
  return { status = status, headers = { ["Content-Type"] = "text/html" },
    body = format("<html><head><title>%d %s</title></head><body><center><h1>%d %s</h1></center>"
      .. "</body></html>\n", status, reason, status, reason) }
end

-- The API with this call's faults applied.
function methods:api_with_faults(req)
  local action = req.headers["x-tc-action"] or ""
  local plan = self.faults:plan(action)
  local kind, rule = plan.kind, plan.rule
  local resp
  if kind == "http" then
    resp = gateway_error(rule.Status)
  elseif kind == "reset" then
    resp = { fault = "reset" }
  elseif kind == "throttle" then
    resp = self:error_reply("RequestLimitExceeded", "Your requests exceed the frequency limit.")
  elseif kind == "error" then
    resp = self:error_reply(rule.Code, "Injected fault: " .. rule.Code .. ".")
  else
    resp = self:api(req)
    if kind == "truncate" then
      resp.fault = "truncate"
    elseif kind == "malformed" then
      resp.body = resp.body:sub(1, #resp.body // 2) -- well-framed, not JSON
    elseif kind == "slow" then
      resp.fault, resp.slow_ms = "slow", rule.Ms
    end
  end
  if plan.delay_ms > 0 then resp.delay_ms = plan.delay_ms end
  return resp
end

-- Entry point for the HTTP server: every request, never raises.
function methods:handle(req)
  self.stats.requests = self.stats.requests + 1
  req.headers = req.headers or {}
  req.body = req.body or ""
  local path = req.path or "/"
  local ok, resp
  if path == "/" then
    ok, resp = pcall(self.api_with_faults, self, req)
  else
    ok, resp = pcall(require("eidkit.sim.control").handle, self, req)
  end
  if not ok then
    if self.log then self.log("internal error: " .. tostring(resp)) end
    return { status = 500, headers = { ["Content-Type"] = "application/json" },
      body = '{"error":"internal simulator error"}' }
  end
  if self.log_requests then
    self.log(format("%s %s %s %d", req.method or "-", path, req.headers["x-tc-action"] or "-",
      resp.status or 200))
  end
  return resp
end

return _M
