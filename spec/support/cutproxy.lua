-- spec/support/cutproxy.js from Lua: a loopback proxy in front of a server
-- that loses the answers to what a client sends next (see the .js).
--   local p = cutproxy.start(port)   -- p.port, p:arm(), p:cuts(), p:stop()
-- node missing is a failure, as a missing redis-server is for its specs.
local proc = require "support.proc"
local scratch = require "support.scratch"

local _M = {}

local JS = (debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or ".") .. "/cutproxy.js"

local proxy = {}
proxy.__index = proxy

local function wait_for(self, pattern)
  for _ = 1, 200 do
    local m = (proc.read(self.out) or ""):match(pattern)
    if m then return m end
    proc.sh("sleep 0.01")
  end
  error(("cutproxy: no %q after 2 s; it wrote: %s"):format(pattern, proc.read(self.out) or ""), 3)
end

-- Arm it and wait until it says it is armed (a signal is handled
-- asynchronously: arming must be done before the client writes).
function proxy:arm()
  assert(proc.sh(("kill -USR1 %d"):format(self.pid)), "cutproxy: gone")
  self.armed = self.armed + 1
  for _ = 1, 200 do
    if select(2, (proc.read(self.out) or ""):gsub("armed\n", "")) >= self.armed then return end
    proc.sh("sleep 0.01")
  end
  error("cutproxy: not armed after 2 s", 2)
end

-- How many connections it has cut so far.
function proxy:cuts()
  return select(2, (proc.read(self.out) or ""):gsub("cut %d+\n", ""))
end

function proxy:stop()
  if self.pid then proc.sh(("kill %d 2>/dev/null"):format(self.pid)) end
  self.pid = nil
  os.remove(self.out)
end

function _M.start(port)
  local self = setmetatable({ out = scratch.name(), armed = 0 }, proxy)
  self.pid = tonumber(proc.output(("node %s 127.0.0.1:%d >%s 2>&1 & echo $!"):format(proc.quote(JS), port,
    proc.quote(self.out))):match("%d+"))
  self.port = tonumber(wait_for(self, "listening (%d+)\n"))
  assert(proc.listening(self.pid, self.port), "cutproxy: its port is not its own")
  return self
end

return _M
