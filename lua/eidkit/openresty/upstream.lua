-- eidkit.openresty.upstream: the hooks of nginx/eidkit.conf and
-- nginx/eidkit_location.conf, run inside the subrequest that carries one
-- attempt of eidkit.openresty.client. They read and write the table the
-- client passed as the subrequest's ngx.ctx (capture's `ctx` option):
--   in:  eidkit = { addr, port, connect_timeout, timeout } (the scheme, pool,
--        SNI and signed headers arrive as the location's variables)
--   out: eidkit.filtered (the header filter ran), connect_time and
--        header_time ($upstream_connect_time / $upstream_header_time).
-- LuaJIT in nginx only.
local ngx = ngx
local balancer = require "ngx.balancer"

local _M = {}

local function attempt()
  local e = ngx.ctx.eidkit
  if type(e) ~= "table" then
    -- Reached without eidkit.openresty.client (it is internal, but a
    -- merchant's own capture could): refuse rather than proxy nothing.
    ngx.log(ngx.ERR, "eidkit: /_eidkit/upstream reached without an eidkit attempt")
    return ngx.exit(500)
  end
  return e
end

function _M.balancer()
  local e = attempt()
  local ok, err = balancer.set_current_peer(e.addr, e.port)
  if not ok then
    e.balancer_error = err
    ngx.log(ngx.ERR, "eidkit: cannot use peer ", e.addr, ":", e.port, ": ", err)
    return ngx.exit(500)
  end
  -- Per operation (connect, each send, each read), in seconds.
  balancer.set_timeouts(e.connect_timeout, e.timeout, e.timeout)
end

function _M.header_filter()
  local e = ngx.ctx.eidkit
  if type(e) ~= "table" then return end
  local var = ngx.var
  e.filtered = true
  e.connect_time = var.upstream_connect_time
  e.header_time = var.upstream_header_time
end

return _M
