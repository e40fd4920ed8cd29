-- What a metric update costs on the gateway's request path: bound series
-- (metric:bind), as the gateway keeps them, through each method a request
-- makes (counter inc, gauge inc and dec, histogram observe).
--   eidkit run bench/metrics_bench.lua [RUNS] [N]
-- Prints the median over RUNS of ns per round of the four updates, and checks
-- the counts they left.
local metrics = require "eidkit.metrics"

local runs, n = tonumber(arg[1]) or 5, tonumber(arg[2]) or 1000000
local times = {}
for r = 1, runs do
  local reg = metrics.new()
  local cm = reg:counter("c_total", "c", { "route" })
  local hm = reg:histogram("h_seconds", "h", { "action" })
  local c, g, h = cm:bind({ route = "x" }), reg:gauge("g", "g"):bind(nil), hm:bind({ action = "a" })
  local t0 = os.clock()
  for _ = 1, n do
    c:inc()
    g:inc()
    g:dec()
    h:observe(0.2)
  end
  times[r] = (os.clock() - t0) / n * 1e9
  assert(cm:value({ route = "x" }) == n and hm:value({ action = "a" }) == n, "the updates were not all counted")
end
table.sort(times)
local all = {}
for i, t in ipairs(times) do all[i] = string.format("%.0f", t) end
print(string.format("bound inc+inc+dec+observe: median %.0f ns (runs, sorted: %s)", times[(runs + 1) // 2],
  table.concat(all, " ")))
