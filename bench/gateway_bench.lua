-- What eidkit.gateway's Lua costs a request, in process: gw:handle for
-- POST /eid/result on pending tokens, the flow and the ledger as `eidkit serve`
-- builds them, but the upstream answered from memory (a GetEidResult answer
-- `eidkit sim` gave once) and the ledger SQLite in memory, so that what is
-- timed is the request path's own work, without the sockets, threads and
-- other processes whose noise hides a few per cent in bench/serve.
--   eidkit run bench/gateway_bench.lua [RUNS] [N]
-- Cases: as eidkit serve runs it (sandboxed policy, access log, metrics fed
-- an upstream attempt event a call); without the access log; with the policy
-- as plain Lua instead of sandboxed. Prints each case's median µs a request
-- over RUNS runs of N requests (after a warm-up), and every run.
local eidkit = require "eidkit"
local testing = require "eidkit.testing"
local core = require "eidkit.core"
local cjson = require "cjson"

local runs, n = tonumber(arg[1]) or 5, tonumber(arg[2]) or 40000
local TOKENS = 2000
local root = (debug.getinfo(1, "S").source:match("^@(.*)/bench/[^/]*$") or ".")
local policy_path = root .. "/bench/serve/policy.lua"

-- One real answer of each action, from the simulator.
local sim = testing.sim { seed = 1 }
local answers = {}
local recorder = eidkit.client.new { endpoint = sim.url, secret_id = sim.secret_id, secret_key = sim.secret_key,
  await = function(c, action, body)
    local text, attempts = c:call(action, body)
    answers[action] = answers[action] or text
    return text, attempts
  end }
local tok0 = assert(recorder:get_eid_token { MerchantId = sim.merchant_id }).EidToken
assert(recorder:get_eid_result { EidToken = tok0 })
sim:stop()

-- An upstream that answers from memory; each GetEidToken a token of its own.
local issued = 0
local function await(_, action)
  if action == "GetEidToken" then
    issued = issued + 1
    return (answers.GetEidToken:gsub('"EidToken":"([^"]+)"', function(t)
      return ('"EidToken":"%s%08X"'):format(t:sub(1, -9), issued)
    end)), 1
  end
  return answers[action], 1
end

local function build(case)
  local gateway = require "eidkit.gateway"
  local settings = require "eidkit.gateway.settings"
  local registry = require("eidkit.metrics").new()
  local logger = gateway.client_logger(registry)
  local client = eidkit.client.new { endpoint = sim.url, secret_id = sim.secret_id, secret_key = sim.secret_key,
    logger = logger, await = function(c, action, body)
      -- the transport's one event a call, as eidkit serve's loop delivers it
      logger("info", { event = "attempt", action = action, trace_id = "t", attempts = 1, duration = 0.2,
        http_status = 200, request_id = "r", skew = 0 })
      return await(c, action, body)
    end }
  local ledger = assert(eidkit.ledger.open("sqlite::memory:"))
  local policy = case.plain and dofile(policy_path) or assert(eidkit.policy.load(policy_path))
  local flow = eidkit.flow.new { client = client, ledger = ledger, merchant_id = sim.merchant_id, policy = policy }
  local lines = 0
  -- No buckets: eidkit serve's benchmark lifts them too (bench/serve/run).
  local upstream_limits, uerr = settings.upstream_rate("off", "upstream_rate")
  local token_limit, terr = settings.token_limit("off", "token_limit")
  assert(not uerr and not terr, uerr or terr)
  local gw = gateway.new { flow = flow, metrics = registry, upstream_limits = upstream_limits, token_limit = token_limit,
    access_log = not case.no_log and function() lines = lines + 1 end or nil }
  local toks = {}
  for i = 1, TOKENS do
    local r = gw:handle { method = "POST", path = "/eid/token", headers = { ["x-eidkit-demo-user"] = "u" .. i },
      body = "{}", remote_addr = "127.0.0.1:1" }
    assert(r.status == 200, r.body)
    toks[i] = cjson.decode(r.body).EidToken
  end
  local bodies = {}
  for i = 1, TOKENS do bodies[i] = '{"EidToken":"' .. toks[i] .. '"}' end
  return function(i)
    local k = i % TOKENS + 1
    local r = gw:handle { method = "POST", path = "/eid/result",
      headers = { ["x-eidkit-demo-user"] = "u" .. k, ["content-type"] = "application/json" },
      body = bodies[k], remote_addr = "127.0.0.1:40000" }
    if r.status ~= 200 or not r.body:find('"pending"', 1, true) then error("unexpected answer: " .. r.body) end
  end, function() return lines end
end

local cases = {
  { name = "as eidkit serve runs it (sandboxed policy, access log, metrics)" },
  { name = "without the access log", no_log = true },
  { name = "policy as plain Lua, not sandboxed", plain = true },
}
local results = {}
for _, case in ipairs(cases) do results[case] = {} end
for _ = 1, runs do
  for _, case in ipairs(cases) do
    local one, logged = build(case)
    for i = 1, 5000 do one(i) end -- warm-up
    collectgarbage()
    local t0 = core.monotonic()
    for i = 1, n do one(i) end
    local t = core.monotonic() - t0
    local r = results[case]
    r[#r + 1] = t / n * 1e6
    assert(case.no_log or logged() >= n, "the access log missed lines")
  end
end
for _, case in ipairs(cases) do
  local r = results[case]
  local sorted = {}
  for i, v in ipairs(r) do sorted[i] = v end
  table.sort(sorted)
  local each = {}
  for i, v in ipairs(r) do each[i] = ("%.1f"):format(v) end
  print(("%-66s median %5.1f us/request  (runs: %s)"):format(case.name, sorted[(#sorted + 1) // 2],
    table.concat(each, " ")))
end
