-- eidkit sim: serve the local E证通 simulator (lua/eidkit/sim) over HTTP(S)
-- with core.http_server until SIGINT/SIGTERM.
local core = require "eidkit.core"
local args = require "eidkit.cli.args"
local sim = require "eidkit.sim"
local faults = require "eidkit.sim.faults"
local cjson = require "cjson.safe"

local stdout, stderr = io.stdout, io.stderr
local format, insert = string.format, table.insert

local read_file = args.read_file

local _M = {}

local spec = {
  { name = "listen", arg = "HOST:PORT", help = "address to serve on (default 127.0.0.1:8790; port 0 picks one)" },
  { name = "port-file", arg = "FILE", help = "also write the bound port to FILE" },
  { name = "tls-cert", arg = "FILE", help = "serve HTTPS with this PEM certificate (needs --tls-key)" },
  { name = "tls-key", arg = "FILE", help = "the PEM private key for --tls-cert" },
  { name = "credential", arg = "ID:KEY[:TOKEN]", list = true,
    help = "accept this SecretId/SecretKey (and session token); repeatable" },
  { name = "merchant", arg = "ID", list = true, help = "register this MerchantId; repeatable" },
  { name = "config", arg = "FILE", help = "JSON config file (see docs/SIMULATOR.md)" },
  { name = "token-ttl", arg = "SECONDS", help = "EidToken lifetime (default 7200; Tencent's API docs say 600)" },
  { name = "max-tokens", arg = "N", help = "most unexpired tokens held in memory (default 100000)" },
  { name = "seed", arg = "N", help = "seed for tokens, request ids and faults (default: random)" },
  { name = "fault", arg = "SPEC", list = true,
    help = "inject a fault: ACTION:KIND[:key=value,...]; repeatable (see below)" },
  { name = "tencent-limits", help = "answer RequestLimitExceeded above Tencent's per-action QPS" },
  { name = "clock-offset", arg = "SECONDS", help = "run the simulated clock this far from real time" },
  { name = "encryption-key", arg = "FILE", list = true,
    help = "PEM private key standing in for Tencent's (RSA for AES-256-CBC, SM2 for SM4-GCM): "
      .. "decrypt GetEidToken's Encryption; repeatable" },
  { name = "eidinfo-public-key", arg = "FILE",
    help = "the merchant's SM2 public key (PEM): GetEidResult returns EidInfo encrypted to it after a pass" },
  { name = "ocr-identity", arg = "NAME:IDNUM",
    help = "identity in EidInfo for tokens issued without Name/IdCard (default a fictional one)" },
  { name = "public-url", arg = "URL", help = "base of the H5 Url returned by GetEidToken (default: the listen URL)" },
  { name = "attempt-log", arg = "FILE",
    help = "append one JSON line per attempt the simulated users make, with its Beijing day" },
  { name = "verbose", help = "log one line per request to stderr" },
  { name = "help", help = "show this help" },
}

function _M.help()
  return "usage: eidkit sim [options]\n\n" .. [[
Serves a local stand-in for faceid.tencentcloudapi.com: GetEidToken,
GetEidResult and CheckEidTokenStatus with TC3 signature checks and
Tencent's error codes, plus an unsigned control API under /sim/ to play
the user (start, finish with an ErrCode), move the clock and set faults,
and an H5 page at /sim/h5?token=... The first line on stdout is
"listening on URL". Without --credential/--merchant (or a config file) a
demo SecretId, SecretKey and MerchantId are used and printed; they are not
secret. Keep the simulator on loopback: the control API has no auth.

options:
]] .. args.help(spec) .. [[


faults (--fault ACTION:KIND[:key=value,...], ACTION may be *):
  latency:ms=200,jitter=50   delay the answer          throttle   RequestLimitExceeded
  error:code=InternalError   that error code           http:status=503   a gateway error page
  reset   TCP reset   truncate   cut body short   malformed   bad JSON   slow:ms=2000   slow body
  each fires always, or on the first=N calls, or at rate=P; --seed replays the same faults.
]]
end

-- The message on stderr; the exit status (2: the command line or its input is wrong).
local function exit_error(msg)
  stderr:write("eidkit sim: ", msg, "\n")
  return 2
end


local function integer_flag(value, name, min)
  local n = value and math.tointeger(tonumber(value))
  if value and (not n or not value:match("^%-?%d+$") or n < min) then
    return nil, format("--%s: expected an integer >= %d, got '%s'", name, min, value)
  end
  return n
end

-- Options for sim.new from the config file, then flags (flags win).
local function options(o)
  local cfg = {}
  if o.config then
    local text, err = read_file(o.config)
    if not text then return nil, "--config: " .. tostring(err) end
    local decoded, jerr = cjson.decode(text)
    if type(decoded) ~= "table" then
      return nil, format("--config %s: not a JSON object (%s)", o.config, jerr or "wrong type")
    end
    cfg = decoded
    local known = { credentials = true, merchants = true, token_ttl = true, max_tokens = true,
      seed = true, faults = true, tencent_limits = true, listen = true, public_url = true }
    for k in pairs(cfg) do
      if not known[k] then return nil, format("--config %s: unknown key '%s'", o.config, tostring(k)) end
    end
  end
  local opts = {
    credentials = {}, merchants = {}, faults = {},
    -- lua-cjson decodes every number as a float; integral ones are wanted.
    token_ttl = math.tointeger(cfg.token_ttl) or cfg.token_ttl,
    max_tokens = math.tointeger(cfg.max_tokens) or cfg.max_tokens,
    seed = math.tointeger(cfg.seed) or cfg.seed,
    tencent_limits = cfg.tencent_limits == true or o.tencent_limits == true,
  }
  for i, c in ipairs(type(cfg.credentials) == "table" and cfg.credentials or {}) do
    if type(c) ~= "table" or type(c.SecretId) ~= "string" or type(c.SecretKey) ~= "string" then
      return nil, format("--config: credentials[%d] needs SecretId and SecretKey strings", i)
    end
    insert(opts.credentials, { SecretId = c.SecretId, SecretKey = c.SecretKey,
      Token = type(c.Token) == "string" and c.Token or nil })
  end
  for _, m in ipairs(type(cfg.merchants) == "table" and cfg.merchants or {}) do
    insert(opts.merchants, tostring(m))
  end
  for i, r in ipairs(type(cfg.faults) == "table" and cfg.faults or {}) do
    local rule, err = faults.check(r, format("--config: faults[%d]", i))
    if not rule then return nil, err end
    insert(opts.faults, rule)
  end
  for _, c in ipairs(o.credential or {}) do
    local id, key, token = c:match("^([^:]+):([^:]+):?(.*)$")
    if not id then return nil, "--credential: expected SECRET_ID:SECRET_KEY[:SESSION_TOKEN]" end
    insert(opts.credentials, { SecretId = id, SecretKey = key, Token = token ~= "" and token or nil })
  end
  for _, m in ipairs(o.merchant or {}) do insert(opts.merchants, m) end
  opts.encryption_keys = o.encryption_key
  opts.eidinfo_public_key = o.eidinfo_public_key
  if o.ocr_identity then
    local name, idnum = o.ocr_identity:match("^(.+):([%w]+)$")
    if not name then return nil, "--ocr-identity: expected NAME:IDNUM" end
    opts.ocr_identity = { name = name, idnum = idnum }
  end
  for _, s in ipairs(o.fault or {}) do
    local rule, err = faults.parse(s)
    if not rule then return nil, err end
    insert(opts.faults, rule)
  end
  local err
  for _, f in ipairs { { "token_ttl", "token-ttl", 1 }, { "max_tokens", "max-tokens", 1 },
    { "seed", "seed", math.mininteger }, { "clock_offset", "clock-offset", math.mininteger } } do
    local v = o[f[1]]
    if v then
      opts[f[1]], err = integer_flag(v, f[2], f[3])
      if err then return nil, err end
    end
  end
  if opts.seed ~= nil and math.type(opts.seed) ~= "integer" then
    return nil, "--config: seed must be an integer"
  end
  for _, k in ipairs { "token_ttl", "max_tokens" } do
    if opts[k] ~= nil and (math.type(opts[k]) ~= "integer" or opts[k] < 1) then
      return nil, format("--config: %s must be a positive integer", k)
    end
  end
  return opts, cfg
end

function _M.main(argv)
  local o, positional = args.parse(spec, argv)
  if not o then return exit_error(positional .. " (see eidkit sim --help)") end
  if o.help then stdout:write(_M.help()) return 0 end
  if #positional > 0 then return exit_error("unexpected argument '" .. positional[1] .. "'") end
  local opts, cfg = options(o)
  if not opts then return exit_error(cfg) end

  local listen = o.listen or cfg.listen or "127.0.0.1:8790"
  local host, port = listen:match("^%[?([^%]]*)%]?:(%d+)$")
  port = port and math.tointeger(tonumber(port))
  if not host or not port or port > 65535 then
    return exit_error(format("--listen: expected HOST:PORT, got '%s'", listen))
  end
  if not (host:match("^127%.") or host == "localhost" or host == "::1") then
    stderr:write("eidkit sim: warning: listening beyond loopback; the control API has no auth\n")
  end
  if host == "localhost" then host = "127.0.0.1" end
  if (o.tls_cert == nil) ~= (o.tls_key == nil) then
    return exit_error("--tls-cert and --tls-key go together")
  end
  local cert, key
  if o.tls_cert then
    local err
    cert, err = read_file(o.tls_cert)
    if not cert then return exit_error("--tls-cert: " .. tostring(err)) end
    key, err = read_file(o.tls_key)
    if not key then return exit_error("--tls-key: " .. tostring(err)) end
  end

  opts.log = function(line) stderr:write("eidkit sim: ", line, "\n") end
  opts.log_requests = o.verbose == true -- else only internal errors
  if o.attempt_log then
    local f, ferr = io.open(o.attempt_log, "a")
    if not f then return exit_error("--attempt-log: " .. tostring(ferr)) end
    f:setvbuf("line") -- each attempt is on disk when the control call answers
    opts.attempt_log = function(line) f:write(line, "\n") end
  end
  local ok, s = pcall(sim.new, opts)
  if not ok then return exit_error(tostring(s)) end

  local srv_ok, srv = pcall(core.http_server, {
    host = host, port = port, tls_cert = cert, tls_key = key,
    max_body = sim.MAX_BODY + 1024 * 1024, -- the simulator itself answers RequestSizeLimitExceeded
    handler = function(req) return s:handle(req) end,
    on_error = function(msg) stderr:write("eidkit sim: handler error: ", msg, "\n") end,
  })
  if not srv_ok then return exit_error(tostring(srv):gsub("^bad argument #1 to '[%w_]+' ", "")) end
  local url = format("%s://%s:%d", cert and "https" or "http", host, srv:port())
  s.base_url = o.public_url or cfg.public_url or url

  if o.port_file then
    -- Written whole then renamed, so a reader never sees an empty file;
    -- before the listening line, so a reader of either finds both.
    local tmp = o.port_file .. ".tmp"
    local f, err = io.open(tmp, "w")
    if f then
      f:write(srv:port(), "\n")
      f:close()
      local renamed, rerr = os.rename(tmp, o.port_file)
      if not renamed then err, f = rerr, nil end
    end
    if not f then srv:close() return exit_error("--port-file: " .. tostring(err)) end
  end
  stdout:setvbuf("line")
  stdout:write("listening on ", url, "\n")
  if s.using_demo_credential then
    stdout:write(format("demo credential: SecretId=%s SecretKey=%s\n", sim.demo.SecretId,
      sim.demo.SecretKey))
  end
  if s.using_demo_merchant then
    stdout:write(format("demo merchant: MerchantId=%s\n", sim.demo.MerchantId))
  end
  stdout:write(format("token ttl %d s, results kept %d s, seed %d\n", s.token_ttl,
    s.result_window, s.seed))
  local why = srv:run()
  srv:close()
  stderr:write("eidkit sim: stopped (", tostring(why), ")\n")
  return 0
end

return _M
