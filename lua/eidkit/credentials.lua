-- eidkit.credentials: where the client's SecretId/SecretKey come from, on
-- the Lua 5.4 host (the eidkit program).
-- A provider is a table with :get() -> creds | nil, message, where creds is
-- { secret_id, secret_key, token, expiration, source } (expiration: Unix
-- seconds or nil). The client calls get() before each call and batch, and
-- hands new credentials to the C core only when the table changes.
--   env       TENCENTCLOUD_SECRET_ID, TENCENTCLOUD_SECRET_KEY, TENCENTCLOUD_SESSION_TOKEN
--   profile   TENCENTCLOUD_CREDENTIALS_FILE or ~/.tencentcloud/credentials, [default]
--   cvm_role  the CVM metadata service's role credentials, refreshed before
--             they expire, one refresh at a time
-- default() chains the three in that order. Secrets never appear in a
-- message, and creds print without them.
--
-- The rules (names, file format, metadata protocol, refresh, messages) are
-- eidkit.credentials.rules', shared with eidkit.openresty.credentials in
-- nginx; this file gives them this host's I/O: os.getenv, os.time and
-- eidkit.core's blocking http_get (this host's calls are blocking anyway).
local core = require "eidkit.core"
local cjson = require "cjson"
local rules = require "eidkit.credentials.rules"

local getenv = os.getenv

local _M = {}

_M.METADATA_URL = rules.METADATA_URL
_M.parse_ini = rules.parse_ini

-- static(secret_id, secret_key [, token])
_M.static = rules.static

-- env{getenv = os.getenv}: read at each get(), kept while unchanged.
function _M.env(opts)
  return rules.env(opts and opts.getenv or getenv)
end

-- profile{path =, profile = "default", getenv =}
function _M.profile(opts)
  opts = opts or {}
  return rules.profile(opts, opts.getenv or getenv)
end

-- Looked up at each call: specs replace core.http_get to make it fail.
local IO = {
  http_get = function(url, timeout, max) return core.http_get(url, timeout, max) end,
  decode = cjson.decode,
  clock = os.time,
}

-- cvm_role{url =, role =, timeout = 1, window = 300, clock = os.time}:
-- rules.cvm_role. A get() during its own refresh (a callback, a coroutine)
-- gets the current credentials, or an error if there are none yet.
function _M.cvm_role(opts)
  return rules.cvm_role(opts or {}, IO)
end

-- chain{p1, p2, ...}: the first provider that answers, remembered.
_M.chain = rules.chain

-- default{getenv =, metadata_url =, metadata_timeout =, clock =}: env, then
-- profile, then CVM role.
function _M.default(opts)
  return rules.default(_M, opts)
end

return _M
