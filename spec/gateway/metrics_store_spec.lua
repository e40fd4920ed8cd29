-- eidkit.metrics with a store (new{store = s}): registries in several Lua
-- states sharing one store render the sums, through the same renderer as a
-- registry of its own. The store here is a plain table with the interface's
-- five methods (as eidkit.openresty.metrics_store gives over an nginx shared
-- dict; spec/openresty/gateway_spec.lua checks that one in real nginx
-- workers).
local metrics = require "eidkit.metrics"
local promtext = require "support.promtext"

local function table_store()
  local values, series, counts = {}, {}, {}
  local s = { values = values }
  function s.claim(_, name, key, max)
    series[name] = series[name] or {}
    if series[name][key] then return true end
    counts[name] = (counts[name] or 0) + 1
    if counts[name] > max then
      counts[name] = counts[name] - 1
      return false
    end
    series[name][key] = true
    return true
  end
  function s.add(_, id, n) values[id] = (values[id] or 0) + n end
  function s.set(_, id, v) values[id] = v end
  function s.get(_, id) return values[id] end
  function s.series(_, name)
    local out = {}
    for k in pairs(series[name] or {}) do out[#out + 1] = k end
    return out
  end
  return s
end

-- Two "workers": the same declarations against one store.
local function two(store, max_series)
  local regs = {}
  for i = 1, 2 do
    local reg = metrics.new { store = store, max_series = max_series }
    regs[i] = { reg = reg, c = reg:counter("req_total", "Requests.", { "route", "status" }),
      g = reg:gauge("in_flight", "Now."), h = reg:histogram("lat_seconds", "Latency.", { "action" },
        { buckets = { 0.1, 1 } }) }
  end
  return regs
end

describe("eidkit.metrics with a store", function()
  it("refuses a store without the interface, naming what is missing", function()
    assert.has_error(function() metrics.new { store = { claim = print } } end,
      "bad option 'store' (expected an object with add)")
  end)

  it("sums what every registry on the store counts, and each renders the sums", function()
    local w = two(table_store())
    w[1].c:inc({ route = "/eid/token", status = 200 })
    w[2].c:inc({ route = "/eid/token", status = 200 }, 2)
    w[2].c:inc({ route = "/eid/result", status = 404 })
    w[1].g:inc()
    w[2].g:inc()
    w[1].g:dec()
    w[1].h:observe({ action = "GetEidResult" }, 0.05)
    w[2].h:observe({ action = "GetEidResult" }, 0.5)
    for i = 1, 2 do
      local text = w[i].reg:render()
      local f = promtext.parse(text)
      assert.equals(3, promtext.value(f, "req_total", { route = "/eid/token", status = "200" }))
      assert.equals(1, promtext.value(f, "req_total", { route = "/eid/result", status = "404" }))
      assert.equals(1, promtext.value(f, "in_flight"))
      assert.matches(table.concat({
        'lat_seconds_bucket{action="GetEidResult",le="0.1"} 1',
        'lat_seconds_bucket{action="GetEidResult",le="1"} 2',
        'lat_seconds_bucket{action="GetEidResult",le="+Inf"} 2',
        'lat_seconds_sum{action="GetEidResult"} 0.55',
        'lat_seconds_count{action="GetEidResult"} 2', "" }, "\n"), text, 1, true)
      assert.equals(3, w[i].c:value({ route = "/eid/token", status = 200 }))
      assert.same({ 2, 0.55 }, { w[i].h:value({ action = "GetEidResult" }) })
    end
  end)

  it("counts through bound series (metric:bind) into the same sums", function()
    local w = two(table_store())
    local b1 = w[1].c:bind({ route = "/eid/token", status = 200 })
    local b2 = w[2].c:bind({ route = "/eid/token", status = 200 })
    b1:inc()
    b2:inc(2)
    w[1].c:inc({ route = "/eid/token", status = 200 })
    local g1, g2 = w[1].g:bind(nil), w[2].g:bind(nil)
    g1:inc()
    g2:inc(3)
    g1:dec()
    w[1].h:bind({ action = "GetEidResult" }):observe(0.05)
    w[2].h:bind({ action = "GetEidResult" }):observe(0.5)
    for i = 1, 2 do
      local f = promtext.parse(w[i].reg:render())
      assert.equals(4, promtext.value(f, "req_total", { route = "/eid/token", status = "200" }))
      assert.equals(3, promtext.value(f, "in_flight"))
      assert.same({ 2, 0.55 }, { w[i].h:value({ action = "GetEidResult" }) })
    end
  end)

  it("stores one bucket per sample and renders the cumulative counts", function()
    local store = table_store()
    local w = two(store)
    for _, v in ipairs { 0.1, 0.05, 0.5, 5, 1 } do w[1].h:observe({ action = "A" }, v) end
    -- Each sample added to one bucket's count (a bound belongs to its own
    -- bucket; past the last, only the count and sum), not to every bucket
    -- at or above it.
    local adds = 0
    for id, v in pairs(store.values) do
      if type(id) == "string" and id:find("\1k%d+$") then adds = adds + v end
    end
    assert.equals(4, adds)
    local text = w[2].reg:render()
    assert.matches(table.concat({
      'lat_seconds_bucket{action="A",le="0.1"} 2',
      'lat_seconds_bucket{action="A",le="1"} 4',
      'lat_seconds_bucket{action="A",le="+Inf"} 5',
      'lat_seconds_sum{action="A"} 6.65',
      'lat_seconds_count{action="A"} 5', "" }, "\n"), text, 1, true)
  end)

  it("keeps max_series over all registries together, and counts what it drops", function()
    local w = two(table_store(), 3)
    w[1].c:inc({ route = "a", status = 1 })
    w[2].c:inc({ route = "b", status = 1 })
    w[1].c:inc({ route = "c", status = 1 })
    w[2].c:inc({ route = "d", status = 1 }) -- the fourth: dropped
    w[1].c:inc({ route = "a", status = 1 }) -- an existing one still counts
    local f = promtext.parse(w[2].reg:render())
    assert.equals(3, #f.req_total.samples)
    assert.equals(2, promtext.value(f, "req_total", { route = "a", status = "1" }))
    assert.equals(1, promtext.value(f, "eidkit_metrics_series_dropped_total"))
    -- A bound series past the limit: binding counts nothing, each sample once.
    local late = w[1].c:bind({ route = "e", status = 1 })
    late:inc()
    late:inc()
    f = promtext.parse(w[1].reg:render())
    assert.equals(3, promtext.value(f, "eidkit_metrics_series_dropped_total"))
    assert.equals(3, #f.req_total.samples)
  end)
end)
