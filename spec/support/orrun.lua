-- examples/openresty/run as a child process for specs: nginx serving
-- eidkit.gateway, `eidkit sim` beside it, a private redis-server unless
-- --ledger is given. The handle has the shape support.serveproc's requests
-- take (s.url, s.sim_url), so one case table runs against `eidkit serve
-- --sim` and this alike.
--   local orrun = require "support.orrun"
--   local s = orrun.start { "--workers", "2" }   -- s.url, s.sim_url, s.prefix (with --keep)
--   local r = require("support.serveproc").request(s, "POST", "/eid/token", { user = "alice" })
--   orrun.error_log(s)                           -- nginx's error.log (needs --keep, which start adds)
--   local code, out, err = orrun.stop(s)         -- SIGTERM, wait, exit status
local core = require "eidkit.core"
local proc = require "support.proc"
local scratch = require "support.scratch"
local nginx = require "support.nginx"
local libeidkit = require "support.libeidkit"

local _M = {}

_M.RUN = nginx.root .. "/examples/openresty/run"
_M.START_TIMEOUT = 30

local function read(path) return proc.read(path) or "" end

-- start(args [, opts]) -> s; opts.env: more environment.
function _M.start(args, opts)
  opts = opts or {}
  local base = scratch.name()
  local argv = { _M.RUN, "--keep" }
  for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
  local env = { EIDKIT_BIN = proc.bin(), EIDKIT_LUA_CPATH = libeidkit.cpath() }
  for k, v in pairs(libeidkit.preload_env() or {}) do env[k] = v end
  for k, v in pairs(opts.env or {}) do env[k] = v end
  local p = assert(core.spawn(argv, { env = env, stdin = "/dev/null", stdout = base .. ".out",
    stderr = base .. ".err", die_with_parent = true }))
  local s = { process = p, base = base, pid = p:pid() }
  local t0 = core.monotonic()
  while true do
    local out = read(base .. ".out")
    local url, sim_url = out:match("^listening on (%S+)\nsimulator on (%S+)\n")
    if url then
      s.url, s.sim_url = url, sim_url
      s.lines = {}
      for line in out:gmatch("([^\n]*)\n") do s.lines[#s.lines + 1] = line end
      -- Any HTTP answer will do (a spec may start it with its ledger down);
      -- none is nginx not serving there, said now with its log rather than
      -- as a status 0 in the spec's first request.
      local r = require("support.serveproc").request(s, "GET", "/healthz", { max_time = 10 })
      if not r.status or r.status == 0 then
        local log = _M.error_log(s)
        _M.stop(s)
        error(("examples/openresty/run said %s but nothing answered there (curl exit %s):\n%s"):format(url,
          tostring(r.code), log:sub(-2000)), 2)
      end
      break
    end
    local st = p:wait(0.05)
    if st or core.monotonic() - t0 > _M.START_TIMEOUT then
      p:close(0.5)
      error(("examples/openresty/run did not start (%s):\n%s%s"):format(st and "exited " .. tostring(st)
        or "timeout", read(base .. ".out"), read(base .. ".err")), 2)
    end
  end
  return s
end

-- The prefix run keeps (--keep), as it says on stderr.
local function prefix(s)
  if not s.prefix then s.prefix = read(s.base .. ".err"):match("run: prefix (%S+)") end
  return s.prefix
end
_M.prefix = prefix

function _M.error_log(s)
  local dir = prefix(s)
  return dir and read(dir .. "/logs/error.log") or ""
end

-- The pids of nginx's worker processes.
function _M.workers(s)
  local dir = assert(prefix(s), "no prefix")
  local master = read(dir .. "/logs/nginx.pid"):match("%d+")
  local pids = {}
  for pid in proc.output("pgrep -P " .. master .. " 2>/dev/null"):gmatch("%d+") do pids[#pids + 1] = pid end
  return pids
end

-- stop(s [, signal]) -> exit status, stdout, stderr (the prefix removed)
function _M.stop(s, signal)
  local dir = prefix(s)
  local p = s.process
  p:kill(signal or "TERM")
  local st = p:wait(30)
  if not st then
    p:close(0.5)
    st = "timeout"
  end
  local out, err = read(s.base .. ".out"), read(s.base .. ".err")
  p:close(0)
  for _, ext in ipairs { "", ".out", ".err" } do os.remove(s.base .. ext) end
  if dir then proc.sh("rm -rf " .. proc.quote(dir)) end
  return st, out, err
end

return _M
