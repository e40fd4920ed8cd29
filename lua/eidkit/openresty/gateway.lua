-- eidkit.openresty.gateway: eidkit.gateway mounted in nginx. The same
-- gateway module as `eidkit serve` (lua/eidkit/gateway.lua), so the same
-- routes and answers; this file only turns nginx's request into the
-- gateway's req table and its resp back, and builds what the gateway stands
-- on in each worker (docs/OPENRESTY.md, "The gateway").
--
--   init_by_lua_block {                    -- the master: checked before any worker forks
--     require("eidkit.openresty.gateway").configure {
--       endpoint = "https://faceid.tencentcloudapi.com", secret_id = ..., secret_key = ...,
--       merchant_id = "...", ledger = "redis://127.0.0.1:6379/0", policy = "/etc/eidkit/policy.lua" } }
--   init_worker_by_lua_block { require("eidkit.openresty.gateway").start() }
--   location /eid/ { content_by_lua_block { require("eidkit.openresty.gateway").serve() } }
--
-- Per worker: an eidkit.openresty.client, an eidkit.openresty.ledger (Redis
-- over cosockets; or sqlite:PATH through the FFI, a blocking local call), an
-- eidkit.flow and an eidkit.gateway whose metrics live in the
-- `eidkit_metrics` shared dict (summed over workers) and whose buckets live
-- in the `eidkit_limits` shared dict (shared by workers) or, with
-- limits = "ledger", in Redis through the ledger's take (shared by every
-- node on that Redis). The sweep: an ngx.timer.every in each worker; a
-- shared-dict lock with an expiry lets one worker at a time run it.
local ngx = ngx
local gateway = require "eidkit.gateway"
local metrics = require "eidkit.metrics"
local limiter = require "eidkit.limiter"
local gw_settings = require "eidkit.gateway.settings"

local type, error, pairs, tostring, tonumber, pcall = type, error, pairs, tostring, tonumber, pcall
local format = string.format

local _M = {}

-- The shared dicts nginx/eidkit.conf declares.
_M.METRICS_DICT, _M.LIMITS_DICT, _M.SWEEP_DICT = "eidkit_metrics", "eidkit_limits", "eidkit_sweep"

-- The demo authorize for the simulator (`eidkit serve --sim`'s, from
-- eidkit.gateway.settings): whoever sends the header is that user. Never in
-- production.
_M.DEMO_POLICY = gw_settings.DEMO_POLICY

local settings -- from configure, inherited by the workers
local state -- per worker: { gw, flow, ledger, client }

-- ------------------------------------------------------------ settings

local KNOWN = { endpoint = 1, peer = 1, secret_id = 1, secret_key = 1, merchant_id = 1, ledger = 1,
  policy = 1, demo_authorize = 1, limits = 1, token_limit = 1, upstream_rate = 1, token_fields = 1,
  token_params = 1, result_fields = 1, h5_return_url = 1, upstream_timeout = 1, upstream_deadline = 1,
  sweep_interval = 1, sweep_max = 1, sweep_socket = 1, access_log = 1 }

local function bad(name, what) error(format("eidkit gateway: %s: %s", name, what), 3) end

-- eid_ledger_check_url: through the FFI in nginx; configure run under Lua
-- 5.4 (the settings spec does) reaches the same C through eidkit.core.
local function check_ledger_url(url)
  local has_ffi, ffi = pcall(require, "ffi")
  if not has_ffi then return require("eidkit.core").ledger_check_url(url) end
  local C = require("eidkit.ffi").lib()
  local err = ffi.new("eid_error")
  if C.eid_ledger_check_url(url, err) ~= 0 then return nil, ffi.string(err.message) end
  return true
end

-- eidkit.gateway.settings.seconds, raising; "" (an env variable set empty)
-- is unset.
local function seconds(v, name, min, default)
  if v == "" then v = nil end
  local n, err = gw_settings.seconds(v, name, min)
  if err then error("eidkit gateway: " .. err, 3) end
  if n == nil then return default end
  return n
end

-- configure(opts): check and keep the settings (in init_by_lua, so a
-- mistake stops nginx from starting, with the message on stderr). Raises.
function _M.configure(opts)
  if type(opts) ~= "table" then error("bad argument #1 to 'configure' (expected a table)", 2) end
  for k in pairs(opts) do
    if not KNOWN[k] then bad(tostring(k), "unknown setting") end
  end
  local s = {}
  for k, v in pairs(opts) do if v ~= "" then s[k] = v end end
  if type(s.merchant_id) ~= "string" or s.merchant_id:find("%s") then bad("merchant_id", "expected your MerchantId") end
  if type(s.secret_id) ~= "string" or type(s.secret_key) ~= "string" then
    bad("secret_id/secret_key", "both are required")
  end
  if type(s.ledger) ~= "table" then
    local _, lerr = gw_settings.ledger_url(s.ledger, "ledger", check_ledger_url)
    if lerr then bad("ledger", lerr:sub(#"ledger: " + 1)) end
  end
  if s.policy == nil and not s.demo_authorize then
    bad("policy", "a policy script (its authorize names the user) is required, or demo_authorize for the simulator")
  end
  if type(s.policy) == "string" then
    -- Loaded here, in the master, and the workers inherit the hooks: a
    -- script that does not load stops nginx from starting, and an nginx
    -- reload (HUP) with a broken one fails in the master and keeps the
    -- workers that run the old one, as eidkit serve's SIGHUP keeps the old
    -- policy.
    local policy_mod = require "eidkit.policy"
    local p, perr = policy_mod.load(s.policy)
    if not p then bad("policy", tostring(perr and perr.message or perr)) end
    local mok, merr = pcall(policy_mod.merge, p)
    if not mok then bad("policy", tostring(merr)) end
    s.policy = p
  end
  -- Redis is shared by every node; SQLite is one node's file, and each take
  -- there would be a blocking call: its buckets stay in the shared dict.
  s.limits = s.limits or (type(s.ledger) == "string" and s.ledger:find("^redis://") and "ledger" or "shared")
  if s.limits ~= "ledger" and s.limits ~= "shared" then
    bad("limits", format("expected ledger or shared, got '%s'", tostring(s.limits)))
  end
  local err
  s.token_limit, err = gw_settings.token_limit(s.token_limit, "token_limit")
  if err then error("eidkit gateway: " .. err, 2) end
  s.upstream_limits, err = gw_settings.upstream_rate(s.upstream_rate, "upstream_rate")
  if err then error("eidkit gateway: " .. err, 2) end
  s.upstream_rate = nil
  s.token_fields, s.result_fields = gw_settings.fields(s.token_fields), gw_settings.fields(s.result_fields)
  -- Unset upstream ones: the API client's own defaults.
  local mins = gw_settings.SECONDS_MIN
  s.upstream_timeout = seconds(s.upstream_timeout, "upstream_timeout", mins.upstream_timeout)
  s.upstream_deadline = seconds(s.upstream_deadline, "upstream_deadline", mins.upstream_deadline)
  s.sweep_interval = seconds(s.sweep_interval, "sweep_interval", mins.sweep_interval, 60)
  s.sweep_max = seconds(s.sweep_max, "sweep_max", 0.001, 600)
  if s.sweep_interval > 0 and type(s.sweep_socket) ~= "string" then
    bad("sweep_socket", "the unix socket path of the internal sweep server (or sweep_interval = 0)")
  end
  s.access_log = s.access_log == true or s.access_log == "on" or s.access_log == "1"
  -- The gateway's own option checks, now rather than in every worker.
  local none = function() end
  local ok
  ok, err = pcall(gateway.new, { flow = { start = none, finish = none, authorize = none },
    token_limit = s.token_limit, upstream_limits = s.upstream_limits, token_fields = s.token_fields,
    token_params = s.token_params, result_fields = s.result_fields, h5_return_url = s.h5_return_url })
  if not ok then error("eidkit gateway: " .. tostring(err), 2) end
  settings = s
end

-- ------------------------------------------------------------ a worker

local function log_error(message)
  ngx.log(ngx.ERR, "eidkit gateway: ", message)
end

local function build()
  local s = settings
  local reg = metrics.new { store = require("eidkit.openresty.metrics_store").new(ngx.shared[_M.METRICS_DICT]) }
  local client = require("eidkit.openresty.client").new { endpoint = s.endpoint, peer = s.peer,
    secret_id = s.secret_id, secret_key = s.secret_key, timeout = s.upstream_timeout,
    deadline = s.upstream_deadline, logger = gateway.client_logger(reg) }
  local ledger = s.ledger
  if type(ledger) == "string" then
    local err
    ledger, err = require("eidkit.openresty.ledger").open(ledger, gateway.LEDGER_OPTIONS)
    if not ledger then error("cannot open the ledger: " .. tostring(err), 0) end
  end
  local policy = s.policy
  if policy == nil then policy = _M.DEMO_POLICY end
  local flow = require("eidkit.flow").new { client = client, ledger = ledger, merchant_id = s.merchant_id,
    policy = policy, clock = ngx.now }
  local lim
  if s.limits == "ledger" then
    lim = limiter.ledger(ledger)
  else
    lim = require("eidkit.openresty.limiter").new(ngx.shared[_M.LIMITS_DICT])
  end
  local gw = gateway.new { flow = flow, metrics = reg, limiter = lim, clock = ngx.now,
    token_limit = s.token_limit, upstream_limits = s.upstream_limits, token_fields = s.token_fields,
    token_params = s.token_params, result_fields = s.result_fields, h5_return_url = s.h5_return_url,
    access_log = s.access_log and function(line) ngx.log(ngx.NOTICE, "eidkit access ", line) end or nil,
    on_log_failure = log_error, on_error = log_error }
  local sweeps = reg:counter("eidkit_sweep_runs_total",
    "Sweeps started, over all workers (one worker at a time runs it).")
  return { gw = gw, flow = flow, ledger = ledger, client = client, sweeps = sweeps }
end

-- The sweep, once per interval over all workers. Two shared-dict locks,
-- each taken with dict:add (atomic across workers) and each with an expiry,
-- so a worker that dies holding one stops no one for longer than that:
--   sweep_next     taken by the first worker's timer in an interval, held
--                  for (most of) the interval: the other timers skip it;
--   sweep_running  taken by the sweep itself, released when it ends (or
--                  after sweep_max, 600 s by default): a sweep longer than
--                  the interval is never joined by a second one.
-- The timer cannot make the API calls (no subrequests in a timer): it
-- asks the internal sweep server over its unix socket, where flow:sweep
-- runs in a request like any other.
local function sweep_tick(premature)
  if premature then return end
  local dict = ngx.shared[_M.SWEEP_DICT]
  if not dict:add("sweep_next", ngx.worker.pid(), settings.sweep_interval * 0.9) then return end
  local sock = ngx.socket.tcp()
  sock:settimeout(settings.sweep_max * 1000)
  local cok, cerr = sock:connect("unix:" .. settings.sweep_socket)
  if not cok then
    log_error("the sweep could not reach the internal sweep server: " .. tostring(cerr))
    return
  end
  sock:send("POST /_eidkit/sweep HTTP/1.0\r\nHost: eidkit\r\nContent-Length: 0\r\n\r\n")
  local status = sock:receive("*l")
  sock:close()
  if status and status:find(" 409 ", 1, true) then return end -- one still running
  if not status or not status:find(" 200 ", 1, true) then
    log_error("the sweep failed: " .. tostring(status))
  end
end

-- start(): build this worker's gateway (init_worker_by_lua) and start its
-- sweep timer.
function _M.start()
  if not settings then error("eidkit gateway: configure() was not called in init_by_lua", 2) end
  local ok, st = pcall(build)
  if not ok then
    log_error("this worker cannot serve: " .. tostring(st))
    return
  end
  state = st
  if settings.sweep_interval > 0 then
    local tok, terr = ngx.timer.every(settings.sweep_interval, sweep_tick)
    if not tok then log_error("no sweep timer: " .. tostring(terr)) end
  end
end

-- The request as eidkit.gateway reads it, or nil when the body is too large.
local function request()
  local max = state.gw.max_body
  local len = tonumber(ngx.var.http_content_length)
  if len and len > max then return nil end
  ngx.req.read_body()
  local body = ngx.req.get_body_data()
  if body == nil and ngx.req.get_body_file() then return nil end -- larger than the buffer
  return { method = ngx.req.get_method(), path = ngx.var.uri, query = ngx.var.args or "",
    headers = ngx.req.get_headers(100), body = body, remote_addr = ngx.var.remote_addr }
end

local function respond(resp)
  ngx.status = resp.status
  for k, v in pairs(resp.headers or {}) do ngx.header[k] = v end
  -- Headers out first: ngx.exit(303) with nothing sent would have nginx
  -- answer with its own HTML page instead.
  if resp.body and resp.body ~= "" then ngx.print(resp.body) else ngx.send_headers() end
  return ngx.exit(resp.status)
end

local UNAVAILABLE = { status = 503, headers = { ["Content-Type"] = "application/json",
  ["Cache-Control"] = "no-store", ["Retry-After"] = "1" },
  body = '{"error":{"code":"unavailable","message":"the gateway is not running in this worker"}}' }

-- serve(): answer this request through the gateway (content_by_lua).
function _M.serve()
  if not state then return respond(UNAVAILABLE) end
  local req = request()
  if not req then return _M.too_large() end
  return respond(state.gw:handle(req))
end

-- too_large(): the gateway's 413 (error_page 413 for a body nginx refused
-- itself, by client_max_body_size, before any of it was buffered).
function _M.too_large()
  ngx.req.discard_body()
  return respond(gateway.error_response("too_large"))
end

-- sweep(): the internal sweep server's handler: one flow:sweep, unless
-- one is running already (409).
function _M.sweep()
  if not state then return respond(UNAVAILABLE) end
  local dict = ngx.shared[_M.SWEEP_DICT]
  if not dict:add("sweep_running", ngx.worker.pid(), settings.sweep_max) then return ngx.exit(409) end
  state.sweeps:inc()
  local ok, n, report = pcall(state.flow.sweep, state.flow, { limit = 100 })
  -- Ours still (a sweep past sweep_max lost it): freeing another's would let a third in.
  if dict:get("sweep_running") == ngx.worker.pid() then dict:delete("sweep_running") end
  if not ok or not n then
    log_error("sweep failed: " .. tostring(ok and report or n))
    return ngx.exit(500)
  end
  if report and report.failures and #report.failures > 0 then
    ngx.log(ngx.WARN, format("eidkit gateway: sweep: %d recorded, %d failed", n, #report.failures))
  end
  ngx.say(n)
end

-- The worker's parts, for specs and for a merchant's own locations.
function _M.state() return state end

return _M
