-- Run `eidkit sim` as a child process on a free loopback port, for specs
-- that need the simulator over real sockets (the client, the flows).
--   local simproc = require "support.simproc"
--   local s = simproc.start { "--seed", "3" }   -- s.url, s.port, s.pid, s.stdout
--   ...
--   local code, stdout, stderr = simproc.stop(s)  -- SIGTERM, waits for exit
local proc = require "support.proc"

local quote, slurp = proc.quote, proc.read

local _M = {}

local function sleep(s) os.execute("sleep " .. s) end

-- Wall-clock seconds with sub-second resolution (os.time has whole seconds).
function _M.now()
  local p = io.popen("date +%s.%N")
  local t = tonumber(p:read("l"))
  p:close()
  return t
end

-- Start `eidkit sim --listen 127.0.0.1:0 ARGS...`; returns
-- { port, pid, base, url, stdout } once the port file exists.
function _M.start(args)
  local base = os.tmpname()
  local words = { quote(proc.bin()), "sim", "--listen", "127.0.0.1:0", "--port-file",
    quote(base .. ".port") }
  for _, a in ipairs(args or {}) do words[#words + 1] = quote(a) end
  os.execute(("(%s >%s.out 2>%s.err & echo $! >%s.pid; wait $!; echo $? >%s.tmp; mv %s.tmp %s.rc)"
    .. " >/dev/null 2>&1 &"):format(table.concat(words, " "), base, base, base, base, base, base))
  for _ = 1, 300 do
    local port = (slurp(base .. ".port") or ""):match("^(%d+)\n$")
    local pid = (slurp(base .. ".pid") or ""):match("%d+")
    if port and pid then
      local out = slurp(base .. ".out") or ""
      return { port = tonumber(port), pid = pid, base = base, stdout = out,
        url = out:match("^listening on (%S+)\n") }
    end
    if slurp(base .. ".rc") then break end
    sleep(0.02)
  end
  error("eidkit sim did not start: " .. (slurp(base .. ".err") or ""))
end

-- Stop with a signal (default TERM) and wait: exit code, stdout, stderr.
function _M.stop(s, signal)
  os.execute("kill -" .. (signal or "TERM") .. " " .. s.pid)
  for _ = 1, 300 do
    local rc = slurp(s.base .. ".rc")
    if rc then
      local out, err = slurp(s.base .. ".out"), slurp(s.base .. ".err")
      for _, ext in ipairs { "", ".out", ".err", ".pid", ".rc", ".port" } do os.remove(s.base .. ext) end
      return tonumber(rc), out, err
    end
    sleep(0.02)
  end
  error("eidkit sim did not exit")
end

return _M
