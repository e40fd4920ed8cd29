-- Run `eidkit sim` as a child process on a free loopback port, for specs
-- that need the simulator over real sockets (the client, the flows).
--   local simproc = require "support.simproc"
--   local s = simproc.start { "--seed", "3" }   -- s.url, s.port, s.pid, s.stdout
--   ...
--   local code, stdout, stderr = simproc.stop(s)  -- SIGTERM, waits for exit
local proc = require "support.proc"
local scratch = require "support.scratch"
local child = require "support.child"

local _M = {}

-- Wall-clock seconds with sub-second resolution (os.time has whole seconds).
function _M.now()
  local p = io.popen("date +%s.%N")
  local t = tonumber(p:read("l"))
  p:close()
  return t
end

-- Start `eidkit sim --listen 127.0.0.1:0 ARGS...`; returns
-- { port, pid, base, url, stdout } once it has printed its start-up lines
-- (the last one is "token ttl ..."; the port file is written before them).
function _M.start(args)
  local port_file = scratch.name()
  os.remove(port_file)
  local argv = { proc.bin(), "sim", "--listen", "127.0.0.1:0", "--port-file", port_file }
  for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
  local ch = child.start(argv, { ready = "^listening on (%S+)\n.-token ttl %d+ s" })
  ch.url = ch.ready
  ch.port = tonumber((proc.read(port_file) or ""):match("^(%d+)\n$"))
  ch.stdout = proc.read(ch.base .. ".out") or ""
  ch.port_file = port_file
  return ch
end

-- Stop with a signal (default TERM) and wait: exit code, stdout, stderr.
function _M.stop(s, signal)
  os.remove(s.port_file)
  return child.stop(s, signal)
end

return _M
