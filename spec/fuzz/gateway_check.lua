-- The property fuzz_gateway.c checks on every input: see that file. Raises
-- when it does not hold (the harness aborts on a raise).
local root = EIDKIT_ROOT -- luacheck: ignore (set by the harness)
package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path
package.cpath = root .. "/build/lua/?.so;" .. package.cpath
local cjson = require "cjson"
local gateway = require "eidkit.gateway"

-- A stand-in flow: the gateway's own checks run in front of it.
local flow = {
  authorize = function(_, view)
    local user = view.headers["x-user"]
    if type(user) == "string" and user ~= "" then return user end
    return nil, { code = "unauthorized", message = "no user" }
  end,
  start = function() return { EidToken = "0123456789ABCDEF0123456789ABCDEF", Url = "https://x/y", expires_at = 1 } end,
  finish = function(_, p)
    if p.EidToken == "unknown" then return nil, { code = "unknown_token", message = "no such token" } end
    return { status = "pending", code = nil, reason = "no_result", retry_with_new_token = false }
  end,
  sweep = function() return 0, { failures = {} } end,
  log_failures = function() return 0 end,
  ledger = { stats = function() return { total = 0 } end },
  client = { skew = function() return 0 end },
}
local gw = gateway.new { flow = flow, token_fields = { "Name", "IdCard", "Extra", "RedirectUrl", "Config" },
  h5_return_url = "https://merchant.example/done", access_log = function() end,
  on_error = function() end }

local STATUSES = { [200] = true, [303] = true, [400] = true, [401] = true, [403] = true, [404] = true,
  [405] = true, [413] = true, [429] = true, [500] = true, [502] = true, [503] = true, [504] = true }

return function(bytes)
  local head, body = bytes:match("^(.-)\n\n(.*)$")
  head = head or bytes
  body = body or ""
  local first, rest = head:match("^([^\n]*)\n?(.*)$")
  local method, path = first:match("^(%S*) ?(.*)$")
  local headers = {}
  for line in rest:gmatch("[^\n]+") do
    local k, v = line:match("^([^:]*):%s*(.*)$")
    if k then headers[k] = v end
  end
  local ok, resp = pcall(gw.handle, gw, { method = method, path = path, query = nil, headers = headers,
    body = body, remote_addr = "127.0.0.1:1" })
  assert(ok, "handle raised: " .. tostring(resp))
  assert(type(resp) == "table" and STATUSES[resp.status], "status " .. tostring(resp and resp.status))
  -- every answer but a redirect and the Prometheus text is a JSON object
  if resp.status ~= 303 and not (resp.status == 200 and path:match("^/metrics")) then
    local dok, v = pcall(cjson.decode, resp.body or "")
    assert(dok and type(v) == "table", "not a JSON object: " .. tostring(resp.body))
  end
  if #body >= 12 and not body:find("^[%w%s{}\":,]*$") then
    assert(not (resp.body or ""):find(body, 1, true), "the body was echoed")
  end
end
