-- A server that answers every request with one fixed body, run as a child
-- process by the client specs (under lua5.4 or the eidkit program):
--   static_server.lua STATUS BODY [FAULT]
-- FAULT "truncate": send the first half of BODY under the full Content-Length,
-- then close. Prints "port N" once listening; stops on SIGTERM.
local core = require "eidkit.core"

local status, body, fault = tonumber(arg[1]), arg[2], arg[3]
local srv = core.http_server {
  port = 0,
  handler = function()
    return { status = status, headers = { ["Content-Type"] = "application/json" }, body = body,
      fault = fault }
  end,
}
io.stdout:write("port ", srv:port(), "\n")
io.stdout:flush()
srv:run()
srv:close()
