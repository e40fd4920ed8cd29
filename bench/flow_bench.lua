-- bench/flow's Lua side: what eidkit.flow and a sandboxed policy cost.
--   flow_bench.lua RUNS N
-- (1) one policy hook call with a real GetEidResult Response: plain Lua vs
--     run in eidkit.sandbox (box:wrap copies the Response in and the outcome
--     out, and arms the limits); (2) settling N passed tokens one at a time
--     against `eidkit sim` on SQLite: the raw sequence a merchant would write
--     (claim, get_eid_result, record, consume) vs flow:finish with the
--     default policy vs flow:finish with a sandboxed policy script.
-- Prints "case median runs..." lines; every outcome is checked.
local eidkit = require "eidkit"
local testing = require "eidkit.testing"
local core = require "eidkit.core"

local runs, n = tonumber(arg[1]) or 5, tonumber(arg[2]) or 300
local now = core.monotonic

local function median(t)
  local c = {}
  for i, v in ipairs(t) do c[i] = v end
  table.sort(c)
  return c[(#c + 1) // 2]
end

local results, order = {}, {}
local function record(name, v)
  if not results[name] then results[name] = {}; order[#order + 1] = name end
  local r = results[name]
  r[#r + 1] = v
end

local dir = os.tmpname()
os.remove(dir)
assert(os.execute("mkdir -p " .. dir))
local policy_path = dir .. "/policy.lua"
local f = assert(io.open(policy_path, "w"))
f:write([[
local P = { info_type = "1" }
function P.classify(result, outcome)
  if outcome.reason == "user_retry" and outcome.attempts >= 3 then outcome.retry_with_new_token = false end
  if result.Text and result.Text.Extra == "vip" then outcome.vip = true end
  return outcome
end
return P
]])
f:close()

local sim = testing.sim { seed = 1 }
local client = sim:client()

-- (1) hook calls
do
  local tok = assert(client:get_eid_token { MerchantId = sim.merchant_id }).EidToken
  assert(sim:pass(tok))
  local res = assert(client:get_eid_result { EidToken = tok, InfoType = "1" })
  local plain = dofile(policy_path)
  local sandboxed = assert(eidkit.policy.load(policy_path))
  local default = eidkit.policy.default_outcome(res)
  local reps = 20000
  for _ = 1, runs do
    for _, case in ipairs { { "hook: plain classify (us/call)", plain.classify },
      { "hook: sandboxed classify (us/call)", sandboxed.classify } } do
      local fn = case[2]
      local t0 = now()
      for _ = 1, reps do
        local o = fn(res, { status = default.status, reason = default.reason, attempts = 1 })
        if o.status ~= "passed" then error("bad outcome") end
      end
      record(case[1], (now() - t0) / reps * 1e6)
    end
  end
end

-- (2) settling tokens
local function prepared(flow, count)
  local toks = {}
  for i = 1, count do
    local st = assert(flow:start { subject = "u" .. i })
    assert(sim:pass(st.EidToken))
    toks[i] = st.EidToken
  end
  return toks
end

for _ = 1, runs do
  -- raw: what a merchant writes without eidkit.flow
  do
    local ledger = sim:ledger()
    local flow = sim:flow { ledger = ledger, client = client }
    local toks = prepared(flow, n)
    local t0 = now()
    for i, tok in ipairs(toks) do
      assert(ledger:claim(tok, "u" .. i))
      local res = assert(client:get_eid_result { EidToken = tok, InfoType = "1" })
      assert(ledger:record(tok, res))
      assert(ledger:consume(tok, "u" .. i))
    end
    record("settle: raw claim+pull+record+consume (tokens/s)", n / (now() - t0))
  end
  for _, case in ipairs { { "settle: flow:finish, default policy (tokens/s)", nil },
    { "settle: flow:finish, sandboxed policy (tokens/s)", policy_path } } do
    local ledger = sim:ledger()
    local flow = sim:flow { ledger = ledger, client = client, policy = case[2] }
    local toks = prepared(flow, n)
    local t0 = now()
    for i, tok in ipairs(toks) do
      local o = assert(flow:finish { subject = "u" .. i, EidToken = tok })
      if o.status ~= "passed" then error("bad outcome") end
    end
    record(case[1], n / (now() - t0))
  end
end

sim:stop()
os.execute("rm -rf " .. dir)
for _, name in ipairs(order) do
  local r = results[name]
  local cells = {}
  for i, v in ipairs(r) do cells[i] = string.format("%.2f", v) end
  print(string.format("%s\t%.2f\t%s", name, median(r), table.concat(cells, " ")))
end
