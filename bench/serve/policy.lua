-- The policy bench/serve/run gives `eidkit serve`: the subject is the
-- X-Eidkit-Demo-User header, as `eidkit serve --sim` takes it when no policy
-- is given, and as bench/serve/peer.js takes it. The benchmark needs that
-- with a simulator of its own (--endpoint), where --sim would start another.
-- For benchmarks and demos only: with it any caller claims any subject.
-- Everything else is lua/eidkit/policy.lua's default (InfoType "156", ...).
local P = {}

function P.authorize(request)
  local user = request.headers["x-eidkit-demo-user"]
  if type(user) == "string" and user ~= "" then return user end
  return false, "no X-Eidkit-Demo-User header"
end

return P
