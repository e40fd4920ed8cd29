-- A server that answers every request with one fixed body, run as a child
-- process by the client specs (under lua5.4 or the eidkit program):
--   static_server.lua STATUS BODY
-- Prints "port N" once listening; stops on SIGTERM.
local core = require "eidkit.core"

local status, body = tonumber(arg[1]), arg[2]
local srv = core.http_server {
  port = 0,
  handler = function()
    return { status = status, headers = { ["Content-Type"] = "application/json" }, body = body }
  end,
}
io.stdout:write("port ", srv:port(), "\n")
io.stdout:flush()
srv:run()
srv:close()
