-- bench/client's Lua side: eidkit.client against `eidkit sim`.
--   client_bench.lua seq   URL TOKEN N RUNS   client:get_eid_result, one at a time
--   client_bench.lua batch URL TOKEN N RUNS [MAX_IN_FLIGHT]
--                                             client:batch of N calls at once
-- Prints one calls/s figure per run; every answer must be a passing result.
local client_mod = require "eidkit.client"

local mode, url, token, n, runs = arg[1], arg[2], arg[3], tonumber(arg[4]), tonumber(arg[5])
local max_in_flight = tonumber(arg[6]) -- nil: the client's default
assert(mode and url and token and n and runs, "usage: client_bench.lua seq|batch URL TOKEN N RUNS")

local function now()
  local p = io.popen("date +%s.%N")
  local t = tonumber(p:read("l"))
  p:close()
  return t
end

local c = client_mod.new { endpoint = url, secret_id = "AKIDeidkitSimDemo00000000000000000000",
  secret_key = "eidkitSimDemoSecretKey000000000", max_in_flight = max_in_flight }
local params = { EidToken = token, InfoType = "1" }

local function check(res, err)
  if not res or res.Text.ErrCode ~= 0 then
    io.stderr:write("client_bench.lua: bad answer: ", tostring(err), "\n")
    os.exit(1)
  end
end

for _ = 1, runs do
  collectgarbage()
  local t0 = now()
  if mode == "seq" then
    for _ = 1, n do check(c:get_eid_result(params)) end
  else
    local list = {}
    for i = 1, n do list[i] = { "GetEidResult", params } end
    for _, r in ipairs(c:batch(list)) do check(r.res, r.err) end
  end
  io.write(string.format("%.0f\n", n / (now() - t0)))
  io.flush()
end
c:close()
