-- spec/support/cutproxy.js from Lua: a loopback proxy in front of a server
-- that loses the answers to what a client sends next (see the .js).
--   local p = cutproxy.start(port)   -- p.port, p:arm([pass]), p:cuts(), p:answers(), p:stop()
-- node missing is a failure, as a missing redis-server is for its specs.
local proc = require "support.proc"
local scratch = require "support.scratch"
local wait_for = require("support.serveproc").wait_for

local _M = {}

local JS = (debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or ".") .. "/cutproxy.js"

local proxy = {}
proxy.__index = proxy

-- How many lines matching pattern it has written.
local function count(self, pattern)
  return select(2, (proc.read(self.out) or ""):gsub(pattern, ""))
end

-- Arm it and wait until it says it is armed (a signal is handled
-- asynchronously: arming must be done before the client writes). Of the
-- answer to what the client sends next, the first `pass` bytes (default 0)
-- reach the client before the cut.
function proxy:arm(pass)
  local f = assert(io.open(self.out .. ".pass", "w"))
  f:write(tostring(pass or 0), "\n")
  f:close()
  assert(proc.sh(("kill -USR1 %d"):format(self.pid)), "cutproxy: gone")
  self.armed = self.armed + 1
  wait_for(function() return count(self, "armed\n") >= self.armed end, 2, "cutproxy to say it is armed")
end

-- How many connections it has cut so far.
function proxy:cuts()
  return count(self, "cut %d+\n")
end

-- The sizes of the chunks of answers it has passed on whole, oldest first.
function proxy:answers()
  local sizes = {}
  for n in (proc.read(self.out) or ""):gmatch("answer (%d+)\n") do sizes[#sizes + 1] = tonumber(n) end
  return sizes
end

function proxy:stop()
  if self.pid then proc.sh(("kill %d 2>/dev/null"):format(self.pid)) end
  self.pid = nil
  os.remove(self.out)
  os.remove(self.out .. ".pass")
end

function _M.start(port)
  local self = setmetatable({ out = scratch.name(), armed = 0 }, proxy)
  self.pid = tonumber(proc.output(("node %s 127.0.0.1:%d %s >%s 2>&1 & echo $!"):format(proc.quote(JS), port,
    proc.quote(self.out .. ".pass"), proc.quote(self.out))):match("%d+"))
  local ok, listening = pcall(wait_for, function() return (proc.read(self.out) or ""):match("listening (%d+)\n") end, 2,
    "cutproxy to listen")
  if not ok then error("cutproxy did not start; it wrote: " .. (proc.read(self.out) or ""), 2) end
  self.port = tonumber(listening)
  assert(proc.listening(self.pid, self.port), "cutproxy: its port is not its own")
  return self
end

return _M
