-- Drive an in-process simulator (eidkit.sim) the way a client would: sign a
-- request with eidkit's signer, hand it to sim:handle, decode the envelope.
local core = require "eidkit.core"
local cjson = require "cjson"
local sim_mod = require "eidkit.sim"

local _M = {}

_M.HOST = "127.0.0.1:8790"

-- Headers as the HTTP server hands them to the simulator (lower-case names).
local function lower_keys(t)
  local out = {}
  for k, v in pairs(t) do out[k:lower()] = v end
  return out
end
_M.lower_keys = lower_keys

-- opts: secret_id, secret_key, token, timestamp, host, sign_host, service,
-- version, signed_headers, body (raw), headers (overrides, nil values
-- delete), method.
function _M.request(sim, action, params, opts)
  opts = opts or {}
  local body = opts.body or cjson.encode(params or {})
  local signed = core.sign {
    secret_id = opts.secret_id or sim_mod.demo.SecretId,
    secret_key = opts.secret_key or sim_mod.demo.SecretKey,
    token = opts.token,
    host = opts.sign_host or opts.host or _M.HOST,
    service = opts.service or "faceid",
    action = action,
    version = opts.version or "2018-03-01",
    timestamp = opts.timestamp or sim:now(),
    body = opts.sign_body or body,
    signed_headers = opts.signed_headers,
  }
  local headers = lower_keys(signed)
  headers.host = opts.host or _M.HOST
  for k, v in pairs(opts.headers or {}) do headers[k:lower()] = v or nil end
  for _, k in ipairs(opts.drop or {}) do headers[k] = nil end
  return { method = opts.method or "POST", path = "/", query = "", args = {}, headers = headers,
    body = body }
end

-- Returns Response (decoded), the raw resp.
function _M.call(sim, action, params, opts)
  local resp = sim:handle(_M.request(sim, action, params, opts))
  local ok, decoded = pcall(cjson.decode, resp.body)
  return ok and type(decoded) == "table" and decoded.Response or nil, resp
end

-- The error code of a call, or nil when it succeeded.
function _M.code(sim, action, params, opts)
  local r = _M.call(sim, action, params, opts)
  return r and r.Error and r.Error.Code or nil, r
end

-- Control API, JSON in and out: status, decoded body.
function _M.control(sim, method, path, body, args)
  local resp = sim:handle { method = method, path = path, query = "", args = args or {},
    headers = {}, body = body and cjson.encode(body) or "" }
  local ok, decoded = pcall(cjson.decode, resp.body)
  return resp.status, ok and decoded or resp.body, resp
end

-- A new token for the demo merchant; returns its id.
function _M.new_token(sim, extra)
  local p = { MerchantId = sim_mod.demo.MerchantId }
  for k, v in pairs(extra or {}) do p[k] = v end
  local r = assert(_M.call(sim, "GetEidToken", p))
  assert(r.EidToken, r.Error and r.Error.Code)
  return r.EidToken
end

function _M.finish(sim, tok, code, intention)
  return _M.control(sim, "POST", "/sim/tokens/" .. tok .. "/finish",
    { ErrCode = code, IntentionErrCode = intention })
end

return _M
