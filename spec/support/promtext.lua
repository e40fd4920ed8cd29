-- A strict reader of the Prometheus text exposition format 0.0.4, for specs:
-- parse(text) -> families | raises naming the line that breaks the format.
--   families[name] = { type = "counter", help = "...", samples = { {name, labels, value}, ... } }
--   promtext.value(families, "eidkit_gateway_requests_total", { route = "/eid/token", status = "200" })
-- Checks: HELP and TYPE at most once per family and before its samples; a
-- family's samples contiguous; metric and label names well formed; label
-- values with only \\, \" and \n escapes; no repeated label set; values
-- that are floats, +Inf, -Inf or NaN; histogram samples named _bucket (with
-- le), _sum, _count, buckets cumulative and the +Inf bucket equal to _count.
local _M = {}

local NAME = "^[%a_:][%w_:]*$"
local LABEL = "^[%a_][%w_]*$"

local function value_of(s, where)
  if s == "+Inf" then return math.huge end
  if s == "-Inf" then return -math.huge end
  if s == "NaN" then return 0 / 0 end
  local v = tonumber(s)
  if not v or not s:match("^[-+]?[%d.]+[eE]?[-+]?%d*$") then error(where .. ": bad value '" .. s .. "'", 0) end
  return v
end

-- name{a="x",b="y"} value -> name, labels, value
local function sample(line, where)
  local name, rest = line:match("^([%a_:][%w_:]*)(.*)$")
  if not name then error(where .. ": bad metric name", 0) end
  local labels, keys = {}, {}
  if rest:sub(1, 1) == "{" then
    local i = 2
    while true do
      if rest:sub(i, i) == "}" then i = i + 1 break end
      local lname, after = rest:match("^([%a_][%w_]*)=\"()", i)
      if not lname then error(where .. ": bad label at byte " .. i, 0) end
      i = after
      local buf = {}
      while true do
        local c = rest:sub(i, i)
        if c == "" then error(where .. ": unterminated label value", 0) end
        if c == "\"" then i = i + 1 break end
        if c == "\n" then error(where .. ": raw line feed in a label value", 0) end
        if c == "\\" then
          local e = rest:sub(i + 1, i + 1)
          if e == "\\" then buf[#buf + 1] = "\\"
          elseif e == "\"" then buf[#buf + 1] = "\""
          elseif e == "n" then buf[#buf + 1] = "\n"
          else error(where .. ": bad escape \\" .. e, 0) end
          i = i + 2
        else
          buf[#buf + 1] = c
          i = i + 1
        end
      end
      if labels[lname] ~= nil then error(where .. ": label " .. lname .. " twice", 0) end
      labels[lname] = table.concat(buf)
      keys[#keys + 1] = lname
      local sep = rest:sub(i, i)
      if sep == "," then i = i + 1 elseif sep ~= "}" then error(where .. ": expected , or }", 0) end
    end
    rest = rest:sub(i)
  end
  local v, ts = rest:match("^ (%S+)(.*)$")
  if not v then error(where .. ": expected a space and a value", 0) end
  if ts ~= "" and not ts:match("^ %-?%d+$") then error(where .. ": bad timestamp", 0) end
  table.sort(keys)
  local id = {}
  for _, k in ipairs(keys) do id[#id + 1] = k .. "=" .. labels[k] end
  return name, labels, value_of(v, where), table.concat(id, "\0")
end

local function family_of(name, families)
  if families[name] then return name end
  for _, suffix in ipairs { "_bucket", "_sum", "_count" } do
    local base = name:sub(1, -#suffix - 1)
    if name:sub(-#suffix) == suffix and families[base] and families[base].type == "histogram" then
      return base
    end
  end
  return name
end

local function check_histogram(fam)
  local groups = {}
  for _, s in ipairs(fam.samples) do
    local rest = {}
    for k, v in pairs(s.labels) do if k ~= "le" then rest[#rest + 1] = k .. "=" .. v end end
    table.sort(rest)
    local key = table.concat(rest, "\0")
    local g = groups[key] or { buckets = {} }
    groups[key] = g
    if s.name == fam.name .. "_bucket" then
      if not s.labels.le then error(fam.name .. ": a bucket without le", 0) end
      g.buckets[#g.buckets + 1] = { le = value_of(s.labels.le, fam.name), n = s.value }
    elseif s.name == fam.name .. "_count" then g.count = s.value
    elseif s.name == fam.name .. "_sum" then g.sum = s.value
    else error(fam.name .. ": sample " .. s.name .. " in a histogram", 0) end
  end
  for _, g in pairs(groups) do
    table.sort(g.buckets, function(a, b) return a.le < b.le end)
    local last = g.buckets[#g.buckets]
    if not last or last.le ~= math.huge then error(fam.name .. ": no +Inf bucket", 0) end
    for i = 2, #g.buckets do
      if g.buckets[i].n < g.buckets[i - 1].n then error(fam.name .. ": buckets not cumulative", 0) end
    end
    if g.count ~= last.n or g.sum == nil then error(fam.name .. ": _count differs from the +Inf bucket", 0) end
  end
end

function _M.parse(text)
  assert(type(text) == "string", "expected the exposition text")
  if text ~= "" and text:sub(-1) ~= "\n" then error("the text must end with a line feed", 0) end
  local families, order, seen_ids = {}, {}, {}
  local current, closed = nil, {}
  local n = 0
  for line in text:gmatch("([^\n]*)\n") do
    n = n + 1
    local where = "line " .. n
    local kw, name, rest = line:match("^# (%u+) (%S+) ?(.*)$")
    if kw == "HELP" or kw == "TYPE" then
      if not name:match(NAME) then error(where .. ": bad metric name " .. name, 0) end
      local fam = families[name]
      if not fam then
        if closed[name] then error(where .. ": family " .. name .. " split", 0) end
        fam = { name = name, samples = {} }
        families[name] = fam
        order[#order + 1] = name
      end
      if #fam.samples > 0 then error(where .. ": " .. kw .. " after samples of " .. name, 0) end
      if current and current ~= name then closed[current] = true end
      current = name
      if kw == "HELP" then
        if fam.help then error(where .. ": second HELP for " .. name, 0) end
        if rest:gsub("\\[\\n]", ""):find("\\") then error(where .. ": bad escape in HELP", 0) end
        fam.help = rest:gsub("\\(.)", { ["\\"] = "\\", n = "\n" })
      else
        if fam.type then error(where .. ": second TYPE for " .. name, 0) end
        if not ({ counter = 1, gauge = 1, histogram = 1, summary = 1, untyped = 1 })[rest] then
          error(where .. ": bad type " .. rest, 0)
        end
        fam.type = rest
      end
    elseif line:sub(1, 1) ~= "#" and line ~= "" then -- not a comment or a blank line
      local sname, labels, v, id = sample(line, where)
      local fname = family_of(sname, families)
      local fam = families[fname]
      if not fam then
        fam = { name = fname, samples = {}, type = "untyped" }
        families[fname] = fam
        order[#order + 1] = fname
      end
      if closed[fname] then error(where .. ": samples of " .. fname .. " not contiguous", 0) end
      if current and current ~= fname then closed[current] = true end
      current = fname
      for k in pairs(labels) do
        if not k:match(LABEL) then error(where .. ": bad label name " .. k, 0) end
      end
      local full = sname .. "\1" .. id
      if seen_ids[full] then error(where .. ": repeated series " .. sname, 0) end
      seen_ids[full] = true
      fam.samples[#fam.samples + 1] = { name = sname, labels = labels, value = v }
    end
  end
  for _, name in ipairs(order) do
    if families[name].type == "histogram" then check_histogram(families[name]) end
  end
  return families, order
end

local function matches(s, labels)
  for k, v in pairs(labels or {}) do if s.labels[k] ~= tostring(v) then return false end end
  return true
end

-- The value of the one sample named `name` whose labels include `labels`;
-- nil when none.
function _M.value(families, name, labels)
  local fam = families[family_of(name, families)]
  if not fam then return nil end
  for _, s in ipairs(fam.samples) do
    if s.name == name and matches(s, labels) then return s.value end
  end
  return nil
end

return _M
