-- A real nginx with Debian's Lua module (OpenResty's LuaJIT) for a spec: a
-- config written into a fresh temporary prefix, `nginx -p PREFIX -c CONF -g
-- 'daemon off;'` on 127.0.0.1 and a free port, this tree's lua/ and build on
-- the Lua paths. Missing nginx or its module is an error, never a skip.
--   local nginx = require "support.nginx"
--   local srv = nginx.start{ server = "location = /x { content_by_lua_block { ngx.say(1) } }" }
--   srv.url, srv.port, srv.root (this tree), srv:error_log(), srv:stop()
local child = require "support.child"
local libeidkit = require "support.libeidkit"
local proc = require "support.proc"

local _M = {}

local MODULES = "/usr/lib/nginx/modules"
local SETUP = "run scripts/setup-deps (it installs nginx, libnginx-mod-http-lua and lua-resty-core)"

local root = debug.getinfo(1, "S").source:match("^@(.*)/spec/support/[^/]*$") or "."
_M.root = root -- this tree: nginx/eidkit.conf and the Lua files come from here

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

function _M.binary()
  local path = proc.output("command -v nginx 2>/dev/null || ls /usr/sbin/nginx 2>/dev/null"):gsub("%s+$", "")
  assert(path ~= "", "nginx is not installed: " .. SETUP)
  for _, m in ipairs { "ndk_http_module.so", "ngx_http_lua_module.so" } do
    assert(exists(MODULES .. "/" .. m), MODULES .. "/" .. m .. " is missing: " .. SETUP)
  end
  return path
end

local server = {}
server.__index = server

function server:error_log() return proc.read(self.prefix .. "/logs/error.log") or "" end

-- Fast shutdown (SIGTERM), wait for the master (it waits for its workers),
-- then remove the prefix. Idempotent.
function server:stop()
  if self.child then
    child.stop(self.child)
    self.child = nil
  end
  if self.prefix then
    proc.sh("rm -rf " .. proc.quote(self.prefix))
    self.prefix = nil
  end
end

local CONF = [[
# Written by spec/support/nginx.lua for one spec run.
load_module %s/ndk_http_module.so;
load_module %s/ngx_http_lua_module.so;
%s
worker_processes %d;
error_log logs/error.log info;
pid logs/nginx.pid;
events { worker_connections %d; }
http {
  access_log off;
  client_body_temp_path tmp/body;
  proxy_temp_path tmp/proxy;
  fastcgi_temp_path tmp/fastcgi;
  uwsgi_temp_path tmp/uwsgi;
  scgi_temp_path tmp/scgi;
  lua_package_path "%s;;";
  lua_package_cpath "%s;;";
%s
  server {
    listen 127.0.0.1:%d;
    location = /.eidkit-ready { return 204; }
%s
  }
}
]]

local function ready(self)
  for _ = 1, 100 do
    local r = proc.run { "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "1",
      self.url .. "/.eidkit-ready" }
    -- the port is this nginx's, not another's that took it first
    if r.code == 0 and r.stdout == "204" then return proc.listening(self.child.pid, self.port) end
    if proc.read(self.child.base .. ".rc") then return false end -- nginx exited
    os.execute("sleep 0.05")
  end
  return false
end

-- opts.server: directives inside the server block; opts.http: more in the
-- http block; opts.workers: worker_processes (default 1);
-- opts.worker_connections (default 256; a proxied request takes two);
-- opts.lua_path / opts.lua_cpath: the Lua paths (without the trailing ";;"),
-- by default this tree's lua/ and the build's cpath entry (an installed tree
-- for spec/install/);
-- opts.main: more directives in the main context (e.g. `env NAME;`);
-- opts.env: {NAME = value} added to nginx's own environment.
function _M.start(opts)
  opts = opts or {}
  local bin = _M.binary()
  -- The same cpath entry as this process: eidkit.ffi then finds the build's
  -- libeidkit beside it.
  local cpath = opts.lua_cpath or libeidkit.cpath()
  local path = opts.lua_path or (root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua")
  local env = libeidkit.preload_env()
  if opts.env then
    env = env or {}
    for k, v in pairs(opts.env) do env[k] = v end
  end
  local last_log = ""
  -- A free port can be taken between the probe and nginx's bind: try again.
  for _ = 1, 5 do
    local prefix = proc.output("mktemp -d /tmp/eidkit-nginx-XXXXXX"):gsub("%s+$", "")
    proc.sh("mkdir -p " .. proc.quote(prefix .. "/logs") .. " " .. proc.quote(prefix .. "/tmp"))
    local port = child.free_port()
    -- Workers run as the user running the spec (as root nginx would pick
    -- `nobody`, who may not read the tree).
    local user = (proc.output("id -u"):match("^0") and "user root;" or "") .. "\n" .. (opts.main or "")
    local conf = CONF:format(MODULES, MODULES, user, opts.workers or 1, opts.worker_connections or 256,
      path, cpath,
      opts.http or "", port, opts.server or "")
    local f = assert(io.open(prefix .. "/nginx.conf", "wb"))
    f:write(conf)
    f:close()
    local self = setmetatable({ prefix = prefix, port = port, url = "http://127.0.0.1:" .. port, root = root },
      server)
    local ok, ch = pcall(child.start, { bin, "-p", prefix, "-c", prefix .. "/nginx.conf", "-g", "daemon off;" },
      { env = env })
    if ok then
      self.child = ch
      if ready(self) then return self end
    end
    last_log = self:error_log() .. (ok and "" or tostring(ch))
    if self.child then -- what nginx said before its error log was open
      local _, out, err = child.stop(self.child)
      self.child, last_log = nil, last_log .. (out or "") .. (err or "")
    end
    self:stop()
  end
  error("nginx did not start on a free loopback port:\n" .. last_log, 2)
end

return _M
