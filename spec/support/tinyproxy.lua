-- A real tinyproxy on a free loopback port, and how many requests it
-- forwarded to a URL (from its own log).
--   local tinyproxy = require "support.tinyproxy"
--   local tp = tinyproxy.start()      -- tp.url ("http://127.0.0.1:PORT"), tp.port
--   tp:forwarded("POST", sim.url)     -- requests "POST <sim.url>/" it logged
--   tp:stop()
local child = require "support.child"
local scratch = require "support.scratch"

local _M = {}

local Proxy = {}
Proxy.__index = Proxy

function _M.start()
  local port = child.free_port()
  local conf = scratch.file()
  local f = assert(io.open(conf, "wb"))
  f:write(("Port %d\nListen 127.0.0.1\nTimeout 30\nMaxClients 200\nAllow 127.0.0.1\nLogLevel Info\n"):format(port))
  f:close()
  local ch = child.start({ "tinyproxy", "-d", "-c", conf }, { ready = "Accepting connections" })
  return setmetatable({ port = port, url = "http://127.0.0.1:" .. port, conf = conf, child = ch }, Proxy)
end

function Proxy:forwarded(method, url)
  local n = 0
  for _ in (child.slurp(self.child.base .. ".out") or ""):gmatch("Request %(file descriptor %d+%): "
    .. method .. " " .. url:gsub("%p", "%%%0") .. "/ HTTP/1.1") do n = n + 1 end
  return n
end

function Proxy:stop()
  if self.child then child.stop(self.child) end
  self.child = nil
  os.remove(self.conf)
end

return _M
