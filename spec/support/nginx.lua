-- A real nginx with Debian's Lua module (OpenResty's LuaJIT) for a spec: a
-- config written into a fresh temporary prefix, `nginx -p PREFIX -c CONF -g
-- 'daemon off;'` on 127.0.0.1 and a free port, this tree's lua/ and build on
-- the Lua paths. Missing nginx or its module is an error, never a skip.
--   local nginx = require "support.nginx"
--   local srv = nginx.start{ server = "location = /x { content_by_lua_block { ngx.say(1) } }" }
--   srv.url, srv.port, srv:error_log(), srv:stop()
local child = require "support.child"
local proc = require "support.proc"

local _M = {}

local MODULES = "/usr/lib/nginx/modules"
local SETUP = "run scripts/setup-deps (it installs nginx, libnginx-mod-http-lua and lua-resty-core)"

local root = debug.getinfo(1, "S").source:match("^@(.*)/spec/support/[^/]*$") or "."

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

-- The build's Lua module directory, from this process's package.cpath (the
-- ctest and README commands put build/lua/?.so there): nginx gets the same
-- entry, so eidkit.ffi finds build/libeidkit.so beside it.
local function build_cpath()
  for template in package.cpath:gmatch("[^;]+") do
    local dir = template:match("^(.*)/%?%.so$")
    if dir and exists(dir .. "/eidkit/core.so") then return template end
  end
  error("no package.cpath entry holds eidkit/core.so (set LUA_CPATH to build/lua/?.so)")
end

-- A sanitizer build's libeidkit needs the ASan runtime loaded first, which
-- an uninstrumented nginx does not do: preload it, so the same spec runs the
-- C signer under ASan inside the worker. Leak checking stays off (nginx and
-- LuaJIT keep their memory until exit by design).
local function sanitizer_env(template)
  local lib = template:gsub("%?%.so$", "../libeidkit.so")
  local asan = proc.output("ldd " .. proc.quote(lib) .. " 2>/dev/null"):match("=>%s*(%S*libasan%.so[%.%d]*)")
  if not asan then return nil end
  return { LD_PRELOAD = asan, ASAN_OPTIONS = "detect_leaks=0:abort_on_error=1" }
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
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path tmp/body;
  proxy_temp_path tmp/proxy;
  fastcgi_temp_path tmp/fastcgi;
  uwsgi_temp_path tmp/uwsgi;
  scgi_temp_path tmp/scgi;
  lua_package_path "%s/lua/?.lua;%s/lua/?/init.lua;;";
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
    if r.code == 0 and r.stdout == "204" then return true end
    if proc.read(self.child.base .. ".rc") then return false end -- nginx exited
    os.execute("sleep 0.05")
  end
  return false
end

-- opts.server: directives inside the server block; opts.http: more in the
-- http block; opts.workers: worker_processes (default 1).
function _M.start(opts)
  opts = opts or {}
  local bin = _M.binary()
  local cpath = build_cpath()
  local last_log = ""
  -- A free port can be taken between the probe and nginx's bind: try again.
  for _ = 1, 5 do
    local prefix = proc.output("mktemp -d /tmp/eidkit-nginx-XXXXXX"):gsub("%s+$", "")
    proc.sh("mkdir -p " .. proc.quote(prefix .. "/logs") .. " " .. proc.quote(prefix .. "/tmp"))
    local port = child.free_port()
    -- Workers run as the user running the spec (as root nginx would pick
    -- `nobody`, who may not read the tree).
    local user = proc.output("id -u"):match("^0") and "user root;" or ""
    local conf = CONF:format(MODULES, MODULES, user, opts.workers or 1, root, root, cpath,
      opts.http or "", port, opts.server or "")
    local f = assert(io.open(prefix .. "/nginx.conf", "wb"))
    f:write(conf)
    f:close()
    local self = setmetatable({ prefix = prefix, port = port, url = "http://127.0.0.1:" .. port }, server)
    local ok, ch = pcall(child.start, { bin, "-p", prefix, "-c", prefix .. "/nginx.conf", "-g", "daemon off;" },
      { env = sanitizer_env(cpath) })
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
