-- The property fuzz_sim.c checks on every input: see that file.
local root = EIDKIT_ROOT -- luacheck: ignore (set by the harness)
package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path
package.cpath = root .. "/build/lua/?.so;" .. package.cpath
local cjson = require "cjson"
local eidkit = require "eidkit"
local sim_mod = require "eidkit.sim"

local sim = sim_mod.new { seed = 1, max_tokens = 1000 }
local demo = sim_mod.demo
local ACTIONS = { "GetEidToken", "GetEidResult", "CheckEidTokenStatus", "GetEidTokenX", "" }
local CONTROL = { "/sim/health", "/sim/tokens", "/sim/faults", "/sim/clock", "/sim/reset" }
-- A token the simulator knows, so that result calls reach past the lookup.
local known
do
  local body = cjson.encode { MerchantId = demo.MerchantId }
  local h = eidkit.sign { secret_id = demo.SecretId, secret_key = demo.SecretKey, action = "GetEidToken",
    body = body }
  local headers = {}
  for k, v in pairs(h) do headers[k:lower()] = v end
  local r = sim:handle { method = "POST", path = "/", headers = headers, body = body }
  known = cjson.decode(r.body).Response.EidToken
end

return function(bytes)
  local pick = bytes:byte(1) or 0
  local body = bytes:sub(2):gsub("KNOWN", known or "")
  local req
  if pick < 200 then
    local action = ACTIONS[pick % #ACTIONS + 1]
    local h = eidkit.sign { secret_id = demo.SecretId, secret_key = demo.SecretKey,
      action = action ~= "" and action or "GetEidResult", body = body }
    local headers = {}
    for k, v in pairs(h) do headers[k:lower()] = v end
    if action == "" then headers["x-tc-action"] = nil end
    req = { method = "POST", path = "/", headers = headers, body = body }
  else
    local path = CONTROL[pick % #CONTROL + 1]
    if pick % 3 == 0 then path = path .. "/" .. known .. "/finish" end
    req = { method = ({ "GET", "POST", "PUT", "DELETE" })[pick % 4 + 1], path = path, headers = {}, body = body }
  end
  local resp = sim:handle(req)
  assert(type(resp) == "table" and resp.status ~= 500, "internal error: " .. tostring(resp and resp.body))
  local ok, v = pcall(cjson.decode, resp.body or "")
  if req.path == "/" then
    assert(resp.status == 200, "API answered " .. tostring(resp.status))
    assert(ok and type(v) == "table" and type(v.Response) == "table" and type(v.Response.RequestId) == "string",
      "not a Response: " .. tostring(resp.body))
  elseif not (resp.status == 404 or resp.status == 405) then
    assert(ok and type(v) == "table", "control answered non-JSON: " .. tostring(resp.body))
  end
end
