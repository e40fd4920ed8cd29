-- eidkit.client: the FaceID API client for merchants.
--   local client = require("eidkit.client").new{ secret_id = ..., secret_key = ... }
--   local res, err = client:get_eid_token{ MerchantId = "...", Config = { InputType = "4" }, ... }
-- res is the decoded Response table (Tencent's field names, RequestId
-- included; JSON null is cjson.null). err is a table with code, message,
-- request_id, http_status, attempts, retryable, sent, trace_id, received (the
-- first bytes of an answer whose status is not 200; never a 200 body, which
-- may hold an identity) and a __tostring. Parameter mistakes raise.
-- Transport, retries and clock skew are in C (core/src/client.c); see
-- docs/internals/client.md.
-- encryption = {...} (see _M.encryption_options) applies to get_eid_token;
-- call() and batch() send what they are given.
-- client.provider is the credential provider in use (provider:get() ->
-- creds | nil, why); `eidkit ledger sweep` asks it before pulling.
-- thread = true runs libcurl on a thread of the client's own (no Lua retry
-- function then; docs/internals/client.md).
-- A host with its own event loop gives `await = function(c, action, body)`:
-- every call then goes through it instead of the blocking c:call, and it
-- returns what c:call would (text, attempts | nil, err), e.g. after
-- c:submit and a coroutine yield (lua/eidkit/serve.lua).
local core = require "eidkit.core"
local cjson = require "cjson"
local credentials = require "eidkit.credentials"
local crypto = require "eidkit.crypto"
local errors = require "eidkit.errors"
local client_params = require "eidkit.client_params"

local type, error, pairs, ipairs, setmetatable, tostring = type, error, pairs, ipairs, setmetatable,
  tostring
local sort, format = table.sort, string.format

local json = cjson.new()
json.encode_sparse_array(true)
local encode, decode = json.encode, json.decode

local _M = { _VERSION = core.version() }
local mt = { __index = {} }
local methods = mt.__index

-- nil, err for a call that failed before any attempt (no request was sent).
local function unsent_error(code, message)
  return errors.result(code, message, { attempts = 0 })
end

-- retry option: a table of default-policy knobs, or a function.
local function retry_options(o, retry)
  if retry == nil then return end
  if type(retry) == "function" then
    o.retry = retry
  elseif type(retry) == "table" then
    for k, v in pairs(retry) do
      if k == "max_attempts" then o.max_attempts = v
      elseif k == "base" then o.backoff_base = v
      elseif k == "cap" then o.backoff_cap = v
      elseif k == "unsafe" then o.retry_unsafe = v
      else error(format("bad option 'retry' (unknown key '%s'; max_attempts, base, cap, unsafe)",
        tostring(k)), 4) end
    end
  else
    error("bad option 'retry' (expected a table or function(err, attempts))", 4)
  end
end

local passthrough = { "endpoint", "region", "language", "connect_timeout", "timeout",
  "deadline", "proxy", "ca_file", "verify_tls", "max_response", "max_in_flight", "service", "thread" }

-- eidkit.client{...} -> client (see the file header and README).
function _M.new(opts)
  if opts ~= nil and type(opts) ~= "table" then
    error("bad argument #1 to 'client' (expected a table of options)", 2)
  end
  opts = opts or {}
  local known = { secret_id = 1, secret_key = 1, token = 1, credentials = 1, headers = 1,
    retry = 1, logger = 1, await = 1, encryption = 1 }
  for _, k in ipairs(passthrough) do known[k] = 1 end
  for k in pairs(opts) do
    if not known[k] then error(format("bad option '%s' (unknown option)", tostring(k)), 2) end
  end
  local o = {}
  for _, k in ipairs(passthrough) do o[k] = opts[k] end
  if o.verify_tls ~= nil and type(o.verify_tls) ~= "boolean" then
    error("bad option 'verify_tls' (expected boolean)", 2)
  end
  if opts.headers ~= nil then
    if type(opts.headers) ~= "table" then error("bad option 'headers' (expected table)", 2) end
    local list = {}
    for k, v in pairs(opts.headers) do
      if type(k) ~= "string" or type(v) ~= "string" then
        error("bad option 'headers' (expected {Name = 'value'})", 2)
      end
      list[#list + 1] = k .. ": " .. v
    end
    sort(list)
    o.headers = list
  end
  retry_options(o, opts.retry)
  local logger = opts.logger
  if logger ~= nil and type(logger) ~= "function" then
    error("bad option 'logger' (expected function(level, event))", 2)
  end
  o.logger = logger
  if opts.await ~= nil and type(opts.await) ~= "function" then
    error("bad option 'await' (expected function(c, action, body))", 2)
  end

  local provider
  if opts.secret_id ~= nil or opts.secret_key ~= nil then
    if type(opts.secret_id) ~= "string" or type(opts.secret_key) ~= "string" then
      error("bad option 'secret_id'/'secret_key' (both strings, or neither)", 2)
    end
    if opts.credentials ~= nil then
      error("bad option 'credentials' (give a provider or static keys, not both)", 2)
    end
    provider = credentials.static(opts.secret_id, opts.secret_key, opts.token)
  elseif opts.credentials ~= nil then
    provider = opts.credentials
    if type(provider) ~= "table" or type(provider.get) ~= "function" then
      error("bad option 'credentials' (expected a provider with :get())", 2)
    end
  else
    provider = credentials.default()
  end

  local encryption = _M.encryption_options(opts.encryption)

  local ok, c = pcall(core.client_new, o)
  if not ok then error(c, 2) end
  return setmetatable({ c = c, provider = provider, creds = nil, await = opts.await,
    encryption = encryption }, mt)
end

-- encryption = { algorithm = "SM4-GCM"|"AES-256-CBC", public_key = PEM|path|Key,
-- fields = {"Name", "IdCard"}, key_ttl = seconds (0: a fresh key per call) }:
-- GetEidToken's fields are encrypted (Tencent's field encryption) and an
-- answer's Response.Encryption decrypted, transparently. Misuse raises.
function _M.encryption_options(e)
  if e == nil then return nil end
  if type(e) ~= "table" then error("bad option 'encryption' (expected a table)", 3) end
  for k in pairs(e) do
    if k ~= "algorithm" and k ~= "public_key" and k ~= "fields" and k ~= "key_ttl" then
      error(format("bad option 'encryption' (unknown key '%s')", tostring(k)), 3)
    end
  end
  local alg = e.algorithm or "AES-256-CBC"
  if not crypto.ALGORITHMS[alg] then
    error("bad option 'encryption' (algorithm: \"AES-256-CBC\" or \"SM4-GCM\")", 3)
  end
  if e.public_key == nil then error("bad option 'encryption' (public_key: PEM text or a path)", 3) end
  local key, err = crypto.load_key(e.public_key)
  if not key then error("bad option 'encryption' (public_key: " .. err.message .. ")", 3) end
  if key:type() ~= crypto.ALGORITHMS[alg].wrap then
    error(format("bad option 'encryption' (%s needs an %s public key)", alg,
      crypto.ALGORITHMS[alg].wrap:upper()), 3)
  end
  local fields = e.fields or { "Name", "IdCard" }
  if type(fields) ~= "table" or #fields == 0 then
    error("bad option 'encryption' (fields: a list of request field names)", 3)
  end
  local ttl = e.key_ttl or 0
  if type(ttl) ~= "number" or ttl < 0 then
    error("bad option 'encryption' (key_ttl: seconds >= 0)", 3)
  end
  return { algorithm = alg, public_key = key, fields = fields, key_ttl = ttl }
end

-- The session key for this call: a fresh one, or the cached one while it
-- is younger than key_ttl (the official SDK's keyExpireTime).
local function encryption_session(e)
  local now = core.monotonic()
  if e.key_ttl > 0 and e.session and now - e.born < e.key_ttl then return e.session end
  local s, err = crypto.session { algorithm = e.algorithm, public_key = e.public_key }
  if not s then return nil, err end
  e.session, e.born = s, now
  return s
end

-- Hand the provider's current credentials to the C client when they change.
local function refresh_credentials(self)
  local ok, creds, err = pcall(self.provider.get, self.provider)
  if not ok then return unsent_error("credentials", "the credential provider raised: " .. tostring(creds)) end
  if not creds then
    return unsent_error("credentials", type(err) == "table" and tostring(err.message) or tostring(err))
  end
  if creds ~= self.creds then
    self.c:set_credentials(creds.secret_id, creds.secret_key, creds.token)
    self.creds = creds
  end
  return true
end

-- The C core hands back successful Response text unparsed (defer_parse);
-- text that lua-cjson refuses is a bad_response, never a raise. It came with
-- a 200 and may be a GetEidResult (Name, IdCard, EidInfo): the error gives its
-- size, never its bytes (no `received`; keep_received in eidkit/retry.h).
local function decode_response(text, attempts)
  local ok, res = pcall(decode, text)
  if ok and type(res) == "table" then return res end
  return errors.result("bad_response", "the Response is not valid JSON: "
    .. tostring(res):gsub("^.-: ", "") .. "; " .. #text .. " bytes of Response",
    { attempts = attempts, http_status = 200 })
end

-- The one place a call waits: the blocking c:call, or the host's await.
local function do_call(self, action, params)
  local ok, err = refresh_credentials(self)
  if not ok then return nil, err end
  local text, attempts
  if self.await then
    text, attempts = self.await(self.c, action, encode(params))
  else
    text, attempts = self.c:call(action, encode(params))
  end
  if not text then return nil, attempts end
  return decode_response(text, attempts)
end

-- client:call(action, params) -> Response | nil, err
function methods.call(self, action, params)
  return do_call(self, action, client_params.check_call(action, params))
end

function methods.get_eid_token(self, p)
  client_params.check("get_eid_token", p)
  local e = self.encryption
  if not e or p.Encryption ~= nil then return do_call(self, "GetEidToken", p) end
  local s, serr = encryption_session(e)
  if not s then return unsent_error(serr.code, serr.message) end
  local res, err = do_call(self, "GetEidToken", crypto.encrypt_fields(s, p, e.fields))
  if not res then return nil, err end
  local plain, derr = crypto.decrypt_response(s, res)
  if not plain then
    return nil, errors.new(derr.code, "Response.Encryption: " .. derr.message,
      { request_id = res.RequestId })
  end
  return plain
end

function methods.get_eid_result(self, p)
  client_params.check("get_eid_result", p)
  return do_call(self, "GetEidResult", p)
end

function methods.check_eid_token_status(self, p)
  client_params.check("check_eid_token_status", p)
  return do_call(self, "CheckEidTokenStatus", p)
end

-- client:batch{ {"GetEidResult", {EidToken = a}}, ... } -> results, where
-- results[i] = { res = Response } or { err = err }, in the order given. All
-- calls run at once on this thread, each with its own retries.
function methods.batch(self, list)
  if type(list) ~= "table" then error("bad argument #1 to 'batch' (expected a list)", 2) end
  local reqs = {}
  for i, entry in ipairs(list) do
    if type(entry) ~= "table" or type(entry[1]) ~= "string" or not entry[1]:match("^%a%w*$")
      or (entry[2] ~= nil and type(entry[2]) ~= "table") then
      error(format("bad argument #1 to 'batch' (entry %d: expected {action, params})", i), 2)
    end
    reqs[i] = { entry[1], encode(entry[2] or {}) }
  end
  local results = {}
  local ok, err = refresh_credentials(self)
  if not ok then
    for i = 1, #reqs do results[i] = { err = err } end
    return results
  end
  local raw = self.c:batch(reqs)
  for i = 1, #reqs do
    local r = raw[i]
    if type(r) == "string" then
      local res, derr = decode_response(r)
      results[i] = { res = res, err = derr }
    else
      results[i] = { err = r }
    end
  end
  return results
end

-- The offset (seconds, server minus local) adopted after a SignatureExpire.
function methods.skew(self) return self.c:skew() end

-- Sign as if the server's clock were `seconds` ahead of ours (negative:
-- behind), e.g. after moving a simulator's clock (eidkit.testing does).
function methods.set_skew(self, seconds)
  if math.type(seconds) ~= "integer" then
    error("bad argument #1 to 'set_skew' (expected integer seconds)", 2)
  end
  self.c:set_skew(seconds)
end

-- {requests = n, connects = n} since creation.
function methods.stats(self) return self.c:stats() end

function methods.close(self) self.c:close() end

-- A pull function for eidkit.ledger's sweep: pull(EidToken, record) ->
-- GetEidResult's Response | nil, err.
function methods.ledger_puller(self, info_type)
  info_type = info_type or "0"
  return function(tok)
    return methods.get_eid_result(self, { EidToken = tok, InfoType = info_type })
  end
end

mt.__tostring = function(self) return "eidkit.client (" .. tostring(self.c) .. ")" end
mt.__close = function(self) self.c:close() end

setmetatable(_M, { __call = function(_, opts) return _M.new(opts) end })

return _M
