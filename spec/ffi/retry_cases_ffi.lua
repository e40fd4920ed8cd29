-- Runs spec/support/retry_cases.lua through eidkit.ffi.retry under LuaJIT and
-- prints what each case got, as a Lua chunk that
-- spec/client/retry_decide_spec.lua loads and checks against the same table.
-- Usage (LUA_PATH with lua/ and spec/, LUA_CPATH with build/lua/):
--   luajit spec/ffi/retry_cases_ffi.lua
local retry = require "eidkit.ffi.retry"
local t = require "support.retry_cases"

local function value(x)
  if type(x) == "number" then return ("%.17g"):format(x) end
  if type(x) == "string" then return ("%q"):format(x) end
  return tostring(x)
end

local function serialize(tbl)
  local keys = {}
  for k in pairs(tbl) do keys[#keys + 1] = k end
  table.sort(keys)
  local out = {}
  for _, k in ipairs(keys) do out[#out + 1] = k .. " = " .. value(tbl[k]) end
  return "{ " .. table.concat(out, ", ") .. " }"
end

local out = { "return { jit = " .. value(jit.version) .. ", cases = {" }
for _, c in ipairs(t.cases) do
  local ok, v = pcall(retry.decide, c.rules, c[2])
  out[#out + 1] = "  " .. (ok and serialize(v) or serialize { error = v }) .. ","
end
out[#out + 1] = "}, delays = {"
for i, d in ipairs(t.delays) do
  out[#out + 1] = ("  [%d] = %s,"):format(i, value(retry.delay(d[1], d[2])))
end
out[#out + 1] = "} }"
print(table.concat(out, "\n"))
