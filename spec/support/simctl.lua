-- The simulator's control API (docs/SIMULATOR.md) from a spec, with the curl
-- program: faults, clock, user actions. s is what support.simproc.start returns.
--   simctl.faults(s, { { Action = "*", Kind = "throttle", First = 2 } })
--   simctl.advance(s, 600); simctl.finish(s, tok, { ErrCode = 0 })
local cjson = require "cjson"
local proc = require "support.proc"

local _M = {}

-- request(s, method, path [, body table]) -> status, decoded body (or text)
function _M.request(s, method, path, body)
  local argv = { "curl", "-s", "-o", "-", "-w", "\n%{http_code}", "-X", method }
  if body ~= nil then
    argv[#argv + 1] = "--data-binary"
    argv[#argv + 1] = cjson.encode(body)
  end
  argv[#argv + 1] = s.url .. path
  local res = proc.run(argv)
  local text, status = res.stdout:match("^(.*)\n(%d+)$")
  local ok, decoded = pcall(cjson.decode, text or "")
  return tonumber(status), ok and decoded or text
end

function _M.faults(s, rules)
  local status = _M.request(s, "PUT", "/sim/faults", rules)
  assert(status == 200, "PUT /sim/faults failed")
end

function _M.clear(s) assert(_M.request(s, "DELETE", "/sim/faults") == 200) end

function _M.advance(s, seconds)
  assert(_M.request(s, "POST", "/sim/clock", { Advance = seconds }) == 200)
end

function _M.finish(s, tok, body)
  return (_M.request(s, "POST", "/sim/tokens/" .. tok .. "/finish", body or { ErrCode = 0 }))
end

return _M
