-- eidkit serve: the merchant backend (eidkit.gateway) on the embedded
-- non-blocking host (eidkit.serve), optionally with the simulator in the
-- same process (--sim). docs/internals/serve.md has the design.
local core = require "eidkit.core"
local args = require "eidkit.cli.args"
local gw_settings = require "eidkit.gateway.settings"

local stdout, stderr = io.stdout, io.stderr
local format = string.format
local type, pairs, ipairs, tostring, tonumber, pcall = type, pairs, ipairs, tostring, tonumber, pcall

local _M = {}

local spec = {
  { name = "config", arg = "FILE", help = "a Lua file returning a table of these options (keys with _ for -)" },
  { name = "listen", arg = "HOST:PORT", help = "address to serve on (default 127.0.0.1:8080; port 0 picks one)" },
  { name = "tls-cert", arg = "FILE", help = "serve HTTPS with this PEM certificate chain (needs --tls-key; a mini-program's wx.request calls HTTPS only)" },
  { name = "tls-key", arg = "FILE", help = "the PEM private key of --tls-cert (SIGHUP reads both again: a renewed certificate without a restart)" },
  { name = "merchant-id", arg = "ID", help = "your MerchantId (required unless --sim)" },
  { name = "ledger", arg = "URL", help = "the token ledger: sqlite:PATH or redis://[[USER]:PASSWORD@]HOST:PORT[/DB] (default: $EIDKIT_LEDGER, else " .. gw_settings.DEFAULT_LEDGER .. "; a password belongs in $EIDKIT_LEDGER or --config, not on the command line)" },
  { name = "ledger-workers", arg = "N", help = "threads (each with its own connection) running ledger calls (default 1 for sqlite:, 4 for redis://)" },
  { name = "policy", arg = "FILE", help = "the merchant policy script, run sandboxed; SIGHUP reloads it" },
  { name = "endpoint", arg = "URL", help = "the API endpoint (default https://faceid.tencentcloudapi.com)" },
  { name = "proxy", arg = "URL", help = "an HTTP proxy for the API calls (default: libcurl's https_proxy/no_proxy from the environment; '' for none)" },
  { name = "ca-file", arg = "FILE", help = "the CA certificates the API's TLS is checked against (default: the system's)" },
  { name = "h5-return-url", arg = "URL", help = "where GET /eid/h5/return redirects (enables that route)" },
  { name = "token-limit", arg = "COUNT/SECONDS", help = "tokens per subject (default 5/600; 'off' for none)" },
  { name = "upstream-rate", arg = "N", help = "calls per second per API action, at most (default 100; 'off' for none)" },
  { name = "upstream-concurrency", arg = "N", help = "API calls in flight at once, at most (default 1024)" },
  { name = "limits", arg = "WHERE", help = "where the buckets of --token-limit and --upstream-rate live: ledger (shared by every process on the ledger) or memory (this process); default ledger for redis://, memory for sqlite:" },
  { name = "token-fields", arg = "LIST", help = "body fields POST /eid/token accepts, comma-separated, of Name,IdCard,Extra,RedirectUrl,Config (default none)" },
  { name = "upstream-timeout", arg = "SECONDS", help = "one API attempt's timeout (default 10)" },
  { name = "upstream-deadline", arg = "SECONDS", help = "one API call's deadline, retries included (default 30)" },
  { name = "sweep-interval", arg = "SECONDS", help = "pull results the front end never reported this often (default 60; 0: off)" },
  { name = "access-log", arg = "FILE", help = "append the JSON access log to FILE, reopened on SIGHUP ('-': stdout; default: stderr)" },
  { name = "request-timeout", arg = "SECONDS", help = "a request's head and body must arrive within this (default 20)" },
  { name = "max-connections", arg = "N", help = format("connections held at once, at most (default %d; the longest-idle keep-alive ones are closed to keep a sixteenth free)", core.http_max_connections) },
  { name = "max-per-address", arg = "N", help = "connections one client address may hold (default 1024; raise it behind a proxy)" },
  { name = "real-ip-from", arg = "LIST", list = true, help = "trusted proxies (addresses or CIDRs, comma-separated; repeatable): from these, the client's address (access log, the policy's req.remote_addr) is the last untrusted one in X-Forwarded-For" },
  { name = "drain-timeout", arg = "SECONDS", help = "on SIGTERM/SIGINT, wait this long for requests in flight (default 10)" },
  { name = "check", help = "validate the configuration and the policy, then exit (0 ok, 2 not)" },
  { name = "sim", help = "run the simulator in this process and use it as the endpoint (development only)" },
  { name = "sim-listen", arg = "HOST:PORT", help = "the simulator's address (default 127.0.0.1:0)" },
  { name = "sim-seed", arg = "N", help = "the simulator's seed (default: random)" },
  { name = "sim-token-ttl", arg = "SECONDS", help = "the simulator's EidToken lifetime (default 7200)" },
  { name = "sim-fault", arg = "SPEC", list = true, help = "a simulator fault, as eidkit sim --fault; repeatable" },
  { name = "help", help = "show this help" },
}
_M.spec = spec

-- Keys a --config file may set besides the flags: gateway options that
-- need a table.
local CONFIG_ONLY = { token_params = "table", token_fields = "table", result_fields = "table" }

function _M.help()
  return "usage: eidkit serve [options]\n\n" .. [[
Serves the merchant backend routes of eidkit.gateway (POST /eid/token,
POST /eid/result, GET /eid/h5/return, GET /healthz, GET /metrics) on one
non-blocking loop: a request waiting on Tencent or on the ledger never holds
up another. The first line on stdout is "listening on URL"; with --sim the
second is "simulator on URL" (its control API is in docs/SIMULATOR.md).
Credentials come from the client's chain (TENCENTCLOUD_SECRET_ID/_KEY,
~/.tencentcloud/credentials, CVM role); they are never printed. With --sim
and no --policy, a demo authorize takes the subject from the
X-Eidkit-Demo-User header: never use it in production.
The access log is one JSON object per request, without bodies, names, ID
numbers or secrets, EidTokens shortened. SIGTERM/SIGINT stop accepting,
let requests in flight finish (up to --drain-timeout), answer the rest 503
and exit 0; SIGHUP reloads --policy (a broken one keeps the old), reads
--tls-cert and --tls-key again (new connections get a renewed certificate;
a broken pair keeps the old) and reopens the --access-log file (for log
rotation). Exit status: 0 stopped
by a signal, 2 bad usage or configuration, 1 failure.

options:
]] .. args.help(spec) .. [[


A --config file is Lua run in an empty environment, e.g.
  return { listen = "0.0.0.0:8080", merchant_id = "0NSJ...", ledger = "redis://10.0.0.5:6379/0",
           policy = "/etc/eidkit/policy.lua", token_params = { Config = { InputType = "1" } } }
Besides the options it may set token_params, token_fields (a list) and result_fields
(docs/internals/gateway.md). Flags win over the file.
]]
end

local function usage_error(msg)
  stderr:write("eidkit serve: ", msg, "\n")
  return 2
end

local function failure(msg)
  stderr:write("eidkit serve: ", msg, "\n")
  return 1
end

-- ------------------------------------------------------------ options

local by_key = {}
for _, f in ipairs(spec) do by_key[(f.name:gsub("%-", "_"))] = f end

-- The --config file: a table of option keys; nil, message when it is wrong
-- (eidkit.gateway.settings.read_config, which examples/openresty/run reads
-- its file with too).
local config_kinds = {}
for k, f in pairs(by_key) do
  if k ~= "config" and k ~= "help" and k ~= "check" then
    config_kinds[k] = f.list and "list" or f.arg and "arg" or "flag"
  end
end
local function read_config(path)
  return gw_settings.read_config(path, config_kinds, CONFIG_ONLY)
end

-- What a server refused, without the Lua position and the "bad argument"
-- wrapping: "host: expected an IPv4 or IPv6 address literal".
local function argument_problem(e)
  e = tostring(e):gsub("^[^:\n]+:%d+: ", "")
  return (e:gsub("^bad argument #1 to '[%w_.]+' %((.*)%)$", "%1"))
end

local function host_port(v, name)
  local host, port = v:match("^%[?([^%]]*)%]?:(%d+)$")
  port = port and math.tointeger(tonumber(port))
  if not host or not port or port > 65535 then
    return nil, format("--%s: expected HOST:PORT, got '%s'", name, v)
  end
  if host == "localhost" then host = "127.0.0.1" end
  local ipv4 = { host:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$") }
  local ok = host:find(":", 1, true) ~= nil or #ipv4 == 4
  for _, octet in ipairs(ipv4) do ok = ok and #octet <= 3 and tonumber(octet) <= 255 end
  if not ok then
    return nil, format("--%s: expected an IP address, got '%s'", name, host)
  end
  return { host = host, port = port }
end

-- The --tls-cert and --tls-key files, read and (check) checked as a pair,
-- as the server checks it: cert, key | nil, nil, message. The message never
-- quotes the files.
local function read_tls(files, check)
  local text = {}
  for i, flag in ipairs { "--tls-cert", "--tls-key" } do
    local f, ferr = io.open(files[i], "rb")
    if not f then return nil, nil, format("%s: cannot read %s", flag, tostring(ferr)) end
    text[i] = f:read("a")
    f:close()
  end
  if check then
    local ok, why = core.http_tls_check(text[1], text[2])
    if not ok then return nil, nil, "--tls-cert/--tls-key: " .. why end
  end
  return text[1], text[2]
end

-- Everything the run needs, from flags over the config file; nil, message.
local function settings(o)
  local s = {}
  local err
  s.listen, err = host_port(o.listen or "127.0.0.1:8080", "listen")
  if not s.listen then return nil, err end
  s.sim = o.sim == true
  for _, k in ipairs { "sim_listen", "sim_seed", "sim_token_ttl", "sim_fault" } do
    if o[k] ~= nil and not s.sim then return nil, format("--%s needs --sim", (k:gsub("_", "-"))) end
  end
  if s.sim and o.endpoint then return nil, "--endpoint and --sim exclude each other" end
  s.merchant_id = o.merchant_id
  if s.merchant_id ~= nil and (s.merchant_id == "" or s.merchant_id:find("%s")) then
    return nil, "--merchant-id: expected your MerchantId"
  end
  if not s.sim and not s.merchant_id then
    return nil, "--merchant-id is required (or --sim for a local simulator)"
  end
  -- $EIDKIT_LEDGER lets a URL with a password stay off the command line
  -- (which every local user can read).
  local url, label = gw_settings.ledger_source(o.ledger)
  local lerr
  s.ledger, lerr = gw_settings.ledger_url(url, label, core.ledger_check_url)
  if not s.ledger then return nil, lerr end
  local w = o.ledger_workers and math.tointeger(tonumber(o.ledger_workers))
  if o.ledger_workers and (not w or w < 1 or w > 64) then
    return nil, format("--ledger-workers: expected 1..64, got '%s'", o.ledger_workers)
  end
  -- SQLite takes one writer at a time, and with several connections its
  -- WAL never got checkpointed back to the start under load (it grew past
  -- 100 MB in bench/serve); Redis answers several connections at once.
  s.ledger_workers = w or (s.ledger:find("^sqlite:") and 1 or 4)
  s.endpoint = o.endpoint
  -- "" is a value here (no proxy, whatever the environment says).
  s.proxy = o.proxy
  if s.proxy and s.proxy ~= "" and not s.proxy:find("^%a[%w+.-]*://[^/]") then
    return nil, format("--proxy: expected a URL (http://HOST:PORT), got '%s'", gw_settings.shown_url(s.proxy))
  end
  if (o.tls_cert == nil) ~= (o.tls_key == nil) then return nil, "--tls-cert and --tls-key go together" end
  if o.tls_cert then
    s.tls_files = { o.tls_cert, o.tls_key }
    local terr
    s.tls_cert, s.tls_key, terr = read_tls(s.tls_files, true)
    if not s.tls_cert then return nil, terr end
  end
  s.ca_file = o.ca_file
  if s.ca_file then
    local f, ferr = io.open(s.ca_file, "rb")
    if not f then return nil, "--ca-file: cannot read " .. tostring(ferr) end
    f:close()
  end
  if s.endpoint and not s.endpoint:find("^https?://[^/]") then
    return nil, format("--endpoint: expected an http(s) URL, got '%s'", s.endpoint)
  end
  s.policy = o.policy
  s.h5_return_url = o.h5_return_url
  s.token_limit, err = gw_settings.token_limit(o.token_limit, "--token-limit")
  if err then return nil, err end
  s.upstream_limits, err = gw_settings.upstream_rate(o.upstream_rate, "--upstream-rate")
  if err then return nil, err end
  local conc = o.upstream_concurrency and math.tointeger(tonumber(o.upstream_concurrency))
  if o.upstream_concurrency and (not conc or conc < 1 or conc > 10000) then
    return nil, format("--upstream-concurrency: expected 1..10000, got '%s'", o.upstream_concurrency)
  end
  s.upstream_concurrency = conc or 1024
  s.limits = o.limits or (s.ledger:find("^redis://") and "ledger" or "memory")
  if s.limits ~= "ledger" and s.limits ~= "memory" then
    return nil, format("--limits: expected ledger or memory, got '%s'", o.limits)
  end
  s.token_fields = gw_settings.fields(o.token_fields)
  -- name, least value, default (nil: unset; the upstream ones are then the
  -- API client's own defaults). The first three nginx reads too
  -- (eidkit.gateway.settings.SECONDS_MIN).
  local mins = gw_settings.SECONDS_MIN
  local checks = {
    { "upstream_timeout", mins.upstream_timeout, nil },
    { "upstream_deadline", mins.upstream_deadline, nil },
    { "sweep_interval", mins.sweep_interval, 60 },
    { "drain_timeout", 0, 10 },
    { "request_timeout", 1, 20 },
    { "sim_token_ttl", 1, nil },
  }
  for _, c in ipairs(checks) do
    s[c[1]], err = gw_settings.seconds(o[c[1]], "--" .. c[1]:gsub("_", "-"), c[2])
    if err then return nil, err end
    if s[c[1]] == nil then s[c[1]] = c[3] end
  end
  s.request_timeout = math.max(1, math.floor(s.request_timeout))
  for _, c in ipairs { { "max_per_address", 1024 }, { "max_connections", core.http_max_connections } } do
    local key, v = c[1], o[c[1]]
    local n = v and math.tointeger(tonumber(v))
    if v and (not n or n < 1 or n > 1000000) then
      return nil, format("--%s: expected 1..1000000, got '%s'", key:gsub("_", "-"), tostring(v))
    end
    s[key] = n or c[2]
  end
  if o.real_ip_from then
    local rerr
    s.real_ip, rerr = require("eidkit.realip").new(table.concat(o.real_ip_from, ","))
    if not s.real_ip then return nil, "--real-ip-from: " .. rerr end
  end
  s.access_log = o.access_log
  if s.sim then
    s.sim_listen, err = host_port(o.sim_listen or "127.0.0.1:0", "sim-listen")
    if not s.sim_listen then return nil, err end
    if o.sim_seed then
      s.sim_seed = math.tointeger(tonumber(o.sim_seed))
      if not s.sim_seed then return nil, format("--sim-seed: expected an integer, got '%s'", o.sim_seed) end
    end
    s.sim_faults = {}
    local faults = require "eidkit.sim.faults"
    for _, spec_text in ipairs(o.sim_fault or {}) do
      local rule, ferr = faults.parse(spec_text)
      if not rule then return nil, "--sim-fault: " .. tostring(ferr) end
      s.sim_faults[#s.sim_faults + 1] = rule
    end
  end
  s.token_params, s.result_fields = o.token_params, o.result_fields
  return s
end

-- ------------------------------------------------------------ the parts

local function load_policy(path)
  local policy = require "eidkit.policy"
  local p, err = policy.load(path)
  if not p then return nil, format("--policy: %s", tostring(err)) end
  return p
end

-- The gateway and everything under it. For --check, ledger is a stand-in
-- and nothing connects anywhere; errors come back as nil, message.
local function build(s, host, ledger, policy, log)
  local eidkit_client = require "eidkit.client"
  local flow_mod = require "eidkit.flow"
  local gateway = require "eidkit.gateway"
  local metrics = require "eidkit.metrics"
  local registry = metrics.new()
  local copts = { endpoint = s.endpoint, timeout = s.upstream_timeout, deadline = s.upstream_deadline,
    max_in_flight = s.upstream_concurrency, proxy = s.proxy, ca_file = s.ca_file,
    -- libcurl on its own thread: the loop thread, which serves every
    -- request, then only queues calls and takes results (docs/internals/serve.md)
    thread = host ~= nil,
    logger = gateway.client_logger(registry), await = host and host.client_await or nil }
  if s.sim then
    local sim_mod = require "eidkit.sim"
    copts.secret_id, copts.secret_key = sim_mod.demo.SecretId, sim_mod.demo.SecretKey
  end
  local ok, client = pcall(eidkit_client.new, copts)
  if not ok then return nil, tostring(client) end
  local fok, flow = pcall(flow_mod.new, { client = client, ledger = ledger, merchant_id = s.merchant_id,
    policy = policy, sleep = host and host.sleep or nil })
  if not fok then return nil, tostring(flow) end
  local limiter = require "eidkit.limiter"
  local lim = s.limits == "ledger" and host and limiter.ledger(ledger) or nil
  local gok, gw = pcall(gateway.new, { flow = flow, metrics = registry, h5_return_url = s.h5_return_url,
    limiter = lim,
    token_limit = s.token_limit, upstream_limits = s.upstream_limits, token_params = s.token_params,
    token_fields = s.token_fields, result_fields = s.result_fields, access_log = log,
    on_error = function(m) stderr:write("eidkit serve: ", m, "\n") end })
  if not gok then return nil, (tostring(gw):gsub("^bad option", "configuration: bad option")) end
  return gw, flow, client
end

-- The access log's writer: a function(line) that never raises; a flush
-- the host calls after every turn of its loop (the lines of one turn go
-- out in one write instead of one write each), which hands the lines a
-- failed write lost to on_lost(n, why); and, for a file, reopen() for
-- SIGHUP, so that a log rotated away (renamed, then SIGHUP) is not written
-- on for ever: the new file is opened before the old one is let go.
local function access_log(path)
  local function open()
    local f, err = io.open(path, "a")
    if f then f:setvbuf("full") end
    return f, err
  end
  local out
  if path == nil then
    out = stderr
  elseif path == "-" then
    out = stdout
  else
    local err
    out, err = open()
    if not out then return nil, format("--access-log: %s", tostring(err)) end
  end
  local lines, n = {}, 0
  local log = { on_lost = function() end }
  function log.write(line)
    n = n + 1
    lines[n] = line
  end
  function log.flush()
    if n == 0 then return end
    lines[n + 1] = ""
    local ok, err = out:write(table.concat(lines, "\n", 1, n + 1))
    if ok then ok, err = out:flush() end
    local lost = n
    n = 0
    if not ok then log.on_lost(lost, "the access log could not be written: " .. tostring(err)) end
  end
  if out ~= stderr and out ~= stdout then
    function log.reopen()
      log.flush()
      local f, err = open()
      if not f then return nil, err end
      out:close()
      out = f
      return true
    end
  end
  return log
end

-- The simulator on its own http_server, stepped by the host.
local function start_sim(s, host)
  local sim_mod = require "eidkit.sim"
  local sim = sim_mod.new { seed = s.sim_seed, faults = s.sim_faults, token_ttl = s.sim_token_ttl and math.floor(s.sim_token_ttl),
    merchants = s.merchant_id and { s.merchant_id } or nil, log_requests = false,
    log = function(line) stderr:write("eidkit serve: simulator: ", line, "\n") end }
  local ok, srv = pcall(core.http_server, { host = s.sim_listen.host, port = s.sim_listen.port,
    max_body = sim_mod.MAX_BODY + 1024 * 1024,
    handler = function(req) return sim:handle(req) end,
    on_error = function(m) stderr:write("eidkit serve: simulator handler error: ", m, "\n") end })
  if not ok then return nil, "--sim-listen: " .. argument_problem(srv) end
  local url = format("http://%s:%d", s.sim_listen.host, srv:port())
  sim.base_url = url
  host:add_server(srv)
  return url, sim
end

local GC_PAUSE = 400

function _M.main(argv)
  -- A collection cycle when the heap has grown to 4x what the last one
  -- kept, not Lua's default 2x: every request leaves garbage, and half the
  -- cycles took 4 % off the loop thread's CPU at 1,000 requests in flight
  -- (bench/serve/ab), for about 10 % more RSS (docs/BENCHMARKS.md, "Serve").
  collectgarbage("incremental", GC_PAUSE)
  local o, positional = args.parse(spec, argv)
  if not o then return usage_error(positional .. " (see eidkit serve --help)") end
  if o.help then stdout:write(_M.help()) return 0 end
  if #positional > 0 then return usage_error("unexpected argument '" .. positional[1] .. "'") end
  if o.config then
    local cfg, err = read_config(o.config)
    if not cfg then return usage_error(err) end
    for k, v in pairs(o) do cfg[k] = v end
    o = cfg
  end
  local s, err = settings(o)
  if not s then return usage_error(err) end
  if s.sim and not s.merchant_id then s.merchant_id = require("eidkit.sim").demo.MerchantId end

  local policy
  if s.policy then
    policy, err = load_policy(s.policy)
    if not policy then return usage_error(err) end
  elseif s.sim then
    -- The demo authorize of --sim without --policy: loud on purpose (below).
    policy = gw_settings.DEMO_POLICY
  end

  if o.check then
    local ok, berr = build(s, nil, { claim = function() end }, policy, function() end)
    if not ok then return usage_error(berr) end
    stdout:write("eidkit serve: configuration ok\n")
    return 0
  end

  local log, lerr = access_log(s.access_log)
  if not log then return usage_error(lerr) end

  local serve = require "eidkit.serve"
  local host = assert(serve.new { on_error = function(m) stderr:write("eidkit serve: ", m, "\n") end })
  local sim_url
  if s.sim then
    sim_url, err = start_sim(s, host)
    if not sim_url then host:close() return failure(err) end
    s.endpoint = sim_url
  end
  if not s.policy and s.sim then
    stderr:write("eidkit serve: ", require("eidkit.gateway.settings").DEMO_WARNING, "\n")
  end

  local ledger_mod = require "eidkit.ledger"
  local lopts = { workers = s.ledger_workers, await = host.ledger_await }
  for k, v in pairs(require("eidkit.gateway").LEDGER_OPTIONS) do lopts[k] = v end
  local ledger, lderr = ledger_mod.open(s.ledger, lopts)
  if not ledger then host:close() return failure("cannot open the ledger: " .. tostring(lderr)) end

  local gw, flow, client = build(s, host, ledger, policy, log.write)
  if not gw then ledger:close() host:close() return usage_error(flow) end
  log.on_lost = function(n, why) gw:log_lost(n, why) end
  if not s.sim then
    -- Credentials now, not at the first request; the reason never holds a secret.
    local creds, why = client.provider:get()
    if not creds then
      ledger:close() host:close()
      return failure("cannot sign API calls: " .. tostring(type(why) == "table" and why.message or why))
    end
  end

  local ok, srv = pcall(host.mount, host, gw, { host = s.listen.host, port = s.listen.port,
    request_timeout = s.request_timeout, max_per_address = s.max_per_address,
    max_connections = s.max_connections, real_ip = s.real_ip, tls_cert = s.tls_cert, tls_key = s.tls_key })
  s.tls_key = nil -- held by the server now; nothing here needs it again
  if not ok then
    ledger:close() host:close()
    local why = argument_problem(srv)
    -- What GnuTLS refused is the files', not the address's.
    local tls = why:match("^tls_cert/tls_key: (.*)$")
    if tls then return usage_error("--tls-cert/--tls-key: " .. tls) end
    return failure("--listen: " .. why)
  end
  stdout:setvbuf("line")
  stdout:write(format("listening on %s://%s:%d\n", s.tls_cert and "https" or "http", s.listen.host:find(":", 1, true)
    and "[" .. s.listen.host .. "]" or s.listen.host, srv:port()))
  if sim_url then stdout:write("simulator on ", sim_url, "\n") end
  stdout:flush()

  if s.sweep_interval > 0 then
    host:every(s.sweep_interval, "the sweep", function()
      local n, report = flow:sweep { limit = 100 }
      if not n then
        stderr:write("eidkit serve: sweep failed: ", tostring(report), "\n")
      elseif #report.failures > 0 then
        stderr:write(format("eidkit serve: sweep: %d recorded, %d failed\n", n, #report.failures))
      end
    end)
  end

  host:on_step(log.flush)
  local why, cut = host:run { drain_timeout = s.drain_timeout, on_reload = function()
    if log.reopen then
      local rok, rerr = log.reopen()
      if rok then
        stderr:write("eidkit serve: SIGHUP: access log reopened: ", s.access_log, "\n")
      else
        stderr:write("eidkit serve: SIGHUP: access log not reopened, writing on the old file: ",
          tostring(rerr), "\n")
      end
    end
    if s.tls_files then
      -- A renewed certificate: new connections present it, open ones keep
      -- theirs. set_tls makes http_tls_check's check itself.
      local cert, key, terr = read_tls(s.tls_files, false)
      local tok, twhy = false, terr
      if cert then
        tok, twhy = srv:set_tls(cert, key)
        if not tok then twhy = "--tls-cert/--tls-key: " .. tostring(twhy) end
      end
      if tok then
        stderr:write("eidkit serve: SIGHUP: TLS certificate reloaded from ", s.tls_files[1], "\n")
      else
        stderr:write("eidkit serve: SIGHUP: TLS certificate not reloaded, keeping the old one: ",
          tostring(twhy), "\n")
      end
    end
    if not s.policy then
      if not log.reopen and not s.tls_files then
        stderr:write("eidkit serve: SIGHUP: nothing to reload (no --policy, --access-log FILE or --tls-cert)\n")
      end
      return
    end
    local p, perr = load_policy(s.policy)
    if not p then
      stderr:write("eidkit serve: SIGHUP: policy not reloaded, keeping the old one: ", perr, "\n")
      return
    end
    flow:set_policy(p)
    stderr:write("eidkit serve: SIGHUP: policy reloaded from ", s.policy, "\n")
  end }
  log.flush()
  host:close()
  client:close()
  ledger:close()
  stderr:write(format("eidkit serve: stopped (%s)%s\n", why,
    cut > 0 and format("; %d request%s answered 503 at the drain deadline", cut, cut == 1 and "" or "s") or ""))
  return 0
end

return _M
