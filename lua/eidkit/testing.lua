-- eidkit.testing: the merchant's testing kit (docs/TESTING.md). Starts
-- `eidkit sim` on a free loopback port, builds clients and ledgers against
-- it, plays the user and moves time for the simulator and the ledgers
-- together.
--
--   local testing = require "eidkit.testing"
--   local sim = testing.sim{ seed = 1 }          -- raises with the sim's stderr if it cannot start
--   local client, ledger = sim:client(), sim:ledger()
--   local res = assert(client:get_eid_token{ MerchantId = sim.merchant_id })
--   sim:pass(res.EidToken)   sim:fail(tok, 2016)   sim:abandon(tok)
--   sim:freeze(1700000000)   sim:advance(86400)    sim:now()
--   sim:faults{ { Action = "GetEidResult", Kind = "throttle", First = 2 } }
--   sim:stop()                                    -- also on __gc and __close
--
-- The simulator is a child process (core.spawn: no shell, no pid files),
-- given its own random credentials and merchant through a config file that
-- only the current user can read. Misuse raises; a control call the
-- simulator refuses returns nil, err (err.code is its Error.Code).
local core = require "eidkit.core"
local cjson = require "cjson.safe"
local errors = require "eidkit.errors"
local client_mod = require "eidkit.client"
local ledger_mod = require "eidkit.ledger"

local type, error, tostring, pairs, ipairs, setmetatable = type, error, tostring, pairs, ipairs,
  setmetatable
local format, time, getenv = string.format, os.time, os.getenv
local math_type = math.type

local _M = {}

-- How long testing.sim waits for the simulator to bind (seconds), and how
-- long one control call may take.
_M.START_TIMEOUT = 10
_M.CONTROL_TIMEOUT = 5

local sim_mt = { __index = {} }
local methods = sim_mt.__index

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function hex(n)
  return (assert(core.random_bytes(n)):gsub(".", function(c) return format("%02x", c:byte()) end))
end

-- nil, err for a control call that failed; status is the HTTP status, if any.
local function control_error(code, message, status)
  return errors.result(code, message, { http_status = status })
end

-- The eidkit program to run: opts.bin, $EIDKIT_BIN, the running eidkit
-- program itself (busted --lua=eidkit, eidkit run), else `eidkit` on PATH.
function _M.find_bin(bin)
  if bin ~= nil then return bin end
  local env = getenv("EIDKIT_BIN")
  if env and env ~= "" then return env end
  if package.preload["eidkit.core"] then -- only the eidkit host preloads it
    local exe = core.executable()
    if exe then return exe end
  end
  return "eidkit"
end

-- ------------------------------------------------------------ transport
-- The control API over core.http_request (libcurl, never via a proxy): no
-- curl program, no shell.
local function http(self, method, path, body)
  local status, text = core.http_request(method, self.url .. path, body, _M.CONTROL_TIMEOUT, 1 << 24)
  if not status then return control_error(text.code, format("%s %s: %s", method, path, text.message)) end
  return status, text
end

-- control(method, path [, body]) -> decoded answer | nil, err
function methods.control(self, method, path, body)
  if self.process == nil then error("eidkit.testing: the simulator was stopped", 3) end
  local text
  if body ~= nil then
    text = assert(cjson.encode(body))
  end
  local status, answer = http(self, method, path, text)
  if not status then return nil, answer end
  local decoded = cjson.decode(answer)
  if status ~= 200 then
    local e = type(decoded) == "table" and type(decoded.Error) == "table" and decoded.Error or {}
    return control_error(tostring(e.Code or "http_" .. status), format("%s %s: %s", method, path,
      tostring(e.Message or answer)), status)
  end
  if type(decoded) ~= "table" then
    return control_error("bad_response", format("%s %s: not JSON: %s", method, path, answer:sub(1, 200)), 200)
  end
  return decoded
end

-- ----------------------------------------------------------------- start

local function check_opts(opts, known, fname)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    error(format("bad argument #1 to '%s' (expected a table of options)", fname), 3)
  end
  for k in pairs(opts) do
    if not known[k] then
      error(format("bad argument #1 to '%s' (unknown option '%s')", fname, tostring(k)), 3)
    end
  end
  return opts
end

local function int_opt(opts, k, fname, min)
  local v = opts[k]
  if v ~= nil and (math_type(v) ~= "integer" or v < min) then
    error(format("bad argument #1 to '%s' (%s: expected an integer >= %d)", fname, k, min), 3)
  end
  return v
end

local sim_known = { seed = 1, args = 1, bin = 1, token_ttl = 1, merchant_id = 1, faults = 1,
  now = 1, env = 1, start_timeout = 1, keep_files = 1 }

local function remove_files(self)
  if self.keep_files then return end
  for _, suffix in ipairs { "", ".port", ".out", ".err" } do os.remove(self.base .. suffix) end
  for _, path in ipairs(self.ledger_files) do
    for _, ext in ipairs { "", "-wal", "-shm", "-journal" } do os.remove(path .. ext) end
  end
end

-- testing.sim{...} -> sim. Options: seed, token_ttl (default 7200),
-- merchant_id, faults (rules as for PUT /sim/faults), now (start frozen at
-- this Unix time), args (more `eidkit sim` flags), bin, env (for the child,
-- as core.spawn's), start_timeout (s), keep_files (keep the temporary
-- files: config, stdout/stderr, ledgers, for debugging).
function _M.sim(opts)
  opts = check_opts(opts, sim_known, "sim")
  local seed = int_opt(opts, "seed", "sim", math.mininteger)
  local ttl = int_opt(opts, "token_ttl", "sim", 1) or 7200
  local now = int_opt(opts, "now", "sim", 0)
  if opts.merchant_id ~= nil and type(opts.merchant_id) ~= "string" then
    error("bad argument #1 to 'sim' (merchant_id: expected string)", 2)
  end
  for k, want in pairs { args = "table", faults = "table", env = "table", bin = "string",
    start_timeout = "number" } do
    if opts[k] ~= nil and type(opts[k]) ~= want then
      error(format("bad argument #1 to 'sim' (%s: expected %s)", k, want), 2)
    end
  end

  -- os.tmpname creates the file with mode 0600 (mkstemp): the config, which
  -- holds the secret key, is written there; the other files share its name.
  local base = os.tmpname()
  local self = setmetatable({
    base = base, bin = _M.find_bin(opts.bin), token_ttl = ttl, keep_files = opts.keep_files,
    secret_id = "AKIDkit" .. hex(15), secret_key = hex(16),
    merchant_id = opts.merchant_id or ("0NSJKIT" .. hex(10):upper()),
    offset = 0, frozen = nil, clients = {}, ledgers = {}, ledger_files = {},
  }, sim_mt)
  local config = { credentials = { { SecretId = self.secret_id, SecretKey = self.secret_key } },
    merchants = { self.merchant_id }, token_ttl = ttl, seed = seed, faults = opts.faults }
  local f = assert(io.open(base, "wb"))
  f:write(assert(cjson.encode(config)))
  f:close()

  local argv = { self.bin, "sim", "--listen", "127.0.0.1:0", "--port-file", base .. ".port",
    "--config", base }
  for _, a in ipairs(opts.args or {}) do argv[#argv + 1] = tostring(a) end
  -- die_with_parent: a test run killed outright (a CI timeout) takes its
  -- simulators with it.
  local p, err = core.spawn(argv, { env = opts.env, stdin = "/dev/null", stdout = base .. ".out",
    stderr = base .. ".err", die_with_parent = true })
  if not p then
    remove_files(self)
    error(format("eidkit.testing: cannot start the simulator: %s (pass bin = ... or set "
      .. "EIDKIT_BIN to the eidkit program)", err.message), 2)
  end
  self.process = p

  -- Ready when the port file exists: the simulator writes it after binding.
  local limit = opts.start_timeout or _M.START_TIMEOUT
  local t0, nap = core.monotonic(), 0.002
  local port
  while true do
    port = tonumber((read_file(base .. ".port") or ""):match("^(%d+)\n$"))
    if port then break end
    local st, kind = p:wait(nap)
    if st or core.monotonic() - t0 > limit then
      local why = st and format("it exited (%s %s)", kind, tostring(st))
        or format("it did not bind within %g s", limit)
      p:close(0.5)
      local stderr = (read_file(base .. ".err") or "") .. (read_file(base .. ".out") or "")
      self.process = nil
      remove_files(self)
      error(format("eidkit.testing: the simulator (%s) did not start: %s%s", self.bin, why,
        stderr ~= "" and ":\n" .. stderr or ""), 2)
    end
    if nap < 0.05 then nap = nap * 2 end
  end
  self.port = port
  self.url = "http://127.0.0.1:" .. port
  if now then self:freeze(now) end
  return self
end

-- ------------------------------------------------------------------ time

-- The kit's clock: the simulator's clock as the kit set it. Frozen, it does
-- not move until freeze/advance; otherwise real time plus the offset.
function methods.now(self)
  return self.frozen or time() + self.offset
end

-- POST /sim/clock; returns the simulator's offset from real time (an
-- integer: lua-cjson decodes every number as a float).
local function set_clock(self, body)
  local r, err = self:control("POST", "/sim/clock", body)
  if not r then error("eidkit.testing: cannot move the simulator's clock: " .. tostring(err), 3) end
  local offset = math.tointeger(r.Offset) or 0
  -- The kit's clients sign on the simulator's clock from the next call on,
  -- without a SignatureExpire round trip.
  for _, c in ipairs(self.clients) do c:set_skew(offset) end
  return offset
end

-- sim:freeze([ts]): stop the kit's clock at ts (default: now), the
-- simulator's with it (POST /sim/clock with Frozen): a token issued now is
-- created at ts exactly, however long the test has run.
function methods.freeze(self, ts)
  if ts == nil then ts = self:now() end
  if math_type(ts) ~= "integer" or ts < 0 then
    error("bad argument #1 to 'freeze' (expected integer Unix seconds)", 2)
  end
  self.offset = set_clock(self, { Now = ts, Frozen = true })
  self.frozen = ts
  return ts
end

-- sim:unfreeze() -> where the clock stood: the kit's clock runs again from
-- there. (Not now() read after the call: the simulator counts from its own
-- reading of real time, and a second may tick before the kit reads its own.)
function methods.unfreeze(self)
  local at = self.frozen
  if not at then return self:now() end
  self.offset = set_clock(self, { Now = at })
  self.frozen = nil
  return at
end

-- sim:advance(seconds): move the simulator's and the ledgers' clocks.
function methods.advance(self, seconds)
  if math_type(seconds) ~= "integer" then
    error("bad argument #1 to 'advance' (expected integer seconds)", 2)
  end
  if self.frozen then
    self.frozen = self.frozen + seconds
    self.offset = set_clock(self, { Now = self.frozen, Frozen = true })
  else
    self.offset = set_clock(self, { Advance = seconds })
  end
  return self:now()
end

-- ------------------------------------------------------- clients, ledgers

-- sim:client{...} -> eidkit.client with the simulator's credentials, short
-- timeouts and quick retries; any eidkit.client option may be given. The
-- client signs on the simulator's clock: freeze and advance set its skew
-- (client:set_skew). A client made elsewhere adopts the simulator's clock
-- from its Date header on the first AuthFailure.SignatureExpire after a
-- time jump (one extra round trip, docs/internals/client.md).
function methods.client(self, opts)
  if opts ~= nil and type(opts) ~= "table" then
    error("bad argument #1 to 'client' (expected a table of options)", 2)
  end
  local o = { endpoint = self.url, secret_id = self.secret_id, secret_key = self.secret_key,
    connect_timeout = 2, timeout = 5, deadline = 10, retry = { base = 0.01, cap = 0.1 } }
  for k, v in pairs(opts or {}) do o[k] = v end
  local ok, c = pcall(client_mod.new, o)
  if not ok then error(c, 2) end
  c:set_skew(self.offset)
  self.clients[#self.clients + 1] = c
  return c
end

-- sim:ledger{...} -> eidkit.ledger on a new SQLite file, on the kit's clock,
-- with the simulator's token lifetime; other eidkit.ledger.open options may
-- be given (clock too, to take over).
function methods.ledger(self, opts)
  if opts ~= nil and type(opts) ~= "table" then
    error("bad argument #1 to 'ledger' (expected a table of options)", 2)
  end
  local path = format("%s.ledger%d.db", self.base, #self.ledger_files + 1)
  self.ledger_files[#self.ledger_files + 1] = path
  local o = { token_ttl = self.token_ttl, clock = function() return self:now() end }
  for k, v in pairs(opts or {}) do o[k] = v end
  local l, err = ledger_mod.open("sqlite:" .. path, o)
  if not l then error("eidkit.testing: cannot open a ledger: " .. tostring(err), 2) end
  self.ledgers[#self.ledgers + 1] = l
  return l
end

-- sim:flow{ policy = ..., merchant_id = ..., client = ..., ledger = ... }
-- -> eidkit.flow with the kit's client and ledger (new ones unless given)
-- and the simulator's merchant.
function methods.flow(self, opts)
  if opts ~= nil and type(opts) ~= "table" then
    error("bad argument #1 to 'flow' (expected a table of options)", 2)
  end
  local ok, flow = pcall(require, "eidkit.flow")
  if not ok then error("eidkit.testing: eidkit.flow is not available: " .. tostring(flow), 2) end
  local o = {}
  for k, v in pairs(opts or {}) do o[k] = v end
  o.client = o.client or self:client()
  o.ledger = o.ledger or self:ledger()
  o.merchant_id = o.merchant_id or self.merchant_id
  if type(flow) == "table" and flow.new then return flow.new(o) end
  return flow(o)
end

-- --------------------------------------------------------------- the user

local function check_token(tok, fname)
  if type(tok) ~= "string" or tok == "" then
    error(format("bad argument #1 to '%s' (expected an EidToken string)", fname), 3)
  end
end

local function token_path(tok, verb)
  return "/sim/tokens/" .. tok:gsub("[^%w%-]", function(c) return format("%%%02X", c:byte()) end)
    .. (verb and "/" .. verb or "")
end

-- sim:token(tok) -> {EidToken, Status, CreatedAt, ExpiresAt, ResultDeadline,
-- Attempts} | nil, err (code "NotFound")
function methods.token(self, tok)
  check_token(tok, "token")
  return self:control("GET", token_path(tok))
end

-- sim:start(tok): the user opens the page (init -> doing).
function methods.start(self, tok)
  check_token(tok, "start")
  return self:control("POST", token_path(tok, "start"))
end

local function integer_list(v)
  if type(v) ~= "table" then return false end
  for i, w in pairs(v) do
    if math_type(i) ~= "integer" or math_type(w) ~= "integer" then return false end
  end
  return true
end

-- sim:finish(tok, {ErrCode = n, IntentionErrCode = n, WarnInfos = {n...},
-- BackWarnInfos = {n...}}): one attempt (ErrCode 14-17: a flow state, no
-- attempt), with the ID-card warnings it saw.
function methods.finish(self, tok, attempt)
  check_token(tok, "finish")
  attempt = attempt or {}
  if type(attempt) ~= "table" then
    error("bad argument #2 to 'finish' (expected {ErrCode = n, IntentionErrCode = n})", 2)
  end
  for k, v in pairs(attempt) do
    local ok
    if k == "ErrCode" or k == "IntentionErrCode" then
      ok = math_type(v) == "integer"
    elseif k == "WarnInfos" or k == "BackWarnInfos" then
      ok = integer_list(v)
    end
    if not ok then
      error(format("bad argument #2 to 'finish' (%s: expected ErrCode or IntentionErrCode, integers, "
        .. "or WarnInfos or BackWarnInfos, lists of integers)", tostring(k)), 2)
    end
  end
  return self:control("POST", token_path(tok, "finish"), { ErrCode = attempt.ErrCode or 0,
    IntentionErrCode = attempt.IntentionErrCode, WarnInfos = attempt.WarnInfos,
    BackWarnInfos = attempt.BackWarnInfos })
end

-- sim:pass(tok [, intention_code]): the user passes (ErrCode 0).
function methods.pass(self, tok, intention)
  check_token(tok, "pass")
  if intention ~= nil and math_type(intention) ~= "integer" then
    error("bad argument #2 to 'pass' (IntentionErrCode: expected integer)", 2)
  end
  return self:finish(tok, { ErrCode = 0, IntentionErrCode = intention })
end

-- sim:fail(tok, code [, intention_code]): one failed attempt with that
-- ErrCode (e.g. 2016 face mismatch, 1001 liveness failed); the user may fail
-- again, or pass, on the same token.
function methods.fail(self, tok, code, intention)
  check_token(tok, "fail")
  if math_type(code) ~= "integer" or code == 0 then
    error("bad argument #2 to 'fail' (ErrCode: expected a non-zero integer such as 2016)", 2)
  end
  if intention ~= nil and math_type(intention) ~= "integer" then
    error("bad argument #3 to 'fail' (IntentionErrCode: expected integer)", 2)
  end
  return self:finish(tok, { ErrCode = code, IntentionErrCode = intention })
end

-- sim:intention(tok, intention_code [, err_code]): an attempt whose
-- intention check gave that IntentionErrCode (ErrCode default 0).
function methods.intention(self, tok, intention, code)
  check_token(tok, "intention")
  if math_type(intention) ~= "integer" then
    error("bad argument #2 to 'intention' (IntentionErrCode: expected integer)", 2)
  end
  return self:finish(tok, { ErrCode = code or 0, IntentionErrCode = intention })
end

-- sim:abandon(tok): the user opens the page and walks away. The kit's clock
-- (simulator and ledgers) moves one second past the token's lifetime, so
-- GetEidResult answers ErrCode 15 and CheckEidTokenStatus "timeout". Every
-- other token ages too. Returns the token's state.
function methods.abandon(self, tok)
  check_token(tok, "abandon")
  local s, err = self:token(tok)
  if not s then return nil, err end
  if s.Status == "init" then self:start(tok) end
  local expires = math.tointeger(s.ExpiresAt)
  local sim_now = math.tointeger(assert(self:control("GET", "/sim/clock")).Now)
  if sim_now <= expires then self:advance(expires - sim_now + 1) end
  return self:token(tok)
end

-- ---------------------------------------------------------- faults, misc

-- sim:faults{ {Action = "GetEidResult", Kind = "throttle", First = 2}, ... }:
-- replace the fault rules (docs/SIMULATOR.md, "Fault injection").
function methods.faults(self, rules)
  if type(rules) ~= "table" then error("bad argument #1 to 'faults' (expected a list of rules)", 2) end
  if #rules == 0 then return self:clear_faults() end
  local r, err = self:control("PUT", "/sim/faults", rules)
  if not r then error("eidkit.testing: the simulator refused the faults: " .. tostring(err), 2) end
  return r.Faults
end

function methods.clear_faults(self)
  local r, err = self:control("DELETE", "/sim/faults")
  if not r then error("eidkit.testing: cannot clear the faults: " .. tostring(err), 2) end
  return r.Faults
end

-- sim:reset(): forget every token.
function methods.reset(self)
  return self:control("POST", "/sim/reset", {})
end

-- sim:health() -> {Status, Tokens, Requests, Now}
function methods.health(self)
  return self:control("GET", "/sim/health")
end

-- sim:output() -> what the simulator wrote to stdout and stderr so far.
function methods.output(self)
  return read_file(self.base .. ".out") or "", read_file(self.base .. ".err") or ""
end

-- sim:stop() -> exit status, kind: close the kit's clients and ledgers, stop
-- the simulator (TERM, then KILL), remove the temporary files. Idempotent.
function methods.stop(self)
  for _, c in ipairs(self.clients) do pcall(c.close, c) end
  for _, l in ipairs(self.ledgers) do pcall(l.close, l) end
  self.clients, self.ledgers = {}, {}
  local p = self.process
  if p == nil then return self.status, self.status_kind end
  self.process = nil
  self.status, self.status_kind = p:close()
  remove_files(self)
  return self.status, self.status_kind
end

sim_mt.__gc = methods.stop
sim_mt.__close = function(self) self:stop() end
sim_mt.__tostring = function(self)
  return format("eidkit.testing sim (%s)", self.process and self.url or "stopped")
end

return _M
