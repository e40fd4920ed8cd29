-- A merchant's policy for eidkit.flow (docs/TESTING.md uses it): override
-- only what differs from lua/eidkit/policy.lua's defaults. Plain Lua, no io
-- or os, so it also runs in eidkit.sandbox (spec/flow/policy_load_spec.lua):
--   local flow = eidkit.flow{ client = c, ledger = l, merchant_id = m, policy = require "policy" }
--   local flow = eidkit.flow{ ..., policy = "examples/policy.lua" }   -- sandboxed, hooks under limits
local eidpolicy = require "eidkit.policy"

local P = {}

-- The verdict needs Text only: no ID-card images or best frames (personal
-- data we would have to protect) and no intention results (not used here).
P.info_type = "1"

-- A user who failed on their side three times on one token is not sent round
-- again with a new token: the page offers the counter instead.
local MAX_USER_RETRIES = 3

function P.classify(_, outcome)
  if outcome.reason == "user_retry" and outcome.attempts >= MAX_USER_RETRIES then
    outcome.retry_with_new_token = false
    outcome.reason = "too_many_retries"
  end
  return outcome
end

-- Settled once per token. A merchant_config verdict (ErrCode 1-3, 203, 204)
-- means our integration is wrong and no user can pass: raising makes
-- flow:finish return err.code == "policy" (the outcome stays recorded) so
-- the caller's error path alerts someone.
function P.on_outcome(outcome)
  if outcome.reason == "merchant_config" then
    error("eID integration problem: ErrCode " .. tostring(outcome.code))
  end
end

-- Our mini-program is re-entered from eID with scene 1038 (the default
-- rule), and on some clients with 1037 ("opened from another
-- mini-program"); either way it is the return from eID, not a new visit.
function P.on_show(options)
  if eidpolicy.is_eid_return(options) then return true end
  local ref = type(options) == "table" and options.referrerInfo
  return type(ref) == "table" and ref.appId == eidpolicy.EID_APPID
    and tonumber(options.scene) == 1037
end

return P
