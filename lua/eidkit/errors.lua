-- eidkit.errors: the one shape of a runtime failure in the pure-Lua modules.
--
--   local errors = require "eidkit.errors"
--   local err = errors.new("unknown_token", "no such token", { request_id = rid })
--   return errors.result("timeout", "no answer in 10 s")   -- nil, err
--
-- err is a table with code, message, retryable (false unless extra says so)
-- and the fields of extra, and prints as "code: message": the metatable is
-- eidkit.core's on Lua 5.4 (eidkit.host's under LuaJIT), so errors made in C
-- and in Lua look and print the same.
local host = require "eidkit.host"

local pairs, setmetatable = pairs, setmetatable
local error_mt = host.error_mt

local _M = { mt = error_mt }

function _M.new(code, message, extra)
  local e = { code = code, message = message, retryable = false }
  if extra then for k, v in pairs(extra) do e[k] = v end end
  return setmetatable(e, error_mt)
end

-- The `nil, err` pair a runtime failure returns.
function _M.result(code, message, extra)
  return nil, _M.new(code, message, extra)
end

return _M
