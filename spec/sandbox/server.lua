-- A policy server for spec/sandbox/server_spec.lua, run as a child process by
-- the eidkit program: each request path names a sandboxed hook; the handler
-- answers 200 with the hook's result or 500 with the sandbox's error. Prints
-- "port N" once listening; GET /stop ends it.
local core = require "eidkit.core"
local sandbox = require "eidkit.sandbox"

local box = sandbox.new { name = "policy", instructions = 2000000, memory = 16 * 2 ^ 20, time = 2 }
local mod = assert(box:load([[
  local M = {}
  function M.ok(req) return "ok " .. req.path end
  function M.loop() while true do end end
  function M.pcall_loop() while true do pcall(function() while true do end end) end end
  function M.memory() local t = {} for i = 1, 1e9 do t[i] = { i } end end
  function M.rep() return string.rep("x", 2 ^ 30) end
  function M.bytecode() return assert(load(("").dump and ("").dump(M.ok) or "\27Lua")) end
  function M.os() return os.execute("echo escaped") end
  return M
]], "=policy.lua"))
local hooks = box:wrap(mod)

local srv
srv = core.http_server {
  port = 0,
  handler = function(req)
    if req.path == "/stop" then
      srv:stop()
      return { body = "stopping" }
    end
    local hook = hooks[req.path:sub(2)]
    if not hook then return { status = 404, body = "no hook" } end
    local before = collectgarbage("count")
    local res, err = hook { path = req.path }
    collectgarbage()
    local grown = collectgarbage("count") - before
    if err then return { status = 500, headers = { ["X-Grown-KiB"] = tostring(grown // 1) }, body = err.code .. "|" .. err.message } end
    return { body = tostring(res) }
  end,
}
io.stdout:write("port ", srv:port(), "\n")
io.stdout:flush()
srv:run()
srv:close()
os.exit(0)
