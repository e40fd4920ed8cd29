-- eidkit.metrics: a small metrics registry rendered in the Prometheus text
-- exposition format 0.0.4 (docs/internals/gateway.md).
--
--   local metrics = require "eidkit.metrics"
--   local reg = metrics.new()
--   local req = reg:counter("eidkit_gateway_requests_total", "Requests answered.", { "route", "status" })
--   req:inc({ route = "/eid/token", status = 200 })
--   local lat = reg:histogram("eidkit_upstream_duration_seconds", "One attempt.", { "action" },
--     { buckets = { 0.05, 0.1, 0.5, 1, 5 } })
--   lat:observe({ action = "GetEidResult" }, 0.042)
--   local up = reg:gauge("eidkit_ledger_up", "1 when the ledger answers.")
--   up:set(nil, 1)
--   local ok200 = req:bind({ route = "/eid/token", status = 200 }) -- bound: for a hot path
--   ok200:inc()
--   reg:render() -- text/plain; version=0.0.4
--
-- Labels are a table keyed by label name; every declared label must be
-- given (numbers and booleans are turned into strings), no other. Declaring
-- a name again returns the same metric when the kind and labels match, and
-- raises otherwise, so two gateways can share one registry. Each metric
-- keeps at most max_series label sets (default 1000); a new set beyond that
-- is dropped and counted in eidkit_metrics_series_dropped_total, so a
-- label fed from outside cannot grow memory without bound.
--
-- Where the values live is pluggable: by default in this Lua state; with
-- new{store = s} in a store several Lua states share (OpenResty's workers:
-- eidkit.openresty.metrics_store over an lua_shared_dict), so each state
-- declares the same metrics and render() shows the sums. A store is
--   s:claim(name, key, max) -> true when the series (metric name, label
--     key) exists or was created within max series for that name, else false
--   s:add(id, n)            add n to the number at id (created at 0)
--   s:set(id, v), s:get(id) -> number or nil
--   s:series(name)          -> the label keys claimed for that name
-- where key is the label values joined by "\0" and id is an opaque string.
--
-- Loaded by OpenResty too: only what Lua 5.4 and LuaJIT both run.
local type, error, pairs, ipairs, tostring, tonumber, setmetatable =
  type, error, pairs, ipairs, tostring, tonumber, setmetatable
local format, concat, sort, huge = string.format, table.concat, table.sort, math.huge

local _M = {}

_M.CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
-- Seconds: from a fast local answer to a call that ran out its deadline.
_M.DEFAULT_BUCKETS = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30 }
_M.MAX_SERIES = 1000

local registry_mt = { __index = {} }
local registry = registry_mt.__index
local metric_mt = { __index = {} }
local metric = metric_mt.__index

local function finite(v)
  return type(v) == "number" and v == v and v ~= huge and v ~= -huge
end

-- A sample value as Prometheus reads it: integers without a fraction,
-- others with enough digits to read back the same double.
local function number(v)
  if v ~= v then return "NaN" end
  if v == huge then return "+Inf" end
  if v == -huge then return "-Inf" end
  if v % 1 == 0 and v > -1e15 and v < 1e15 then return format("%.0f", v) end
  local s = format("%.15g", v)
  if tonumber(s) ~= v then s = format("%.17g", v) end
  return s
end
_M.format_number = number

-- Label values: backslash, double quote and line feed escaped (0.0.4).
local function escape_value(s)
  return (s:gsub("[\\\"\n]", { ["\\"] = "\\\\", ["\""] = "\\\"", ["\n"] = "\\n" }))
end
-- HELP text: backslash and line feed escaped.
local function escape_help(s)
  return (s:gsub("[\\\n]", { ["\\"] = "\\\\", ["\n"] = "\\n" }))
end
_M.escape_label_value, _M.escape_help = escape_value, escape_help

-- Numbers as label values (HTTP statuses, mostly) formatted once each:
-- format("%.0f") on every sample showed in profiles. Bounded: a metric
-- labelled with unbounded numbers hits max_series first anyway.
local number_labels, number_labels_n = {}, 0
local function number_label(v)
  local s = number_labels[v]
  if s then return s end
  s = number(v)
  if v == v and number_labels_n < 1024 then
    number_labels[v] = s
    number_labels_n = number_labels_n + 1
  end
  return s
end

local function label_string(v, name, fname)
  local t = type(v)
  if t == "string" then return v end
  if t == "number" then return number_label(v) end
  if t == "boolean" then return tostring(v) end
  error(format("bad argument #1 to '%s' (label '%s': expected a string or number, got %s)",
    fname, name, t), 3)
end

-- metrics.new{max_series = 1000} -> registry
function _M.new(opts)
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then error("bad argument #1 to 'new' (expected a table of options)", 2) end
  for k in pairs(opts) do
    if k ~= "max_series" and k ~= "store" then error(format("bad option '%s' (unknown option)", tostring(k)), 2) end
  end
  local store = opts.store
  if store ~= nil then
    for _, f in ipairs { "claim", "add", "set", "get", "series" } do
      if type(store) ~= "table" or type(store[f]) ~= "function" then
        error(format("bad option 'store' (expected an object with %s)", f), 2)
      end
    end
  end
  local max = opts.max_series or _M.MAX_SERIES
  if not finite(max) or max < 1 or max % 1 ~= 0 then
    error("bad option 'max_series' (expected a positive integer)", 2)
  end
  return setmetatable({ list = {}, by_name = {}, max_series = max, dropped = 0, store = store }, registry_mt)
end

local function check_name(name, fname)
  if type(name) ~= "string" or not name:match("^[%a_:][%w_:]*$") then
    error(format("bad argument #1 to '%s' (expected a metric name [a-zA-Z_:][a-zA-Z0-9_:]*)", fname), 3)
  end
end

local DROPPED = "eidkit_metrics_series_dropped_total"

-- A value's id in a store: metric name, label key, field ("v", "c", "s",
-- "k<i>"), separated by \1 (never in a metric name). A store keeps a
-- histogram's samples per bucket, "k<i>" counting those in (b[i-1], b[i]]
-- (one add per sample, not one per bucket at or above it); the reader sums
-- them into Prometheus's cumulative counts. ("b<i>" was the cumulative form:
-- a shared dict that outlives a reload may still hold it, so it is not
-- reused.)
local function store_id(m, key, field)
  return m.name .. "\1" .. key .. "\1" .. field
end

-- quiet: a set with no room is not counted as a dropped sample (bind
-- takes no sample; its samples are counted when they are dropped).
local function new_series(m, key, values, quiet)
  local s = { values = values, value = 0 }
  local store = m.registry.store
  if store then
    -- In a store the series holds no values, only where they are.
    if not store:claim(m.name, key, m.registry.max_series) then
      if not quiet then store:add(DROPPED, 1) end
      return nil
    end
    -- Its values' ids, made once: they are used on every sample.
    s.id = store_id(m, key, "")
    s.vid, s.cid, s.sid = s.id .. "v", s.id .. "c", s.id .. "s"
    if m.kind == "histogram" then
      s.bids = {}
      for i = 1, #m.buckets do s.bids[i] = s.id .. "k" .. i end
    end
    m.series[key] = s
    return s
  end
  if m.kind == "histogram" then
    s.counts, s.sum, s.count = {}, 0, 0
    for i = 1, #m.buckets do s.counts[i] = 0 end
  end
  m.series[key] = s
  m.nseries = m.nseries + 1
  return s
end

local function declare(self, kind, name, help, labels, opts, fname)
  check_name(name, fname)
  if name == DROPPED then error(format("bad argument #1 to '%s' (%s is the registry's own)", fname, name), 3) end
  if type(help) ~= "string" then error(format("bad argument #2 to '%s' (help: expected string)", fname), 3) end
  if labels == nil then labels = {} end
  if type(labels) ~= "table" then
    error(format("bad argument #3 to '%s' (labels: expected a list of names)", fname), 3)
  end
  local seen = {}
  for i, l in ipairs(labels) do
    if type(l) ~= "string" or not l:match("^[%a_][%w_]*$") or l:sub(1, 2) == "__"
      or (kind == "histogram" and l == "le") or seen[l] then
      error(format("bad argument #3 to '%s' (label %d: expected a distinct name "
        .. "[a-zA-Z_][a-zA-Z0-9_]* not starting with __%s)", fname, i,
        kind == "histogram" and ", not le" or ""), 3)
    end
    seen[l] = true
  end
  local buckets
  if kind == "histogram" then
    if opts ~= nil and type(opts) ~= "table" then
      error(format("bad argument #4 to '%s' (expected a table of options)", fname), 3)
    end
    buckets = opts and opts.buckets or _M.DEFAULT_BUCKETS
    local ok = type(buckets) == "table" and #buckets > 0
    for i = 1, ok and #buckets or 0 do
      if not finite(buckets[i]) or (i > 1 and buckets[i] <= buckets[i - 1]) then ok = false end
    end
    if not ok then
      error(format("bad argument #4 to '%s' (buckets: expected increasing finite numbers)", fname), 3)
    end
  end
  local old = self.by_name[name]
  if old then
    local same = old.kind == kind and #old.labels == #labels
    for i = 1, #labels do same = same and old.labels[i] == labels[i] end
    if not same then
      error(format("bad argument #1 to '%s' (%s is already a %s with other labels)", fname, name,
        old.kind), 3)
    end
    return old
  end
  local copy = {}
  for i, l in ipairs(labels) do copy[i] = l end
  local bcopy
  if buckets then
    bcopy = {}
    for i, b in ipairs(buckets) do bcopy[i] = b end
  end
  local m = setmetatable({ kind = kind, name = name, help = help, labels = copy, buckets = bcopy,
    series = {}, nseries = 0, registry = self }, metric_mt)
  self.by_name[name] = m
  self.list[#self.list + 1] = m
  -- Without labels there is one series: exposed (at 0) from the start.
  if #copy == 0 then new_series(m, "", {}) end
  return m
end

-- reg:counter(name, help [, labels]) -> counter: inc(labels [, n]), set(labels, v)
function registry.counter(self, name, help, labels)
  return declare(self, "counter", name, help, labels, nil, "counter")
end

-- reg:gauge(name, help [, labels]) -> gauge: set(labels, v), inc(labels [, n]), dec(labels [, n])
function registry.gauge(self, name, help, labels)
  return declare(self, "gauge", name, help, labels, nil, "gauge")
end

-- reg:histogram(name, help [, labels [, {buckets = {...}}]]) -> histogram: observe(labels, v)
function registry.histogram(self, name, help, labels, opts)
  return declare(self, "histogram", name, help, labels, opts, "histogram")
end

-- reg:get(name) -> the metric declared with that name, or nil
function registry.get(self, name)
  return self.by_name[name]
end

-- The series for a label table: created on first use; nil when the metric
-- already holds max_series sets (the sample is dropped and counted, unless
-- quiet). The key is the label values joined by NUL, built without a
-- table: this runs for every sample of every request.
local function series(self, labels, fname, quiet)
  if labels ~= nil and type(labels) ~= "table" then
    error(format("bad argument #1 to '%s' (labels: expected a table or nil)", fname), 3)
  end
  local names = self.labels
  local n = #names
  local key = ""
  for i = 1, n do
    local v = labels and labels[names[i]]
    if v == nil then error(format("bad argument #1 to '%s' (label '%s' missing)", fname, names[i]), 3) end
    v = label_string(v, names[i], fname)
    key = i == 1 and v or key .. "\0" .. v
  end
  if labels then
    -- Every name was found: any key beyond n is one the metric lacks.
    local count = 0
    for _ in next, labels do count = count + 1 end
    if count > n then
      for k in next, labels do
        local known = false
        for i = 1, n do if names[i] == k then known = true end end
        if not known then error(format("bad argument #1 to '%s' (unknown label '%s')", fname, tostring(k)), 3) end
      end
    end
  end
  local s = self.series[key]
  if s then return s end
  if not self.registry.store and self.nseries >= self.registry.max_series then
    if not quiet then self.registry.dropped = self.registry.dropped + 1 end
    return nil
  end
  local values = {}
  for i = 1, n do values[i] = label_string(labels[names[i]], names[i], fname) end
  return new_series(self, key, values, quiet)
end

-- Raises at the caller of the method that called the check.
-- argn: 2 for the methods (after labels), 1 for a bound series.
local function check_value(v, fname, what, argn)
  if not finite(v) then
    error(format("bad argument #%d to '%s' (%s: expected a finite number)", argn, fname, what), 4)
  end
end

-- The updates themselves, on a series found already: the methods below
-- and a bound series (metric:bind) share them.
local function add(self, s, n)
  if s.id then return self.registry.store:add(s.vid, n) end
  s.value = s.value + n
end

local function put(self, s, v)
  if s.id then return self.registry.store:set(s.vid, v) end
  s.value = v
end

local function check_inc(self, n, argn)
  if n == nil then n = 1 end
  check_value(n, "inc", "n", argn)
  if self.kind == "histogram" then error("bad self to 'inc' (a histogram: use observe)", 3) end
  if self.kind == "counter" and n < 0 then
    error(format("bad argument #%d to 'inc' (a counter only goes up)", argn), 3)
  end
  return n
end

local function check_dec(self, n, argn)
  if n == nil then n = 1 end
  check_value(n, "dec", "n", argn)
  if self.kind ~= "gauge" then error("bad self to 'dec' (only a gauge goes down)", 3) end
  return n
end

local function check_set(self, v, argn)
  check_value(v, "set", "v", argn)
  if self.kind == "histogram" then error("bad self to 'set' (a histogram: use observe)", 3) end
end

local function check_observe(self, v, argn)
  check_value(v, "observe", "v", argn)
  if self.kind ~= "histogram" then error("bad self to 'observe' (not a histogram)", 3) end
end

-- Each bucket counts its own samples, in a store or not; rendering adds
-- them up. One increment a sample instead of one per bucket above it.
local function sample(self, s, v)
  local b, i = self.buckets, 1
  local nb = #b
  while i <= nb and v > b[i] do i = i + 1 end
  if i > nb then i = nil end -- only +Inf, which is the count
  local store = s.id and self.registry.store
  if store then
    if i then store:add(s.bids[i], 1) end
    store:add(s.cid, 1)
    return store:add(s.sid, v)
  end
  if i then s.counts[i] = s.counts[i] + 1 end
  s.count = s.count + 1
  s.sum = s.sum + v
end

-- counter:inc(labels [, n = 1]) / gauge:inc(labels [, n = 1])
function metric.inc(self, labels, n)
  n = check_inc(self, n, 2)
  local s = series(self, labels, "inc")
  if s then return add(self, s, n) end
end

-- gauge:dec(labels [, n = 1])
function metric.dec(self, labels, n)
  n = check_dec(self, n, 2)
  local s = series(self, labels, "dec")
  if s then return add(self, s, -n) end
end

-- gauge:set(labels, v); counter:set(labels, v) mirrors a count kept
-- elsewhere (it must never go down).
function metric.set(self, labels, v)
  check_set(self, v, 2)
  local s = series(self, labels, "set")
  if s then return put(self, s, v) end
end

-- histogram:observe(labels, v)
function metric.observe(self, labels, v)
  check_observe(self, v, 2)
  local s = series(self, labels, "observe")
  if s then return sample(self, s, v) end
end

-- metric:bind(labels) -> the series of those label values, bound:
-- bound:inc([n]), bound:dec([n]), bound:set(v), bound:observe(v) do what
-- the metric's methods do with `labels`, without finding the series again.
-- For a hot path that keeps one per label set (the gateway counts every
-- request). Raises as the methods do for labels the metric lacks or
-- misses. Past max_series the bound series has no place either: each of
-- its samples is dropped and counted, as the methods' are.
local bound_series_mt = { __index = {} }
local bound_series = bound_series_mt.__index

function metric.bind(self, labels)
  local s = series(self, labels, "bind", true)
  local copy
  if not s then
    -- Dropped: every sample goes the methods' way, and is counted there.
    copy = {}
    for k, v in next, labels do copy[k] = v end
  end
  return setmetatable({ m = self, s = s, labels = copy }, bound_series_mt)
end

-- Each method first takes the case the request path makes on every request
-- (a series that has its place, a valid value) without the general checks,
-- which the gateway's per-request counting spent most of its metric time
-- in; anything else goes the checked way and raises as before.
function bound_series.inc(self, n)
  local m, s = self.m, self.s
  if n == nil and s and m.kind ~= "histogram" then return add(m, s, 1) end
  n = check_inc(m, n, 1)
  if s then return add(m, s, n) end
  return m:inc(self.labels, n)
end

function bound_series.dec(self, n)
  local m, s = self.m, self.s
  if n == nil and s and m.kind == "gauge" then return add(m, s, -1) end
  n = check_dec(m, n, 1)
  if s then return add(m, s, -n) end
  return m:dec(self.labels, n)
end

function bound_series.set(self, v)
  local m, s = self.m, self.s
  if s and m.kind ~= "histogram" and finite(v) then return put(m, s, v) end
  check_set(m, v, 1)
  if s then return put(m, s, v) end
  return m:set(self.labels, v)
end

function bound_series.observe(self, v)
  local m, s = self.m, self.s
  if s and m.kind == "histogram" and finite(v) then return sample(m, s, v) end
  check_observe(m, v, 1)
  if s then return sample(m, s, v) end
  return m:observe(self.labels, v)
end

-- metric:value(labels) -> the current value (a histogram: count, sum), or nil
-- when the series was never written.
function metric.value(self, labels)
  local names = self.labels
  local values = {}
  for i = 1, #names do
    local v = labels and labels[names[i]]
    if v == nil then return nil end
    values[i] = label_string(v, names[i], "value")
  end
  local key = concat(values, "\0")
  local store = self.registry.store
  if store then
    if self.kind == "histogram" then
      local count = store:get(store_id(self, key, "c"))
      if count == nil then return nil end
      return count, store:get(store_id(self, key, "s")) or 0
    end
    return store:get(store_id(self, key, "v"))
  end
  local s = self.series[key]
  if not s then return nil end
  if self.kind == "histogram" then return s.count, s.sum end
  return s.value
end

-- The series of m as render reads them: its own, or, from a store, every
-- series any Lua state sharing the store claimed, with their values.
local function split_key(key, n)
  local values = {}
  if n == 0 then return values end
  local pos = 1
  for i = 1, n - 1 do
    local z = key:find("\0", pos, true)
    if not z then return nil end
    values[i] = key:sub(pos, z - 1)
    pos = z + 1
  end
  values[n] = key:sub(pos)
  return values
end

-- Cumulative bucket counts (Prometheus' le) from per-bucket ones.
local function cumulative(counts, n)
  local out, sum = {}, 0
  for i = 1, n do
    sum = sum + (counts[i] or 0)
    out[i] = sum
  end
  return out
end

local function series_of(m)
  local store = m.registry.store
  if not store then
    if m.kind ~= "histogram" then return m.series end
    local out = {}
    for key, s in pairs(m.series) do
      out[key] = { values = s.values, counts = cumulative(s.counts, #m.buckets), count = s.count,
        sum = s.sum }
    end
    return out
  end
  local out = {}
  for _, key in ipairs(store:series(m.name)) do
    local values = split_key(key, #m.labels)
    if values then
      local s = { values = values }
      if m.kind == "histogram" then
        local counts = {}
        for i = 1, #m.buckets do counts[i] = store:get(store_id(m, key, "k" .. i)) or 0 end
        s.counts = cumulative(counts, #m.buckets)
        s.count = store:get(store_id(m, key, "c")) or 0
        s.sum = store:get(store_id(m, key, "s")) or 0
      else
        s.value = store:get(store_id(m, key, "v")) or 0
      end
      out[key] = s
    end
  end
  return out
end

-- '{a="x",b="y"}' (with an extra pair appended when given), or "".
local function label_text(names, values, extra_name, extra_value)
  local parts = {}
  for i = 1, #names do
    parts[#parts + 1] = names[i] .. "=\"" .. escape_value(values[i]) .. "\""
  end
  if extra_name then parts[#parts + 1] = extra_name .. "=\"" .. extra_value .. "\"" end
  if #parts == 0 then return "" end
  return "{" .. concat(parts, ",") .. "}"
end

local function render_metric(m, out)
  out[#out + 1] = "# HELP " .. m.name .. " " .. escape_help(m.help)
  out[#out + 1] = "# TYPE " .. m.name .. " " .. m.kind
  local all = series_of(m)
  local keys = {}
  for k in pairs(all) do keys[#keys + 1] = k end
  sort(keys)
  for _, k in ipairs(keys) do
    local s = all[k]
    if m.kind == "histogram" then
      for i, bound in ipairs(m.buckets) do
        out[#out + 1] = m.name .. "_bucket" .. label_text(m.labels, s.values, "le", number(bound))
          .. " " .. number(s.counts[i])
      end
      out[#out + 1] = m.name .. "_bucket" .. label_text(m.labels, s.values, "le", "+Inf")
        .. " " .. number(s.count)
      out[#out + 1] = m.name .. "_sum" .. label_text(m.labels, s.values) .. " " .. number(s.sum)
      out[#out + 1] = m.name .. "_count" .. label_text(m.labels, s.values) .. " " .. number(s.count)
    else
      out[#out + 1] = m.name .. label_text(m.labels, s.values) .. " " .. number(s.value)
    end
  end
end

-- reg:render() -> the exposition text (Content-Type: metrics.CONTENT_TYPE)
function registry.render(self)
  local out = {}
  for _, m in ipairs(self.list) do render_metric(m, out) end
  out[#out + 1] = "# HELP " .. DROPPED .. " Samples dropped because a metric already held max_series "
    .. "label sets."
  out[#out + 1] = "# TYPE " .. DROPPED .. " counter"
  local dropped = self.dropped
  if self.store then dropped = self.store:get(DROPPED) or 0 end
  out[#out + 1] = DROPPED .. " " .. number(dropped)
  return concat(out, "\n") .. "\n"
end

registry_mt.__name = "eidkit.Metrics"
metric_mt.__name = "eidkit.Metric"
metric_mt.__tostring = function(self) return "eidkit.metrics " .. self.kind .. " " .. self.name end

return _M
