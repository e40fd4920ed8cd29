-- Start a real redis-server for a spec: loopback only, a free port (redis
-- refuses --port 0, so ports are tried until one binds), no RDB snapshots,
-- AOF on (fsync always, so a restart loses nothing acknowledged), data in a
-- fresh temporary directory.
--   local redis = require "support.redis"
--   local srv = redis.start()      -- srv.port, srv.url(db, prefix), srv:stop()
--   redis.start{ requirepass = pw } -- AUTH required; srv:url carries pw
local proc = require "support.proc"

local _M = {}

local sh, read = proc.sh, proc.output

_M.available = sh("command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1")

local server = {}
server.__index = server

function server:cli(...)
  local words = { "redis-cli", "-h", "127.0.0.1", "-p", tostring(self.port) }
  if self.requirepass then
    words[#words + 1] = "--no-auth-warning -a '" .. self.requirepass:gsub("'", "'\\''") .. "'"
  end
  for _, a in ipairs({ ... }) do words[#words + 1] = "'" .. tostring(a):gsub("'", "'\\''") .. "'" end
  return read(table.concat(words, " ") .. " 2>&1")
end

-- The password percent-encoded, as the ledger URL takes it.
local function encode(s)
  return (s:gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

function server:url(db, prefix)
  local auth = self.requirepass and (":" .. encode(self.requirepass) .. "@") or ""
  local u = ("redis://%s127.0.0.1:%d/%d"):format(auth, self.port, db or 0)
  if prefix then u = u .. "?prefix=" .. prefix end
  return u
end

-- Running, and not a zombie: where PID 1 does not reap orphans (some
-- containers) a stopped server stays a zombie, which kill -0 still finds.
function server:alive()
  if self.pid == nil then return false end
  local status = proc.read("/proc/" .. self.pid .. "/stat")
  if status then return status:match("^%d+ %b() (%a)") ~= "Z" end
  return sh("kill -0 " .. self.pid .. " 2>/dev/null")
end

local function wait_ready(self)
  for _ = 1, 100 do
    if self:cli("PING"):match("PONG") and proc.listening(self.pid, self.port) then return true end
    if not self:alive() then return false end
    sh("sleep 0.05")
  end
  return false
end

-- (Re)start on self.port with self.dir; true when it answers PING and the
-- port is its own (not another server's that took the port first).
function server:launch()
  local cmd = ("redis-server --bind 127.0.0.1 --port %d --save '' --appendonly yes"
    .. " --appendfsync always --dir %s --logfile %s/redis.log --daemonize no"
    .. "%s >/dev/null 2>&1 & echo $!"):format(self.port, self.dir, self.dir,
      self.requirepass and (" --requirepass '" .. self.requirepass:gsub("'", "'\\''") .. "'") or "")
  self.pid = tonumber(read(cmd):match("%d+"))
  return wait_ready(self)
end

-- Stop with SIGTERM (redis fsyncs the AOF and exits) or SIGKILL (hard).
function server:stop(signal)
  if not self.pid then return end
  sh(("kill -%s %d 2>/dev/null"):format(signal or "TERM", self.pid))
  for _ = 1, 200 do
    if not self:alive() then break end
    sh("sleep 0.02")
  end
  self.pid = nil
end

function server:destroy()
  self:stop()
  if self.dir then sh("rm -rf '" .. self.dir .. "'") end
end

function _M.start(opts)
  opts = opts or {}
  local dir = read("mktemp -d /tmp/eidkit-redis-XXXXXX"):gsub("%s+$", "")
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16))
  for _ = 1, 20 do
    local self = setmetatable({ port = math.random(20000, 60000), dir = dir, requirepass = opts.requirepass },
      server)
    if self:launch() then return self end
    self:stop("KILL")
  end
  sh("rm -rf '" .. dir .. "'")
  error("could not start redis-server on a free loopback port", 2)
end

return _M
