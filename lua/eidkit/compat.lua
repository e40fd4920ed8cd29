-- eidkit.compat: number checks that Lua 5.4 and LuaJIT (OpenResty) both run.
-- Files that both hosts load use these instead of math.type/math.tointeger,
-- which LuaJIT lacks.
local type, huge = type, math.huge

local _M = {}

-- A finite number: not NaN, not +/-inf.
function _M.finite(v)
  return type(v) == "number" and v == v and v ~= huge and v ~= -huge
end

-- A finite number with no fractional part (an integer or an integral float).
function _M.is_integer(v)
  return _M.finite(v) and v % 1 == 0
end

return _M
