-- eidkit: merchant-side toolkit for Tencent Cloud FaceID E证通 (eID).
-- The facade: everything a merchant needs is reachable from require "eidkit".
--
-- Both hosts load this file: the eidkit program / lua5.4 (everything below,
-- through the C module eidkit.core) and LuaJIT / OpenResty (eidkit.host
-- chooses; docs/OPENRESTY.md). Under LuaJIT the parts built on eidkit.core
-- alone (sign_explain, utc_date, ledger, client, credentials, crypto,
-- sandbox) are not loaded: reading one raises an error naming it and the
-- Lua 5.4 host. Signing there is eidkit.ffi's, the API client
-- eidkit.openresty.client's; in an nginx worker, eidkit.credentials is
-- eidkit.openresty.credentials (the same chain over nginx's I/O).
local host = require "eidkit.host"

local setmetatable, rawget, rawset = setmetatable, rawget, rawset

local _M = {
  _VERSION = host.version(),
}

-- eidkit.flow{client, ledger, merchant_id, policy}: start, finish, sweep,
-- poll_h5 (docs/internals/flow.md); eidkit.policy: the hooks' defaults, the
-- classification, the onShow rule (is_eid_return), load(path) of a policy
-- script (into eidkit.sandbox on Lua 5.4, docs/internals/sandbox.md; as
-- trusted code under LuaJIT, docs/OPENRESTY.md).
_M.flow = require "eidkit.flow"
_M.policy = require "eidkit.policy"
-- eidkit.gateway{flow = flow, ...}: the merchant backend's routes as
-- gw:handle(req) -> resp, for a host to mount (docs/internals/gateway.md);
-- eidkit.metrics (its Prometheus registry) and eidkit.limiter (token buckets).
_M.gateway = require "eidkit.gateway"
_M.metrics = require "eidkit.metrics"
_M.limiter = require "eidkit.limiter"
-- eidkit.testing (the merchants' busted kit) is not loaded here: it starts
-- processes, and production code should never pull it in.

if host.name ~= "lua54" then
  local eidffi = require "eidkit.ffi"
  -- eidkit.sign{...} -> headers | nil, err; misuse raises naming the field;
  -- eidkit.signer{cache_slots = n, clock = fn}: the C signer through the FFI.
  _M.sign, _M.signer = eidffi.sign, eidffi.signer
  local LUA54 = { sign_explain = true, utc_date = true, core = true, ledger = true, client = true,
    credentials = true, crypto = true, sandbox = true }
  return setmetatable(_M, { __index = function(_, k)
    -- eidkit.credentials in an nginx worker: the same chain with nginx's
    -- I/O (eidkit.openresty.credentials), loaded when first read.
    if k == "credentials" and host.name == "nginx" then
      local c = require "eidkit.openresty.credentials"
      rawset(_M, k, c)
      return c
    end
    if LUA54[k] then host.lua54("eidkit." .. k) end
    return rawget(_M, k)
  end })
end

local core = host.lua54()
_M.core = core
-- Signing is the hot path: hand out the C functions themselves, no wrapper.
-- eidkit.sign{...} -> headers | nil, err; misuse raises naming the field.
_M.sign = core.sign
_M.sign_explain = core.sign_explain
-- eidkit.signer{cache_slots = n} -> an eidkit.Signer with its own key cache.
_M.signer = core.signer
_M.utc_date = core.utc_date
-- eidkit.ledger.open("sqlite:./eidkit.db" | "redis://[[user]:password@]host:port/db"): the
-- EidToken lifecycle store (docs/internals/ledger.md).
_M.ledger = require "eidkit.ledger"
-- eidkit.client{...}: the FaceID API client (docs/internals/client.md);
-- eidkit.credentials: its providers (static, env, profile, cvm_role, chain).
_M.client = require "eidkit.client"
_M.credentials = require "eidkit.credentials"
-- eidkit.crypto: decrypt_eidinfo, keys, field encryption (docs/internals/crypto.md).
_M.crypto = require "eidkit.crypto"
-- eidkit.sandbox: limits for policy scripts (docs/internals/sandbox.md).
_M.sandbox = require "eidkit.sandbox"

return _M
