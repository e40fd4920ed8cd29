-- eidkit.flow: the documented E证通 sequence, done right (docs/internals/flow.md).
--
--   local flow = require("eidkit.flow"){ client = client, ledger = ledger,
--     merchant_id = "...", policy = require "my_policy" }
--   -- or policy = "my_policy.lua": the script runs in an eidkit.sandbox
--   -- (eidkit.policy.load), each hook call under limits; under LuaJIT as
--   -- trusted code in its own environment, without limits (docs/OPENRESTY.md)
--   local started, err = flow:start{ subject = "user-42", Name = ..., IdCard = ..., Extra = ..., Config = ... }
--     -- {EidToken, Url, expires_at, RequestId}: GetEidToken, then ledger:issue
--   local outcome, err = flow:finish{ subject = "user-42", EidToken = tok }
--     -- claim (the token must be this subject's), GetEidResult, record,
--     -- classify, consume once; a second call returns the same outcome
--   local n, report = flow:sweep{ limit = 100 }   -- results the front end never reported
--   local st, err = flow:poll_h5{ EidToken = tok } -- CheckEidTokenStatus every second
--   local subject, err = flow:authorize(request)  -- the policy's gateway rule
--   local skip, err = flow:on_show(options)       -- the policy's onShow rule
--   local n, last = flow:log_failures()           -- events dropped by a failing redact/logger
--   flow:gate_pulls(fn)    -- fn() before each GetEidResult call finish makes; non-nil refuses it
--
-- Misuse raises naming the argument; runtime failures return nil, err with
-- code, message, retryable (and the client's request_id, http_status, ...
-- when the API failed). A failing policy hook gives err.code == "policy" and
-- err.hook. A failing logger or redact hook never changes a result (see
-- log_failed). Names, ID numbers, secrets and Responses never reach errors or
-- logger events.
local host = require "eidkit.host"
local cjson = require "cjson"
local compat = require "eidkit.compat"
local errors = require "eidkit.errors"
local policy_mod = require "eidkit.policy"
local DEFAULT_CLASSIFY = policy_mod.defaults.classify

local type, pairs, ipairs, tostring, setmetatable, getmetatable, pcall, error, require =
  type, pairs, ipairs, tostring, setmetatable, getmetatable, pcall, error, require
local format = string.format
local is_int, math_tointeger = compat.is_int, compat.tointeger

local equal = host.equal
local decode = cjson.new().decode

local _M = {}
local mt = { __index = {} }
local methods = mt.__index

local STATUSES = { passed = true, failed = true, pending = true, expired = true }
-- The ledger's input limits and Tencent's flow-state ErrCodes, from C
-- (eidkit/host.h, through eidkit.core or the FFI: eidkit.host).
local TOKEN_MAX, SUBJECT_MAX, EXTRA_MAX = host.limits.token_max, host.limits.subject_max,
  host.limits.extra_max
local ERRCODE_EXPIRED = host.errcodes.expired
local SUBJECT_RULE = format("1-%d bytes without control characters", SUBJECT_MAX)
local EXPIRED_CODE = "InvalidParameterValue.BizTokenExpired"
-- Upper bound on the flow's own retries of one API call, whatever the policy says.
local MAX_ATTEMPTS = 10
-- Tokens whose binding finish keeps (claim_cache), and how close to its
-- expiry a token goes back to being claimed at the ledger.
local CLAIM_CACHE, CLAIM_MARGIN = 10000, 60

-- ------------------------------------------------------------ helpers

local error_result = errors.result

local function argerr(fname, msg, level)
  error(format("bad argument #1 to '%s' (%s)", fname, msg), (level or 2) + 1)
end

-- A copy of v that shares no table with it. A table reached twice (a
-- cycle, or one table under two keys) is copied once, so a policy that
-- hands back a cyclic outcome cannot send this into endless recursion.
local function deep_copy(v, seen)
  if type(v) ~= "table" then return v end
  local c = seen and seen[v]
  if c then return c end
  c = {}
  -- `seen` only once a table is inside: outcomes are flat, and copied on
  -- every finish.
  if seen then seen[v] = c end
  for k, x in pairs(v) do
    if type(k) == "table" or type(x) == "table" then
      seen = seen or { [v] = c }
      c[deep_copy(k, seen)] = deep_copy(x, seen)
    else
      c[k] = x
    end
  end
  return c
end

-- A short, single-line description of what a hook raised or returned.
local function describe(v)
  if type(v) == "table" then
    local m = v.message
    if m == nil and getmetatable(v) and getmetatable(v).__tostring then m = tostring(v) end
    v = m
  end
  local s = tostring(v):gsub("[%c]", " ")
  if #s > 200 then s = s:sub(1, 200) .. "..." end
  return s
end

local function policy_error(hook, what, cause)
  return error_result("policy", format("policy hook '%s' %s", hook, what),
    { hook = hook, cause = type(cause) == "table" and type(cause.code) == "string" and cause.code or nil })
end

-- Call a policy hook under pcall: ok, results... or nil, err (code "policy").
-- A raise, or nil plus an error (eidkit.sandbox's wrapped hooks), is failure.
local function hook_result(name, ok, a, b)
  if not ok then return policy_error(name, "raised: " .. describe(a), a) end
  if a == nil and b ~= nil then return policy_error(name, "failed: " .. describe(b), b) end
  return true, a, b
end

-- No table per call: hooks run several times on every finish.
local function hook(self, name, ...)
  return hook_result(name, pcall(self.policy[name], ...))
end

-- A token from outside (a redirect, a mini-program) goes into events only
-- when it looks like a token.
local function safe_token(tok)
  if type(tok) == "string" and #tok > 0 and #tok <= TOKEN_MAX and not tok:find("[^%w%-_.]") then
    return tok
  end
  return nil
end

local function to_stderr(why)
  io.stderr:write("eidkit.flow: an event could not be logged (", why, "); events that fail are ",
    "dropped and counted in flow:log_failures(), and this is said once\n")
end

-- Observability never changes an outcome: when policy.redact or the logger
-- fails, that one event is dropped and counted (flow:log_failures()), the
-- first failure goes to the side channel (opts.on_log_failure, by default
-- stderr; a side channel that fails too is ignored), and the caller's
-- result stands.
local function log_failed(self, why)
  self.log_failure_count = self.log_failure_count + 1
  self.log_failure_last = why
  if self.log_failure_count == 1 then pcall(self.on_log_failure, why) end
end

-- An event through policy.redact to the logger. Returns nothing: see log_failed.
local function emit(self, level, event)
  if not self.logger then return end
  local ok, ev = hook(self, "redact", event)
  if not ok then return log_failed(self, ev.message) end
  if ev == false then return end
  if type(ev) ~= "table" then
    return log_failed(self, "policy hook 'redact' must return the event table or false, got "
      .. type(ev))
  end
  local lok, lerr = pcall(self.logger, level, ev)
  if not lok then return log_failed(self, "the flow's logger raised: " .. describe(lerr)) end
end

local function check_subject(fname, s)
  if type(s) ~= "string" then argerr(fname, "subject: expected string, got " .. type(s), 3) end
  if s == "" or #s > SUBJECT_MAX or s:find("[%c]") then
    argerr(fname, "subject: expected " .. SUBJECT_RULE, 3)
  end
  return s
end

local function check_token(fname, t)
  if type(t) ~= "string" then argerr(fname, "EidToken: expected string, got " .. type(t), 3) end
  return t
end

local function check_fields(fname, p, allowed)
  if type(p) ~= "table" then argerr(fname, "expected a table", 3) end
  for k in pairs(p) do
    if not allowed[k] then argerr(fname, format("%s: unknown field", tostring(k)), 3) end
  end
end

local function is_network(err)
  local code = type(err) == "table" and err.code
  if type(code) ~= "string" then return false end
  -- The client's transport codes (timeout, connect, ..., http_NNN) come from C: eid_client_is_transport_code.
  return host.is_transport_code(code) or err.retryable == true
end

-- One API call through the client, asking policy.retry after each failure:
-- Response, or nil, err (the client's err, with action).
local function api(self, action, method, params)
  local attempts = 0
  while true do
    attempts = attempts + 1
    local res, err = self.client[method](self.client, params)
    if res then return res end
    if type(err) == "table" then err.action = action end
    if attempts >= MAX_ATTEMPTS then return nil, err end
    local ok, delay = hook(self, "retry", err, attempts)
    if not ok then return nil, delay end
    if delay == nil or delay == false then return nil, err end
    if type(delay) ~= "number" or not (delay >= 0 and delay <= 3600) then
      return policy_error("retry", "must return seconds (0..3600) or nil, got " .. describe(delay))
    end
    self.sleep(delay)
  end
end

-- The InfoType for GetEidResult: policy.info_type, a string or a hook.
local function info_type(self, request)
  local it = self.policy.info_type
  if type(it) ~= "string" then
    local ok, v = hook(self, "info_type", request)
    if not ok then return nil, v end
    if type(v) ~= "string" or not v:match("^%d+$") then
      return policy_error("info_type", "must return digits such as \"156\", got " .. describe(v))
    end
    it = v
  end
  return it
end

local function pull(self, tok, it)
  local rp = self.policy.result_params
  return api(self, "GetEidResult", "get_eid_result", { EidToken = tok, InfoType = it,
    BestFramesCount = rp.BestFramesCount, IsCutIdCardImage = rp.IsCutIdCardImage,
    IsNeedIdCardAvatar = rp.IsNeedIdCardAvatar })
end

-- What the gate (flow:gate_pulls, the gateway's upstream bucket) refuses
-- a GetEidResult call with; nil lets it through.
local function gate_refusal(self)
  local gate = self.pull_gate
  if gate then return gate() end
end

-- A GetEidResult call that finish makes, past the gate first, so what
-- finish answers without a call (the memo, a replay of a kept payload)
-- takes nothing from it. gated: the caller passed the gate already.
local function finish_pull(self, tok, it, gated)
  if not gated then
    local refused = gate_refusal(self)
    if refused ~= nil then return nil, refused end
  end
  return pull(self, tok, it)
end

-- ledger:record, where a Response the ledger cannot read is the
-- server's fault (bad_response), not the caller's. A client that kept the
-- text a Response was decoded from (eidkit.openresty.client) hands it over:
-- a ledger that digests JSON then reads what Tencent sent instead of
-- encoding the table again (docs/internals/openresty.md, "The text of an
-- answer").
local function record(self, tok, res)
  local text = self.response_text and self.response_text(self.client, res)
  local ok, rec, err = pcall(self.ledger.record, self.ledger, tok, text or res)
  if not ok then
    return error_result("bad_response", "the GetEidResult answer could not be recorded: " .. describe(rec))
  end
  return rec, err
end

-- A Response standing for what the ledger froze: Text.ErrCode and the
-- attempts up to that verdict (a later attempt on the same token, or a
-- result Tencent no longer has, must not change a settled outcome).
local function aligned(res, rec)
  if rec.ErrCode == nil then return res end
  local text = type(res) == "table" and type(res.Text) == "table" and res.Text or nil
  if text and math_tointeger(text.ErrCode) == rec.ErrCode then return res end
  local r = {}
  if type(res) == "table" then for k, v in pairs(res) do r[k] = v end end
  r.Error = nil
  local t = {}
  if text then for k, v in pairs(text) do t[k] = v end end
  t.ErrCode = rec.ErrCode
  if type(t.LivenessDetail) == "table" and #t.LivenessDetail > (rec.attempts or 0) then
    local d = {}
    for i = 1, rec.attempts or 0 do d[i] = t.LivenessDetail[i] end
    t.LivenessDetail = d
  end
  r.Text = t
  return r
end

-- Distinct unknown ErrCodes counted one by one; any more share "other", so
-- a service that invents codes cannot grow the table without bound.
local UNCLASSIFIED_MAX = 100

-- A Text.ErrCode the table (core/src/errcode.c) does not know: counted
-- (flow:unclassified_codes(), a metric in eidkit.gateway) and logged once
-- per code, so a new Tencent code is noticed without flooding the log.
local function note_unclassified(self, code)
  local key = code
  if self.unclassified[key] == nil and self.unclassified_n >= UNCLASSIFIED_MAX then key = "other" end
  local n = self.unclassified[key]
  if n == nil then
    if key ~= "other" then self.unclassified_n = self.unclassified_n + 1 end
    emit(self, "warn", { event = "unclassified_code", code = code })
  end
  self.unclassified[key] = (n or 0) + 1
end

-- The identity in a passed Response's EidInfo, decrypted with the flow's
-- eidinfo_key: {name, idtype, idnum, EidCode, EidSign}, or nil (no key, no
-- EidInfo, or it does not decrypt: the error code, never the data, is kept).
local function identity_of(self, res)
  if not self.eidinfo_key or type(res) ~= "table" or type(res.EidInfo) ~= "table" then return nil end
  local id, err = self.crypto.decrypt_eidinfo(res.EidInfo, self.eidinfo_key)
  return id, not id and err.code or nil
end

-- A passed default outcome turned failed when finish was told which
-- identity to expect and EidInfo holds another one (or none could be read).
local function check_expected(outcome, id, expect)
  if not expect or outcome.status ~= "passed" then return end
  if not id then
    outcome.status, outcome.reason, outcome.retry_with_new_token = "failed", "identity_unverified", false
  elseif (expect.name ~= nil and expect.name ~= id.name)
    or (expect.idnum ~= nil and tostring(expect.idnum):upper() ~= id.idnum:upper()) then
    outcome.status, outcome.reason, outcome.retry_with_new_token = "failed", "identity_mismatch", false
  end
end

-- The outcome of a Response: the default classification, then
-- policy.classify(res, default, identity). Returns outcome, identity (the
-- decrypted EidInfo, for on_outcome only) | nil, err.
local function classify(self, tok, res, expect)
  local default = policy_mod.default_outcome(res)
  if default.code ~= nil and not policy_mod.is_known_code(default.code) then
    note_unclassified(self, default.code)
  end
  local id = identity_of(self, res)
  check_expected(default, id, expect)
  local out = default
  -- The default hook returns the outcome it is given: no copy, no call.
  if self.policy.classify ~= DEFAULT_CLASSIFY then
    local ok
    ok, out = hook(self, "classify", res, deep_copy(default), id and deep_copy(id) or nil)
    if not ok then return nil, out end
  end
  if type(out) ~= "table" or not STATUSES[out.status] then
    return policy_error("classify", "must return an outcome table with status passed, failed, "
      .. "pending or expired")
  end
  out.EidToken = tok
  local rid = type(res) == "table" and res.RequestId
  out.request_id = type(rid) == "string" and rid or nil
  if self.policy.keep_result then out.result = res end
  return out, id
end

-- The claim cache. A token's subject and expiry are fixed when it is
-- issued, so for a token this flow issued or claimed before, finish can
-- apply the claim rule itself: host.check_open_claim is the ledger's own
-- rule (eid_ledger_check_claim), at the ledger's own clock (ledger:now()),
-- and saves the claim's round trip on every poll of a pending token. What
-- can change elsewhere is the state: another process may have consumed the
-- token. Then the pull and the record go through, the record comes back
-- "consumed", and finish replays the ledger's verdict (settle), the path a
-- finish that loses a race to another already takes: one GetEidResult more,
-- nothing else. Near expiry, and for tokens the cache does not hold, the
-- ledger is asked as before.
local function bind(self, tok, subject, expires_at)
  if self.claims_max == 0 or not is_int(expires_at) then return end
  if self.claims_count >= self.claims_max then self.claims, self.claims_count = {}, 0 end
  if not self.claims[tok] then self.claims_count = self.claims_count + 1 end
  self.claims[tok] = { subject = subject, expires_at = expires_at }
end

local function unbind(self, tok)
  if self.claims[tok] then
    self.claims[tok] = nil
    self.claims_count = self.claims_count - 1
  end
end

-- true: subject may use tok (no ledger call); nil, err: the rule refuses it
-- (another subject's token); false: ask the ledger.
local function claim_cached(self, tok, subject)
  local b = self.claims[tok]
  if not b then return false end
  local ok, now = pcall(self.ledger.now, self.ledger)
  if not ok or not is_int(now) or now >= b.expires_at - CLAIM_MARGIN then return false end
  local allowed, err = host.check_open_claim(b.subject, b.expires_at, subject, now)
  if allowed then return true end
  if err.code == "wrong_subject" then return nil, err end
  return false
end

local function remember(self, tok, subject, outcome)
  if self.memo_count >= self.memo_size then
    self.memo, self.memo_count = {}, 0
  end
  if not self.memo[tok] then self.memo_count = self.memo_count + 1 end
  self.memo[tok] = { subject = subject, outcome = deep_copy(outcome) }
end

local function outcome_event(tok, subject, o, replay)
  return { event = "outcome", EidToken = tok, subject = subject, status = o.status, code = o.code,
    reason = o.reason, billable = o.billable, replay = replay or nil, late = o.late }
end

-- ------------------------------------------------------------ the module

-- Does the ledger's record take a response as JSON text (record_text)?
local function takes_text(l)
  local ok, yes = pcall(function() return l.record_text == true end)
  return ok and yes
end

-- eidkit.flow{client =, ledger =, merchant_id =, policy =, logger =, clock =,
--   sleep =, on_log_failure =, poll_interval = 1, poll_max_wait = 600, poll_max_errors = 3,
--   memo_size = 1000, claim_cache = 10000} -> flow
function _M.new(opts)
  if type(opts) ~= "table" then error("bad argument #1 to 'flow' (expected a table of options)", 2) end
  local known = { client = 1, ledger = 1, merchant_id = 1, policy = 1, logger = 1, clock = 1,
    eidinfo_key = 1,
    sleep = 1, on_log_failure = 1, poll_interval = 1, poll_max_wait = 1, poll_max_errors = 1, memo_size = 1,
    claim_cache = 1 }
  for k in pairs(opts) do
    if not known[k] then error(format("bad option '%s' (unknown option)", tostring(k)), 2) end
  end
  local c = opts.client
  if type(c) ~= "table" or type(c.get_eid_result) ~= "function" then
    error("bad option 'client' (expected an eidkit.client)", 2)
  end
  local l = opts.ledger
  local lok, claim = pcall(function() return l.claim end)
  if not lok or type(claim) ~= "function" then
    error("bad option 'ledger' (expected an eidkit ledger)", 2)
  end
  local mid = opts.merchant_id
  if type(mid) ~= "string" or mid == "" then
    error("bad option 'merchant_id' (expected a non-empty string)", 2)
  end
  for _, k in pairs { "logger", "clock", "sleep", "on_log_failure" } do
    if opts[k] ~= nil and type(opts[k]) ~= "function" then
      error(format("bad option '%s' (expected a function)", k), 2)
    end
  end
  local function seconds(k, default, lo, hi)
    local v = opts[k]
    if v == nil then return default end
    if type(v) ~= "number" or not (v >= lo and v <= hi) then
      error(format("bad option '%s' (expected %g..%g seconds)", k, lo, hi), 3)
    end
    return v
  end
  local max_errors = opts.poll_max_errors or 3
  if not is_int(max_errors) or max_errors < 1 then
    error("bad option 'poll_max_errors' (expected a positive integer)", 2)
  end
  local memo_size = opts.memo_size or 1000
  if not is_int(memo_size) or memo_size < 0 then
    error("bad option 'memo_size' (expected a non-negative integer)", 2)
  end
  local claim_cache = opts.claim_cache or CLAIM_CACHE
  if not is_int(claim_cache) or claim_cache < 0 then
    error("bad option 'claim_cache' (expected a non-negative integer)", 2)
  end
  -- The cache needs the ledger's own clock (ledger:now()): a ledger without
  -- one is asked every time.
  local nok, lnow = pcall(function() return l.now end)
  if not nok or type(lnow) ~= "function" then claim_cache = 0 end
  local policy = opts.policy
  if type(policy) == "string" then -- a script to run in an eidkit.sandbox
    local loaded, lerr = policy_mod.load(policy)
    if not loaded then error("bad option 'policy' (" .. tostring(lerr) .. ")", 2) end
    policy = loaded
  end
  local eidinfo_key, crypto
  if opts.eidinfo_key ~= nil then
    -- eidkit.crypto is the Lua 5.4 module's (SM2 through eidkit.core).
    if host.name ~= "lua54" then host.lua54("the flow's eidinfo_key option (eidkit.crypto)") end
    crypto = require "eidkit.crypto"
    local kerr
    eidinfo_key, kerr = crypto.load_key(opts.eidinfo_key)
    if not eidinfo_key then error("bad option 'eidinfo_key' (" .. kerr.message .. ")", 2) end
    if eidinfo_key:type() ~= "sm2" or not eidinfo_key:is_private() then
      error("bad option 'eidinfo_key' (expected the merchant's SM2 private key)", 2)
    end
  end
  local pok, p = pcall(policy_mod.merge, policy)
  if not pok then error("bad option 'policy' (" .. tostring(p):gsub("^.-%((.*)%)$", "%1") .. ")", 2) end
  return setmetatable({
    client = c, ledger = l, merchant_id = mid, policy = p, logger = opts.logger,
    -- Only to a ledger that takes JSON text (eidkit's own say so): a
    -- merchant's ledger keeps getting the table.
    response_text = type(c.response_text) == "function" and takes_text(l) and c.response_text or nil,
    eidinfo_key = eidinfo_key, crypto = crypto,
    clock = opts.clock or host.now, sleep = opts.sleep or host.sleep,
    poll_interval = seconds("poll_interval", 1, 0, 60),
    poll_max_wait = seconds("poll_max_wait", 600, 0, 86400),
    poll_max_errors = max_errors,
    memo = {}, memo_count = 0, memo_size = memo_size,
    claims = {}, claims_count = 0, claims_max = claim_cache,
    log_failure_count = 0, log_failure_last = nil, on_log_failure = opts.on_log_failure or to_stderr,
    unclassified = {}, unclassified_n = 0,
  }, mt)
end

local start_fields = { subject = true, Name = true, IdCard = true, Extra = true, Config = true,
  RedirectUrl = true, Encryption = true }

-- flow:start{subject, Name, IdCard, Extra, Config, RedirectUrl, Encryption}
--   -> {EidToken, Url, expires_at, RequestId} | nil, err
function methods.start(self, p)
  check_fields("start", p, start_fields)
  local subject = check_subject("start", p.subject)
  for _, k in pairs { "Name", "IdCard", "Extra", "RedirectUrl" } do
    if p[k] ~= nil and type(p[k]) ~= "string" then
      argerr("start", format("%s: expected string, got %s", k, type(p[k])))
    end
  end
  for _, k in pairs { "Config", "Encryption" } do
    if p[k] ~= nil and type(p[k]) ~= "table" then
      argerr("start", format("%s: expected table, got %s", k, type(p[k])))
    end
  end
  if p.Extra and (#p.Extra > EXTRA_MAX or p.Extra:find("[%z\1-\8\10-\31\127]")) then
    argerr("start", format("Extra: expected at most %d bytes without control characters", EXTRA_MAX))
  end
  local res, err = api(self, "GetEidToken", "get_eid_token", {
    MerchantId = self.merchant_id, Name = p.Name, IdCard = p.IdCard, Extra = p.Extra,
    Config = p.Config, RedirectUrl = p.RedirectUrl, Encryption = p.Encryption })
  if not res then
    emit(self, "warn", { event = "start_failed", subject = subject,
      code = err.code, request_id = err.request_id })
    return nil, err
  end
  local tok = res.EidToken
  if not safe_token(tok) then
    return error_result("bad_response", "GetEidToken answered without a usable EidToken",
      { request_id = type(res.RequestId) == "string" and res.RequestId or nil })
  end
  -- Stored before it is handed out: a token the ledger does not hold is never given to a user.
  -- Intention verification is priced differently: the ledger keeps whether it was on.
  local intention = type(p.Config) == "table" and p.Config.UseIntentionVerify == true
  local iok, issued, ierr = pcall(self.ledger.issue, self.ledger,
    { EidToken = tok, MerchantId = self.merchant_id, subject = subject, Extra = p.Extra,
      intention = intention })
  if not iok then return error_result("internal", "the ledger refused the token: " .. describe(issued)) end
  if not issued then
    -- Tencent never hands out a token twice; the ledger holding it already
    -- means another service (or a simulator restarted with the same seed)
    -- issues into this ledger. The caller cannot fix that: upstream's fault.
    if type(ierr) == "table" and ierr.code == "exists" then
      return error_result("bad_response", "GetEidToken answered an EidToken the ledger already holds",
        { request_id = type(res.RequestId) == "string" and res.RequestId or nil })
    end
    return nil, ierr
  end
  local rec, gerr = self.ledger:get(tok)
  if not rec then return nil, gerr end
  bind(self, tok, subject, rec.expires_at)
  emit(self, "info", { event = "start", subject = subject, EidToken = tok,
    request_id = res.RequestId })
  return { EidToken = tok, Url = res.Url, expires_at = rec.expires_at, RequestId = res.RequestId }
end

-- policy.on_outcome for a token this call settled (consumed): true, or
-- nil, err. The outcome is recorded either way, and a replay returns it.
local function report_settled(self, outcome, identity)
  local copy = deep_copy(outcome)
  copy.identity = identity -- on_outcome alone sees who was verified
  local ok, err = hook(self, "on_outcome", copy)
  if ok then return true end
  err.message = err.message .. " (the outcome is recorded: finish returns it again)"
  return nil, err
end

-- Report a final outcome: memo, event, then on_outcome when this call settled the token.
local function conclude(self, tok, subject, outcome, settled, identity)
  if outcome.status ~= "pending" then remember(self, tok, subject, outcome) end
  local level = (outcome.status == "passed" or outcome.status == "pending") and "info" or "warn"
  if self.logger then emit(self, level, outcome_event(tok, subject, outcome)) end
  if settled then
    unbind(self, tok)
    local hok, herr = report_settled(self, outcome, identity)
    if not hok then return nil, herr end
  end
  return outcome
end

-- A pass the ledger recorded after the token was consumed with a failure
-- (rec.late: this record call stored it, which happens once per token):
-- the outcome event and on_outcome with outcome.late = true. Never a
-- consume, never the memo: finish keeps returning the consumed verdict.
local function report_late(self, tok, subject, res)
  local outcome, identity = classify(self, tok, res)
  if not outcome then return nil, identity end
  outcome.late = true
  emit(self, "info", outcome_event(tok, subject, outcome))
  return report_settled(self, outcome, identity) -- a late pass names who passed, as any pass does
end

-- The outcome of a token already settled (consumed, or expired with
-- Tencent's code): rebuilt from the ledger and the result, never consumed
-- again, on_outcome not called again.
local replay_recorded, replay_outcome

local function replay(self, tok, subject, rec, expect, gated)
  unbind(self, tok) -- consumed: the cache has nothing more to save
  if not rec then
    local err
    rec, err = self.ledger:get(tok)
    if not rec then return nil, err end
  end
  if not equal(rec.subject, subject) then
    return error_result("wrong_subject", "the token is bound to another subject")
  end
  local res
  if rec.has_payload then
    local pok, payload = pcall(self.ledger.payload, self.ledger, tok)
    if pok and type(payload) == "string" then
      local dok, v = pcall(decode, payload)
      -- A body recorded as received keeps its envelope.
      if dok and type(v) == "table" then res = type(v.Response) == "table" and v.Response or v end
    end
  end
  if not res then
    local it, ierr = info_type(self, { EidToken = tok, subject = subject })
    if not it then return nil, ierr end
    local err
    res, err = finish_pull(self, tok, it, gated)
    if not res then
      if not (err and err.code == EXPIRED_CODE) then return nil, err end
      res = {} -- Tencent forgot it: the ledger's verdict stands alone
    else
      -- Every result is billing evidence: a retry after the consumed
      -- failure is recorded, and a late pass told once.
      local after, rerr = record(self, tok, res)
      if not after then return nil, rerr end
      return replay_recorded(self, tok, subject, rec, res, after, expect)
    end
  end
  return replay_outcome(self, tok, subject, rec, res, expect)
end

-- A replay's last steps, for a result pulled and recorded on a consumed
-- token (by replay, or by settle when the claim cache did not know the
-- token was consumed): a late pass is told once, then the ledger's verdict.
function replay_recorded(self, tok, subject, rec, res, after, expect)
  if after.late then
    local ok, lerr = report_late(self, tok, subject, res)
    if not ok then return nil, lerr end
  end
  return replay_outcome(self, tok, subject, rec, res, expect)
end

function replay_outcome(self, tok, subject, rec, res, expect)
  res = aligned(res, rec)
  local outcome, cerr = classify(self, tok, res, expect)
  if not outcome then return nil, cerr end
  remember(self, tok, subject, outcome)
  emit(self, "info", outcome_event(tok, subject, outcome, true))
  return deep_copy(outcome)
end

-- A token the ledger holds as expired with Tencent's ErrCode 15 (a sweep
-- recorded it): close it once (consume) and report it to on_outcome; a
-- concurrent closer wins the race and this call replays.
local function close_expired(self, tok, subject, rec)
  -- The gate before the consume: a refusal after it would leave the
  -- token closed and its outcome never reported.
  local gated = not rec.has_payload
  if gated then
    local refused = gate_refusal(self)
    if refused ~= nil then return nil, refused end
  end
  local c, cerr = self.ledger:consume(tok, subject)
  if not c then
    if cerr.code == "consumed" then return replay(self, tok, subject, nil, nil, gated) end
    return nil, cerr
  end
  local outcome, err = replay(self, tok, subject, c, nil, gated)
  if not outcome then return nil, err end
  local ok, herr = report_settled(self, outcome)
  if not ok then return nil, herr end
  return outcome
end

-- Pull, record, classify and settle a claimed token (past_ttl: the
-- ledger's lifetime is over).
local function settle(self, tok, subject, past_ttl, expect, cached)
  local it, ierr = info_type(self, { EidToken = tok, subject = subject })
  if not it then return nil, ierr end
  local res, err = finish_pull(self, tok, it)
  local forgotten = false
  if not res then
    if not (err and err.code == EXPIRED_CODE) then return nil, err end
    -- Three days on: recorded as Tencent's expiry (the ledger maps it to 15).
    forgotten = true
    res = { Error = { Code = EXPIRED_CODE }, RequestId = err.request_id }
  end
  local after, rerr = record(self, tok, res)
  if not after then return nil, rerr end
  if cached and after.state == "consumed" then
    -- The claim cache's binding held, its state did not: another process
    -- consumed the token. What the ledger's claim would have led to.
    unbind(self, tok)
    return replay_recorded(self, tok, subject, after, res, after, expect)
  end
  if forgotten then
    res = aligned({ RequestId = res.RequestId }, after.ErrCode ~= nil and after or
      { ErrCode = ERRCODE_EXPIRED, attempts = after.attempts })
  end
  local outcome, cerr = classify(self, tok, res, expect)
  if not outcome then return nil, cerr end
  local identity = cerr
  local status = outcome.status
  if past_ttl and status == "pending" then
    -- The ledger's lifetime is over and Tencent has no verdict: expired.
    outcome.status, outcome.reason, outcome.retry_with_new_token = "expired", "token_expired", true
    status = "expired"
  end
  local settled = false
  if status == "passed" or status == "failed" then
    local c, cerr2 = self.ledger:consume(tok, subject)
    if not c then
      if cerr2.code == "consumed" then return replay(self, tok, subject) end -- another finish won
      if cerr2.code == "pending" then
        return policy_error("classify", format("returned '%s' for a result with no verdict "
          .. "(Text.ErrCode absent or 17): the ledger cannot settle it", status))
      end
      return nil, cerr2
    end
    settled = true
  elseif status == "expired" and after.state == "expired" and after.ErrCode ~= nil then
    -- Tencent's expiry is a verdict the ledger can close once (consume):
    -- whoever closes it reports it.
    local c, cerr2 = self.ledger:consume(tok, subject)
    if not c then
      if cerr2.code == "consumed" then return replay(self, tok, subject) end
      return nil, cerr2
    end
    settled = true
  end
  local done, derr = conclude(self, tok, subject, outcome, settled, identity)
  if not done then return nil, derr end
  return deep_copy(outcome)
end

local finish_fields = { subject = true, EidToken = true, expect = true }

-- flow:finish{subject, EidToken[, expect = {name =, idnum =}]} -> outcome | nil, err.
-- With eidinfo_key, a pass whose EidInfo names someone else than expect is
-- failed with reason identity_mismatch (identity_unverified when EidInfo
-- cannot be read); the decrypted identity goes to policy.classify (third
-- argument) and on_outcome (outcome.identity), never into the outcome
-- returned, events or errors.
function methods.finish(self, p)
  check_fields("finish", p, finish_fields)
  local subject = check_subject("finish", p.subject)
  local tok = check_token("finish", p.EidToken)
  local expect = p.expect
  if expect ~= nil and (type(expect) ~= "table" or (expect.name == nil and expect.idnum == nil)) then
    argerr("finish", "expect: expected a table with name and/or idnum", 2)
  end
  local m = self.memo[tok]
  if m and equal(m.subject, subject) then
    emit(self, "info", outcome_event(tok, subject, m.outcome, true))
    return deep_copy(m.outcome)
  end
  local rec, err
  -- A token the claim cache holds was issued or claimed here: token-shaped.
  if self.claims[tok] or safe_token(tok) then
    local known, kerr = claim_cached(self, tok, subject)
    if known then return settle(self, tok, subject, false, expect, true) end
    if known == nil then
      err = kerr
    else
      rec, err = self.ledger:claim(tok, subject)
      if rec then
        bind(self, tok, subject, rec.expires_at)
        return settle(self, tok, subject, false, expect)
      end
      unbind(self, tok)
    end
  else
    -- Not even token-shaped (a redirect's query string is anyone's): unknown.
    err = errors.new("unknown_token", "EidToken: no such token in the ledger")
  end
  local code = err.code
  if code == "consumed" then return replay(self, tok, subject, nil, expect) end
  if code == "expired" then
    local r, gerr = self.ledger:get(tok)
    if not r then return nil, gerr end
    if r.ErrCode ~= nil and r.state == "expired" then return close_expired(self, tok, subject, r) end
    if r.ErrCode ~= nil then return replay(self, tok, subject, r) end
    -- Past the ledger's lifetime with no verdict: one pull lets a late result land.
    return settle(self, tok, subject, true, expect)
  end
  if code == "wrong_subject" or code == "unknown_token" then
    emit(self, "warn", { event = "refused", subject = subject,
      EidToken = safe_token(tok), code = code })
  end
  return nil, err
end

-- After a sweep: settle the pulled tokens whose verdict can no longer
-- change (a pass, Tencent's expiry), as finish would: consume once, then
-- the outcome event and on_outcome. A failure is left to finish: until the
-- token's lifetime ends the user may still pass on it. Returns the number
-- settled; failures go into report.failures.
local function settle_pulled(self, pulled, report)
  local settled = 0
  report.late = 0
  for _, p in ipairs(pulled) do
    local rec = report.records[p.tok] -- as recorded by this sweep: no second read
    if rec and rec.late then
      local ok, err = report_late(self, p.tok, rec.subject, p.res)
      if ok then
        report.late = report.late + 1
      else
        report.failures[#report.failures + 1] = { EidToken = p.tok,
          message = "reporting a late pass: " .. describe(err) }
      end
    elseif rec and (rec.state == "passed" or (rec.state == "expired" and rec.ErrCode ~= nil)) then
      local c, cerr = self.ledger:consume(p.tok, rec.subject)
      local outcome, err
      if c then
        outcome, err = classify(self, p.tok, aligned(p.res, c))
        if outcome then outcome, err = conclude(self, p.tok, rec.subject, outcome, true, err) end
      elseif cerr.code ~= "consumed" then -- consumed: a finish settled it meanwhile
        err = cerr
      end
      if outcome then
        settled = settled + 1
      elseif err then
        report.failures[#report.failures + 1] = { EidToken = p.tok,
          message = "settling: " .. describe(err) }
      end
    end
  end
  return settled
end

-- flow:sweep{limit = 100} -> recorded, report | nil, err
-- Pulls every token the ledger says is due (ledger:sweep) with the policy's
-- InfoType and records verdicts; then settles those that can no longer
-- change (passes, Tencent's expiries: consumed once, on_outcome called), so
-- an outcome the front end never reported still reaches on_outcome.
-- report.settled counts them.
function methods.sweep(self, p)
  if p == nil then p = {} end
  check_fields("sweep", p, { limit = true })
  local limit = p.limit or 100
  if not is_int(limit) or limit < 1 or limit > 100000 then
    argerr("sweep", "limit: expected an integer 1..100000")
  end
  local it, ierr = info_type(self, { sweep = true })
  if not it then return nil, ierr end
  local stop
  local pulled = {}
  local report, err = self.ledger:sweep(function(tok)
    if stop then return nil, "skipped after a policy failure" end
    local res, perr = pull(self, tok, it)
    if res then
      pulled[#pulled + 1] = { tok = tok, res = res }
      return res
    end
    if perr and perr.code == "policy" then stop = perr end
    if perr and perr.code == EXPIRED_CODE then
      pulled[#pulled + 1] = { tok = tok, res = { RequestId = perr.request_id } }
      return { Error = { Code = EXPIRED_CODE }, RequestId = perr.request_id }
    end
    return nil, perr
  end, { limit = limit })
  if stop then return nil, stop end
  if not report then return nil, err end
  report.settled = settle_pulled(self, pulled, report)
  emit(self, #report.failures > 0 and "warn" or "info", { event = "sweep",
    due = report.due, recorded = report.recorded, failed = report.failed,
    settled = report.settled, expired = report.expired, abandoned = report.abandoned })
  return report.recorded, report
end

-- flow:poll_h5{EidToken, subject?, interval?, max_wait?, max_errors?}
--   -> {status, done, polls, network_errors, request_id} | nil, err
-- CheckEidTokenStatus every interval seconds until finished or timeout.
-- Network errors keep the last state; max_errors in a row give up.
function methods.poll_h5(self, p)
  check_fields("poll_h5", p, { EidToken = true, subject = true, interval = true, max_wait = true,
    max_errors = true })
  local tok = check_token("poll_h5", p.EidToken)
  local subject = p.subject ~= nil and check_subject("poll_h5", p.subject) or nil
  local interval, max_wait = p.interval or self.poll_interval, p.max_wait or self.poll_max_wait
  if type(interval) ~= "number" or not (interval >= 0 and interval <= 60) then
    argerr("poll_h5", "interval: expected 0..60 seconds")
  end
  if type(max_wait) ~= "number" or not (max_wait >= 0 and max_wait <= 86400) then
    argerr("poll_h5", "max_wait: expected 0..86400 seconds")
  end
  local max_errors = p.max_errors or self.poll_max_errors
  if not is_int(max_errors) or max_errors < 1 then
    argerr("poll_h5", "max_errors: expected a positive integer")
  end
  -- Only tokens this merchant issued (and, given a subject, issued to it) are polled.
  if not safe_token(tok) then return error_result("unknown_token", "EidToken: no such token in the ledger") end
  local rec, err = self.ledger:get(tok)
  if not rec then return nil, err end
  if subject and not equal(rec.subject, subject) then
    return error_result("wrong_subject", "the token is bound to another subject")
  end
  local started = self.clock()
  local st = { status = "unknown", done = false, polls = 0, network_errors = 0 }
  local row = 0
  while true do
    local res, cerr = self.client:check_eid_token_status { EidToken = tok }
    st.polls = st.polls + 1
    if res then
      row = 0
      st.status = type(res.Status) == "string" and res.Status or "unknown"
      st.request_id = res.RequestId
      if st.status == "finished" or st.status == "timeout" then
        st.done = true
        break
      end
    elseif is_network(cerr) then
      row = row + 1
      st.network_errors = st.network_errors + 1
      if row >= max_errors then
        emit(self, "warn", { event = "poll_gave_up", EidToken = tok,
          subject = subject, code = cerr.code, errors = row })
        cerr.message = format("gave up after %d network errors in a row (last: %s)", row,
          tostring(cerr.message))
        cerr.action = "CheckEidTokenStatus"
        return nil, cerr
      end
    else
      cerr.action = "CheckEidTokenStatus"
      return nil, cerr
    end
    if self.clock() - started + interval > max_wait then break end
    self.sleep(interval)
  end
  emit(self, "info", { event = "poll", EidToken = tok, subject = subject,
    status = st.status, polls = st.polls, network_errors = st.network_errors })
  return st
end

-- flow:authorize(request) -> subject | nil, err (code "unauthorized" when
-- the policy refuses, "policy" when it fails).
function methods.authorize(self, request)
  local ok, subject, reason = hook(self, "authorize", request)
  if not ok then return nil, subject end
  if type(subject) == "string" and subject ~= "" and #subject <= SUBJECT_MAX and not subject:find("%c") then
    return subject
  end
  if subject == false then
    return error_result("unauthorized", "refused by the authorize policy"
      .. (reason ~= nil and ": " .. describe(reason) or ""))
  end
  return policy_error("authorize", "must return a subject (" .. SUBJECT_RULE .. ") or false, reason; got "
    .. type(subject))
end

-- flow:gate_pulls(fn | nil): fn() is called before each GetEidResult call
-- that finish makes (not the sweep's); a non-nil return refuses the call,
-- and finish returns it as its error, the ledger unchanged. What finish
-- answers without a call (the memo, a replay of a kept payload) does not
-- call fn. eidkit.gateway sets its GetEidResult bucket here; nil removes it.
function methods.gate_pulls(self, fn)
  if fn ~= nil and type(fn) ~= "function" then argerr("gate_pulls", "expected a function or nil") end
  self.pull_gate = fn
end

-- flow:set_policy(policy): replace the policy (a table, or a path run in an
-- eidkit.sandbox, as the `policy` option). Misuse raises and changes
-- nothing; a script that does not load returns nil, err and changes
-- nothing. Calls in progress see the new hooks from their next hook call.
function methods.set_policy(self, policy)
  if type(policy) == "string" then
    local loaded, lerr = policy_mod.load(policy)
    if not loaded then return nil, lerr end
    policy = loaded
  end
  local ok, p = pcall(policy_mod.merge, policy)
  if not ok then error("bad argument #1 to 'set_policy' (" .. tostring(p):gsub("^.-%((.*)%)$", "%1") .. ")", 2) end
  self.policy = p
  return true
end

-- flow:log_failures() -> how many events were dropped because policy.redact
-- or the logger failed, and the last reason (never an event's content).
function methods.log_failures(self)
  return self.log_failure_count, self.log_failure_last
end

-- flow:unclassified_codes() -> {[ErrCode] = times seen}: the Text.ErrCodes
-- this flow classified as "unclassified" (not in the ErrCode table); past
-- 100 distinct codes the rest are counted under "other".
function methods.unclassified_codes(self)
  local c = {}
  for k, v in pairs(self.unclassified) do c[k] = v end
  return c
end

-- flow:on_show(options) -> true when the onShow is the return from eID | nil, err
function methods.on_show(self, options)
  local ok, v = hook(self, "on_show", options)
  if not ok then return nil, v end
  if type(v) ~= "boolean" then return policy_error("on_show", "must return a boolean, got " .. type(v)) end
  return v
end

mt.__tostring = function(self) return "eidkit.flow (" .. self.merchant_id .. ")" end
mt.__name = "eidkit.Flow"

_M.is_eid_return = policy_mod.is_eid_return

setmetatable(_M, { __call = function(_, opts) return _M.new(opts) end })

return _M
