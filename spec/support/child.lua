-- A background child process for specs (a fixture server, a proxy): start it,
-- wait until its stdout or stderr matches a pattern, stop it by its pid.
--   local ch = child.start({ "tinyproxy", "-d", "-c", conf }, { ready = "listening" })
--   child.stop(ch)   -- SIGTERM (or the signal given), wait, remove the temporary files
--   child.wait(ch)   -- wait for a child that exits by itself
-- simproc and the HTTP server spec start their servers through this.
local proc = require "support.proc"
local scratch = require "support.scratch"

local quote, slurp = proc.quote, proc.read
local _M = {}

_M.slurp = slurp

local function sleep(s) os.execute("sleep " .. s) end

-- opts.ready: a Lua pattern looked for in stdout then stderr (its first
-- capture, or the match, is returned as ch.ready); opts.env: {NAME = value}.
function _M.start(argv, opts)
  opts = opts or {}
  local base = scratch.name()
  local words = {}
  for k, v in pairs(opts.env or {}) do words[#words + 1] = k .. "=" .. quote(v) end
  if #words > 0 then table.insert(words, 1, "env") end
  for _, a in ipairs(argv) do words[#words + 1] = quote(a) end
  os.execute(("(%s >%s.out 2>%s.err & echo $! >%s.pid; wait $!; echo $? >%s.tmp; mv %s.tmp %s.rc)"
    .. " >/dev/null 2>&1 &"):format(table.concat(words, " "), base, base, base, base, base, base))
  for _ = 1, 300 do
    local pid = (slurp(base .. ".pid") or ""):match("%d+")
    -- Without opts.ready, the pid is enough (and there is no pattern to
    -- match: before the pid file is written, that raised).
    local found = pid
    if opts.ready ~= nil then
      found = (slurp(base .. ".out") or ""):match(opts.ready) or (slurp(base .. ".err") or ""):match(opts.ready)
    end
    if pid and found then return { pid = pid, base = base, ready = found } end
    if slurp(base .. ".rc") then break end
    sleep(0.02)
  end
  local err = (slurp(base .. ".err") or "") .. (slurp(base .. ".out") or "")
  _M.stop({ base = base, pid = (slurp(base .. ".pid") or ""):match("%d+") })
  error(argv[1] .. " did not start: " .. err)
end

-- A loopback port nothing listens on (bound by python3, then released).
function _M.free_port()
  local r = proc.run { "python3", "-c",
    "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])" }
  return assert(tonumber(r.stdout), "python3 could not find a free port")
end

-- Wait for the child to exit: exit code, stdout, stderr; the temporary
-- files are removed.
function _M.wait(ch)
  for _ = 1, 300 do
    local rc = slurp(ch.base .. ".rc")
    if rc then
      local out, err = slurp(ch.base .. ".out"), slurp(ch.base .. ".err")
      for _, ext in ipairs { "", ".out", ".err", ".pid", ".rc" } do os.remove(ch.base .. ext) end
      return tonumber(rc), out, err
    end
    sleep(0.02)
  end
  error("child " .. tostring(ch.pid) .. " did not exit")
end

-- Signal (default TERM) and wait: exit code, stdout, stderr.
function _M.stop(ch, signal)
  if ch.pid then os.execute("kill -" .. (signal or "TERM") .. " " .. ch.pid .. " 2>/dev/null") end
  return _M.wait(ch)
end

return _M
