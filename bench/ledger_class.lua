-- What the eidkit.ledger class costs over calling its C object directly
-- (docs/internals/classes.md): ledger:get, ledger:claim and ledger:backend
-- (no I/O: the dispatch alone) on sqlite::memory:, each case timed in turn,
-- RUNS rounds of N calls, the median ns per call printed.
--   LUA_PATH=lua/?.lua\;lua/?/init.lua\;\; LUA_CPATH=build/lua/?.so\;\; \
--     lua5.4 bench/ledger_class.lua [RUNS] [N]
local ledger_mod = require "eidkit.ledger"
local core = require "eidkit.core"

local runs, n = tonumber(arg and arg[1]) or 15, tonumber(arg and arg[2]) or 100000
local now = core.monotonic

local ledger = assert(ledger_mod.open("sqlite::memory:"))
assert(ledger:issue { EidToken = "T-1", MerchantId = "0NSJ2023", subject = "user-42" })
local c = ledger.c

local cases = {
  { "get, C object", function() for _ = 1, n do c:get("T-1") end end },
  { "get, class", function() for _ = 1, n do ledger:get("T-1") end end },
  { "claim, C object", function() for _ = 1, n do c:claim("T-1", "user-42") end end },
  { "claim, class", function() for _ = 1, n do ledger:claim("T-1", "user-42") end end },
  { "backend, C object", function() for _ = 1, n do c:backend() end end },
  { "backend, class", function() for _ = 1, n do ledger:backend() end end },
}

local times = {}
for _ = 1, runs do
  for i, case in ipairs(cases) do
    local t0 = now()
    case[2]()
    local t = times[i] or {}
    t[#t + 1] = (now() - t0) / n * 1e9
    times[i] = t
  end
end
for i, case in ipairs(cases) do
  table.sort(times[i])
  print(string.format("%-20s %7.0f ns/call", case[1], times[i][(#times[i] + 1) // 2]))
end
ledger:close()
