-- eidkit.metrics: the registry and its Prometheus text (format 0.0.4),
-- read back with a strict checker (spec/support/promtext.lua).
local metrics = require "eidkit.metrics"
local promtext = require "support.promtext"

describe("eidkit.metrics", function()
  describe("new", function()
    it("raises on misuse, naming the option", function()
      assert.has_error(function() metrics.new(5) end, "bad argument #1 to 'new' (expected a table of options)")
      assert.has_error(function() metrics.new { max_serie = 1 } end, "bad option 'max_serie' (unknown option)")
      assert.has_error(function() metrics.new { max_series = 0 } end,
        "bad option 'max_series' (expected a positive integer)")
      assert.has_error(function() metrics.new { max_series = 1.5 } end,
        "bad option 'max_series' (expected a positive integer)")
    end)
  end)

  describe("counter, gauge, histogram", function()
    it("raise on bad names, labels and buckets", function()
      local reg = metrics.new()
      assert.has_error(function() reg:counter("1abc", "h") end,
        "bad argument #1 to 'counter' (expected a metric name [a-zA-Z_:][a-zA-Z0-9_:]*)")
      assert.has_error(function() reg:counter("a-b", "h") end,
        "bad argument #1 to 'counter' (expected a metric name [a-zA-Z_:][a-zA-Z0-9_:]*)")
      assert.has_error(function() reg:gauge("g", 5) end, "bad argument #2 to 'gauge' (help: expected string)")
      assert.has_error(function() reg:gauge("g", "h", { "a", "a" }) end,
        "bad argument #3 to 'gauge' (label 2: expected a distinct name [a-zA-Z_][a-zA-Z0-9_]* not starting with __)")
      assert.has_error(function() reg:gauge("g", "h", { "__x" }) end,
        "bad argument #3 to 'gauge' (label 1: expected a distinct name [a-zA-Z_][a-zA-Z0-9_]* not starting with __)")
      assert.has_error(function() reg:histogram("h", "h", { "le" }) end,
        "bad argument #3 to 'histogram' (label 1: expected a distinct name [a-zA-Z_][a-zA-Z0-9_]* not starting with __, not le)")
      assert.has_error(function() reg:histogram("h", "h", nil, { buckets = { 1, 1 } }) end,
        "bad argument #4 to 'histogram' (buckets: expected increasing finite numbers)")
      assert.has_error(function() reg:histogram("h", "h", nil, { buckets = { 1, math.huge } }) end,
        "bad argument #4 to 'histogram' (buckets: expected increasing finite numbers)")
      assert.has_error(function() reg:counter("eidkit_metrics_series_dropped_total", "h") end,
        "bad argument #1 to 'counter' (eidkit_metrics_series_dropped_total is the registry's own)")
    end)

    it("return the same metric when declared again alike, and raise when not", function()
      local reg = metrics.new()
      local c = reg:counter("c_total", "h", { "a" })
      assert.equals(c, reg:counter("c_total", "other help", { "a" }))
      assert.equals(c, reg:get("c_total"))
      assert.has_error(function() reg:gauge("c_total", "h", { "a" }) end,
        "bad argument #1 to 'gauge' (c_total is already a counter with other labels)")
      assert.has_error(function() reg:counter("c_total", "h", { "b" }) end,
        "bad argument #1 to 'counter' (c_total is already a counter with other labels)")
    end)

    it("check labels and values", function()
      local reg = metrics.new()
      local c = reg:counter("c_total", "h", { "a", "b" })
      assert.has_error(function() c:inc({ a = "x" }) end, "bad argument #1 to 'inc' (label 'b' missing)")
      assert.has_error(function() c:inc({ a = "x", b = "y", z = 1 }) end, "bad argument #1 to 'inc' (unknown label 'z')")
      assert.has_error(function() c:inc({ a = {}, b = "y" }) end,
        "bad argument #1 to 'inc' (label 'a': expected a string or number, got table)")
      assert.has_error(function() c:inc({ a = "x", b = "y" }, -1) end, "bad argument #2 to 'inc' (a counter only goes up)")
      assert.has_error(function() c:inc({ a = "x", b = "y" }, 0 / 0) end,
        "bad argument #2 to 'inc' (n: expected a finite number)")
      assert.has_error(function() c:dec({ a = "x", b = "y" }) end, "bad self to 'dec' (only a gauge goes down)")
      assert.has_error(function() c:observe({ a = "x", b = "y" }, 1) end, "bad self to 'observe' (not a histogram)")
      c:inc({ a = "x", b = 200 })
      c:inc({ a = "x", b = 200 }, 2)
      assert.equals(3, c:value({ a = "x", b = "200" }))
      assert.is_nil(c:value({ a = "x", b = "201" }))
      local g = reg:gauge("g", "h")
      assert.equals(0, g:value()) -- an unlabelled metric exists from the start
      g:inc()
      g:inc(nil, 4)
      g:dec(nil, 2)
      assert.equals(3, g:value())
      g:set(nil, -7.5)
      assert.equals(-7.5, g:value())
    end)
  end)

  describe("render", function()
    it("writes HELP and TYPE once per family, escapes help and label values, and parses back", function()
      local reg = metrics.new()
      local c = reg:counter("eidkit_x_total", "Backslash \\ and\nnewline.", { "route", "status" })
      c:inc({ route = "/a", status = 200 })
      c:inc({ route = 'q"uote\\back\nline', status = 500 }, 3)
      reg:gauge("eidkit_g", "A gauge."):set(nil, 0.25)
      local text = reg:render()
      assert.matches("# HELP eidkit_x_total Backslash \\\\ and\\nnewline.\n", text, 1, true)
      assert.matches("# TYPE eidkit_x_total counter\n", text, 1, true)
      assert.matches('eidkit_x_total{route="q\\"uote\\\\back\\nline",status="500"} 3\n', text, 1, true)
      assert.matches('eidkit_x_total{route="/a",status="200"} 1\n', text, 1, true)
      assert.matches("eidkit_g 0.25\n", text, 1, true)
      local f = promtext.parse(text)
      assert.equals("Backslash \\ and\nnewline.", f.eidkit_x_total.help)
      assert.equals("counter", f.eidkit_x_total.type)
      assert.equals(3, promtext.value(f, "eidkit_x_total", { route = 'q"uote\\back\nline' }))
      assert.equals(0, promtext.value(f, "eidkit_metrics_series_dropped_total"))
    end)

    it("writes histograms with cumulative buckets, +Inf, _sum and _count", function()
      local reg = metrics.new()
      local h = reg:histogram("lat_seconds", "Latency.", { "action" }, { buckets = { 0.1, 0.5, 1 } })
      for _, v in ipairs { 0.05, 0.1, 0.3, 0.7, 2 } do h:observe({ action = "GetEidResult" }, v) end
      local text = reg:render()
      assert.matches(table.concat({
        'lat_seconds_bucket{action="GetEidResult",le="0.1"} 2',
        'lat_seconds_bucket{action="GetEidResult",le="0.5"} 3',
        'lat_seconds_bucket{action="GetEidResult",le="1"} 4',
        'lat_seconds_bucket{action="GetEidResult",le="+Inf"} 5',
        'lat_seconds_sum{action="GetEidResult"} 3.15',
        'lat_seconds_count{action="GetEidResult"} 5', "" }, "\n"), text, 1, true)
      local f = promtext.parse(text)
      assert.equals("histogram", f.lat_seconds.type)
      assert.same({ 5, 3.15 }, { h:value({ action = "GetEidResult" }) })
    end)

    it("formats numbers as Prometheus reads them", function()
      local n = metrics.format_number
      assert.same({ "0", "3", "-2", "0.1", "1e+20", "+Inf", "-Inf", "NaN", "1234567890123" },
        { n(0), n(3), n(-2), n(0.1), n(1e20), n(math.huge), n(-math.huge), n(0 / 0), n(1234567890123) })
      assert.equals(1 / 3, tonumber(n(1 / 3)))
    end)

    it("bind: a bound series counts what the methods count, checks alike, and drops alike", function()
      local reg = metrics.new { max_series = 2 }
      local c = reg:counter("c_total", "h", { "a", "b" })
      local g = reg:gauge("g", "h")
      local h = reg:histogram("h_seconds", "h", { "action" }, { buckets = { 0.1, 1 } })
      assert.has_error(function() c:bind({ a = "x" }) end, "bad argument #1 to 'bind' (label 'b' missing)")
      assert.has_error(function() c:bind({ a = "x", b = "y", z = 1 }) end, "bad argument #1 to 'bind' (unknown label 'z')")
      local bc, bg, bh = c:bind({ a = "x", b = 200 }), g:bind(nil), h:bind({ action = "A" })
      assert.has_error(function() bc:inc(-1) end, "bad argument #1 to 'inc' (a counter only goes up)")
      assert.has_error(function() bc:inc(0 / 0) end, "bad argument #1 to 'inc' (n: expected a finite number)")
      assert.has_error(function() bc:dec() end, "bad self to 'dec' (only a gauge goes down)")
      assert.has_error(function() bc:observe(1) end, "bad self to 'observe' (not a histogram)")
      assert.has_error(function() bh:inc() end, "bad self to 'inc' (a histogram: use observe)")
      assert.has_error(function() bg:set(1 / 0) end, "bad argument #1 to 'set' (v: expected a finite number)")
      assert.has_error(function() bh:observe(0 / 0) end, "bad argument #1 to 'observe' (v: expected a finite number)")
      assert.has_error(function() bh:set(1) end, "bad self to 'set' (a histogram: use observe)")
      bc:inc()
      c:inc({ a = "x", b = "200" }, 2) -- the same series, found by the method
      bc:inc(3)
      assert.equals(6, c:value({ a = "x", b = 200 }))
      bg:inc(5)
      bg:dec(2)
      bg:inc()
      bg:dec()
      bg:dec()
      assert.equals(2, g:value())
      bg:set(-1.5)
      assert.equals(-1.5, g:value())
      bh:observe(0.05)
      h:observe({ action = "A" }, 0.5)
      bh:observe(7)
      assert.same({ 3, 7.55 }, { h:value({ action = "A" }) })
      -- Past max_series: bound or not, each sample is dropped and counted
      -- once; binding takes no sample and counts nothing.
      c:inc({ a = "y", b = 1 })
      local late = c:bind({ a = "z", b = 1 })
      assert.equals(0, promtext.value(promtext.parse(reg:render()), "eidkit_metrics_series_dropped_total"))
      late:inc()
      late:inc(2)
      c:inc({ a = "z", b = 1 })
      assert.is_nil(c:value({ a = "z", b = 1 }))
      local f = promtext.parse(reg:render())
      assert.equals(3, promtext.value(f, "eidkit_metrics_series_dropped_total"))
      assert.equals(6, promtext.value(f, "c_total", { a = "x", b = "200" }))
    end)

    it("drops new label sets beyond max_series and counts them", function()
      local reg = metrics.new { max_series = 2 }
      local c = reg:counter("c_total", "h", { "code" })
      for i = 1, 5 do c:inc({ code = "c" .. i }) end
      c:inc({ code = "c1" }) -- an existing set still counts
      assert.equals(2, c:value({ code = "c1" }))
      assert.is_nil(c:value({ code = "c3" }))
      local f = promtext.parse(reg:render())
      assert.equals(3, promtext.value(f, "eidkit_metrics_series_dropped_total"))
      assert.equals(2, #f.c_total.samples)
    end)
  end)

  describe("the checker (spec/support/promtext.lua)", function()
    it("refuses what the format forbids", function()
      local bad = {
        "x 1", -- no final line feed
        "# TYPE x counter\n# TYPE x counter\nx 1\n",
        "# HELP x a\\tb\nx 1\n",
        "# TYPE x counter\nx 1\n# HELP x late\n",
        'x{a="1",a="2"} 1\n',
        'x{a="\\t"} 1\n',
        "x one\n",
        "x 1\nx 2\n",
        "# TYPE x counter\nx 1\n# TYPE y gauge\ny 1\nx 2\n",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",
      }
      for i, text in ipairs(bad) do
        assert.is_false(pcall(promtext.parse, text), "case " .. i .. " was accepted")
      end
    end)
  end)
end)
