-- eidkit: merchant-side toolkit for Tencent Cloud FaceID E证通 (eID).
-- The facade: everything a merchant needs is reachable from require "eidkit".
local core = require "eidkit.core"

local _M = {
  _VERSION = core.version(),
  core = core,
}

-- Signing is the hot path: hand out the C functions themselves, no wrapper.
-- eidkit.sign{...} -> headers | nil, err; misuse raises naming the field.
_M.sign = core.sign
_M.sign_explain = core.sign_explain
-- eidkit.signer{cache_slots = n} -> an eidkit.Signer with its own key cache.
_M.signer = core.signer
_M.utc_date = core.utc_date
-- eidkit.ledger.open("sqlite:./eidkit.db" | "redis://host:port/db"): the
-- EidToken lifecycle store (docs/internals/ledger.md).
_M.ledger = require "eidkit.ledger"
-- eidkit.client{...}: the FaceID API client (docs/internals/client.md);
-- eidkit.credentials: its providers (static, env, profile, cvm_role, chain).
_M.client = require "eidkit.client"
_M.credentials = require "eidkit.credentials"
-- eidkit.crypto: decrypt_eidinfo, keys, field encryption (docs/internals/crypto.md).
_M.crypto = require "eidkit.crypto"
-- eidkit.flow{client, ledger, merchant_id, policy}: start, finish, sweep,
-- poll_h5 (docs/internals/flow.md); eidkit.policy: the hooks' defaults, the
-- classification, the onShow rule (is_eid_return), load(path) of a policy
-- script into eidkit.sandbox (docs/internals/sandbox.md).
_M.flow = require "eidkit.flow"
_M.policy = require "eidkit.policy"
_M.sandbox = require "eidkit.sandbox"
-- eidkit.gateway{flow = flow, ...}: the merchant backend's routes as
-- gw:handle(req) -> resp, for a host to mount (docs/internals/gateway.md);
-- eidkit.metrics (its Prometheus registry) and eidkit.limiter (token buckets).
_M.gateway = require "eidkit.gateway"
_M.metrics = require "eidkit.metrics"
_M.limiter = require "eidkit.limiter"
-- eidkit.testing (the merchants' busted kit) is not loaded here: it starts
-- processes, and production code should never pull it in.

return _M
