-- eidkit.openresty.upstream: the hooks of nginx/eidkit.conf and
-- nginx/eidkit_location.conf, run inside the subrequest that carries one
-- attempt of eidkit.openresty.client. They read and write the table the
-- client passed as the subrequest's ngx.ctx (capture's `ctx` option):
--   in:  eidkit = { scheme, pool, sni, addr, port, connect_timeout, timeout,
--                   headers = {Name = value} }
--   out: eidkit.filtered (the header filter ran), connect_time and
--        header_time ($upstream_connect_time / $upstream_header_time).
-- LuaJIT in nginx only.
local ngx = ngx
local balancer = require "ngx.balancer"

local _M = {}

-- Signed header -> the variable nginx/eidkit_location.conf sends it from.
local VARS = {
  Host = "eidkit_host", Authorization = "eidkit_authorization", ["Content-Type"] = "eidkit_content_type",
  ["X-TC-Action"] = "eidkit_action", ["X-TC-Version"] = "eidkit_version",
  ["X-TC-Timestamp"] = "eidkit_timestamp", ["X-TC-Region"] = "eidkit_region",
  ["X-TC-Token"] = "eidkit_token", ["X-TC-Language"] = "eidkit_language",
  ["X-TC-TraceId"] = "eidkit_trace_id", ["X-TC-RequestClient"] = "eidkit_request_client",
}
_M.headers = VARS

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

function _M.rewrite()
  local e = attempt()
  local var = ngx.var
  var.eidkit_scheme, var.eidkit_pool, var.eidkit_sni = e.scheme, e.pool, e.sni
  for name, v in pairs(e.headers) do
    local key = VARS[name]
    if key then var[key] = v end
  end
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
