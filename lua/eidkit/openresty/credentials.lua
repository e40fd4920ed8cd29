-- eidkit.openresty.credentials: eidkit.credentials' chain inside an nginx
-- worker (OpenResty, or Debian's nginx with its Lua module).
--
--   -- once per worker, e.g. in init_worker_by_lua_block (a metadata host
--   -- name is resolved only there), kept in a module:
--   local creds = require("eidkit.openresty.credentials").default {}
--   -- in a handler:
--   local client = require("eidkit.openresty.client").new { endpoint = ..., credentials = creds }
--
-- The providers (static, env, profile, cvm_role, chain, default) and every
-- rule and message are eidkit.credentials.rules', the same as on the Lua 5.4
-- host; this file supplies the worker's I/O:
--   env       os.getenv. nginx clears the environment of its workers: each
--             variable needs `env NAME;` in nginx.conf's main context, and a
--             missing one says so.
--   profile   a small blocking read of a local file at each get() (like
--             eidkit.ffi loading libeidkit; never a network file system).
--             HOME and TENCENTCLOUD_CREDENTIALS_FILE need `env` too, or give
--             path.
--   cvm_role  the metadata service through nginx itself: ngx.location.capture
--             of the internal location /_eidkit/metadata
--             (nginx/eidkit_location.conf), so the request's coroutine
--             yields while nginx does the I/O. Refreshes are single-flight
--             per provider, i.e. per worker: the first request due for one
--             makes the GETs, the others wait on an ngx.semaphore and take
--             its result.
-- Where a get() may run: rewrite, access and content handlers (the ones
-- where eidkit.openresty.client runs); cvm_role's refresh needs a
-- subrequest and fails in a timer. LuaJIT in nginx only.
local ngx = ngx
local cjson = require "cjson.safe"
local rules = require "eidkit.credentials.rules"
local resolve = require "eidkit.openresty.resolve"

local type, error, pairs, pcall, tostring, tonumber = type, error, pairs, pcall, tostring, tonumber
local format, getenv = string.format, os.getenv

local _M = {}

local LOCATION = "/_eidkit/metadata"
_M.LOCATION = LOCATION

-- What a missing variable means in a worker.
local ENV_HINT = " in this nginx worker (nginx passes a variable to its workers only when nginx.conf has `env "
  .. rules.ENV_ID .. ";`, `env " .. rules.ENV_KEY .. ";` and, for a token, `env " .. rules.ENV_TOKEN .. ";`)"
local HOME_HINT = " in this nginx worker (add `env HOME;` or `env " .. rules.ENV_FILE
  .. ";` to nginx.conf, or give path)"

_M.METADATA_URL = rules.METADATA_URL
_M.parse_ini = rules.parse_ini
_M.static = rules.static
_M.chain = rules.chain

-- env{getenv = os.getenv}
function _M.env(opts)
  return rules.env(opts and opts.getenv or getenv, ENV_HINT)
end

-- profile{path =, profile = "default", getenv = os.getenv}
function _M.profile(opts)
  opts = opts or {}
  return rules.profile(opts, opts.getenv or getenv, HOME_HINT)
end

local function present(t) return t ~= nil and t ~= "" and t ~= "-" end

-- GET through nginx: the rules' http_get for one metadata endpoint.
local function http_get(target)
  return function(url, timeout, max)
    -- The path goes into proxy_pass verbatim: only what a role name and
    -- the metadata path hold, nothing nginx would need to escape.
    local path = url:sub(#target.base + 1)
    path = target.path .. path
    if path:find("[^%w%-%._~/%+=,@]") then return nil, "the metadata path has characters a URL cannot carry" end
    local e = { addr = target.addr, port = target.port, connect_timeout = timeout, timeout = timeout,
      md_host = target.host, md_path = path }
    local res = ngx.location.capture(LOCATION, { method = ngx.HTTP_GET, ctx = { eidkit = e } })
    if not e.filtered or e.balancer_error then
      return nil, format("nginx answered %d without reaching the metadata service: is"
        .. " nginx/eidkit_location.conf included in this server, and nginx/eidkit.conf in http? (see error.log)",
        res.status)
    end
    if present(e.header_time) then
      local body = res.body or ""
      if res.truncated then return nil, "the answer was cut short" end
      if #body > max then return nil, format("answer larger than %d bytes", max) end
      return res.status, body
    end
    if res.status == 504 then return nil, "timeout" end
    if not present(e.connect_time) then return nil, "could not connect (see error.log)" end
    return nil, "the connection broke before an answer"
  end
end

-- cvm_role{url =, role =, timeout = 1, window = 300, clock = ngx.time,
-- peer = "IP"}: rules.cvm_role over nginx. url must be http://HOST[:PORT]/...;
-- a host name is resolved when the provider is made in init_by_lua* or
-- init_worker_by_lua* (resolving blocks), or peer gives the address; made
-- elsewhere without either, every get() fails saying so.
function _M.cvm_role(opts)
  opts = opts or {}
  local url = rules.metadata_url(opts.url)
  local host, port, path = url:match("^http://([%w%.%-]+):?(%d*)(/.*)$")
  if not host then error("credentials.cvm_role: url must be http://host[:port]/path", 2) end
  if opts.peer ~= nil and (type(opts.peer) ~= "string" or not opts.peer:match("^%d+%.%d+%.%d+%.%d+$")) then
    error("credentials.cvm_role: peer must be an IPv4 address", 2)
  end
  local target = { base = url, path = path, port = tonumber(port) or 80,
    host = (port == "" or port == "80") and host or (host .. ":" .. port) }
  local hostio = { decode = cjson.decode, clock = ngx.time }
  if opts.peer then
    target.addr = opts.peer
  elseif host:match("^%d+%.%d+%.%d+%.%d+$") then
    target.addr = host
  else
    local ok, list, why = pcall(resolve.ipv4, host)
    if not ok then
      hostio.unusable = format("metadata: the metadata host %s was not resolved: make the provider in"
        .. " init_worker_by_lua*, or give peer = \"IP\"", host)
    elseif not list then
      hostio.unusable = format("metadata: cannot resolve %s: %s", host, tostring(why))
    else
      target.addr = list[1]
    end
  end
  hostio.http_get = http_get(target)
  -- Single flight: the requests that find a refresh running wait here; the
  -- one refreshing wakes them all when it is done. Made on first use (a
  -- semaphore belongs to a worker, not to the master that runs init_by_lua).
  local sema
  function hostio.wait(seconds)
    sema = sema or require("ngx.semaphore").new()
    sema:wait(seconds)
  end
  function hostio.wake()
    if not sema then return end
    local waiting = -sema:count()
    if waiting > 0 then sema:post(waiting) end
  end
  return rules.cvm_role(opts, hostio)
end

-- default{getenv =, metadata_url =, metadata_timeout =, metadata_peer =,
-- clock =}: env, then profile, then the CVM role.
function _M.default(opts)
  opts = opts or {}
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  if opts.metadata_peer ~= nil then o.cvm_role = { peer = opts.metadata_peer } end
  return rules.default(_M, o)
end

-- The rewrite hook of /_eidkit/metadata: the path and Host of this GET.
function _M.rewrite()
  local e = ngx.ctx.eidkit
  if type(e) ~= "table" or not e.md_path then
    ngx.log(ngx.ERR, "eidkit: /_eidkit/metadata reached without an eidkit metadata GET")
    return ngx.exit(500)
  end
  ngx.var.eidkit_md_path, ngx.var.eidkit_md_host = e.md_path, e.md_host
end

return _M
