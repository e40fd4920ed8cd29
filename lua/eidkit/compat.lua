-- eidkit.compat: number checks that Lua 5.4 and LuaJIT (OpenResty) both run.
-- Files that both hosts load use these instead of math.type/math.tointeger,
-- which LuaJIT lacks.
local type, huge, tonumber, rawget = type, math.huge, tonumber, rawget
-- Lua 5.4's, when present (rawget: luacheck's std "min" does not know them).
local math_type, math_tointeger = rawget(math, "type"), rawget(math, "tointeger")

local _M = {}

-- A finite number: not NaN, not +/-inf.
function _M.finite(v)
  return type(v) == "number" and v == v and v ~= huge and v ~= -huge
end

-- A finite number with no fractional part (an integer or an integral float).
function _M.is_integer(v)
  return _M.finite(v) and v % 1 == 0
end

-- An integer as the host counts one: Lua 5.4's integer subtype (3, not
-- 3.0), LuaJIT's integral number (it has no subtype).
if math_type then
  function _M.is_int(v) return math_type(v) == "integer" end
else
  _M.is_int = _M.is_integer
end

-- math.tointeger: v (a number, or a string holding one) as an integer, or
-- nil when it has a fractional part or is not a number. Under LuaJIT an
-- integral number within +/-2^53 (what a double holds exactly).
if math_tointeger then
  _M.tointeger = math_tointeger
else
  function _M.tointeger(v)
    if type(v) == "string" then v = tonumber(v) end
    if _M.is_integer(v) and v >= -2 ^ 53 and v <= 2 ^ 53 then return v end
    return nil
  end
end

return _M
