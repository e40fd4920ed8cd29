-- What the flow specs share: one `eidkit sim` per spec file, clients signed
-- with its demo credential, ledgers in a temporary directory (SQLite) or on
-- a redis-server, a ledger proxy that counts calls, and a capture of every
-- event and error for the redaction check.
--   local env = flowenv.new { sim_args = { "--seed", "7" } }   -- in lazy_setup
--   local f = env:flow { policy = P }   -- f.flow, f.ledger (counting proxy), f.counts, f.events
--   env:close()
local simproc = require "support.simproc"
local simctl = require "support.simctl"
local redis = require "support.redis"
local client_mod = require "eidkit.client"
local ledger_mod = require "eidkit.ledger"
local flow_mod = require "eidkit.flow"
local sim_mod = require "eidkit.sim"

local _M = {}
_M.demo = sim_mod.demo
-- The identity every spec sends: it must never show up in errors or events.
_M.NAME, _M.IDCARD = "韦小宝", "11204416541220243X"

local env = {}
env.__index = env

function _M.new(opts)
  opts = opts or {}
  local self = setmetatable({ captured = {}, seq = 0 }, env)
  self.sim = simproc.start(opts.sim_args or { "--seed", "7" })
  local p = io.popen("mktemp -d /tmp/eidkit-flow-XXXXXX")
  self.dir = p:read("l")
  p:close()
  self.clients = {}
  self.ledgers = {}
  return self
end

-- Anything an error or event carried, flattened to strings.
function env:capture(...)
  for i = 1, select("#", ...) do
    local v = select(i, ...)
    if type(v) == "table" then
      for k, x in pairs(v) do self.captured[#self.captured + 1] = tostring(k) .. "=" .. tostring(x) end
    end
    self.captured[#self.captured + 1] = tostring(v)
  end
  return ...
end

function env:client(opts)
  opts = opts or {}
  opts.endpoint = self.sim.url
  opts.secret_id = _M.demo.SecretId
  opts.secret_key = _M.demo.SecretKey
  local c = client_mod.new(opts)
  self.clients[#self.clients + 1] = c
  return c
end

-- A fresh ledger: backend "sqlite" (default) or "redis" (a server started
-- on first use); opts go to ledger.open.
function env:ledger(backend, opts)
  self.seq = self.seq + 1
  local url
  if backend == "redis" then
    if not self.redis then self.redis = redis.start() end
    url = self.redis:url(0, "flow" .. self.seq .. ":")
  else
    url = ("sqlite:%s/ledger-%d.db"):format(self.dir, self.seq)
  end
  local l = assert(ledger_mod.open(url, opts))
  self.ledgers[#self.ledgers + 1] = l
  return l
end

-- A proxy that forwards to a ledger and counts each method call.
function _M.counting(real)
  local counts = setmetatable({}, { __index = function() return 0 end })
  local proxy = setmetatable({}, { __index = function(_, k)
    local f = real[k]
    if type(f) ~= "function" then return f end
    return function(_, ...)
      counts[k] = counts[k] + 1
      return f(real, ...)
    end
  end })
  return proxy, counts
end

-- A flow with a counting ledger and a logger capturing events.
-- opts: policy, backend, ledger (a real ledger to share), client, plus any flow option.
function env:flow(opts)
  opts = opts or {}
  local real = opts.ledger or self:ledger(opts.backend, opts.ledger_opts)
  local proxy, counts = _M.counting(real)
  local events = {}
  local fopts = { client = opts.client or self.client0 or self:client(),
    ledger = proxy, merchant_id = _M.demo.MerchantId, policy = opts.policy,
    logger = function(level, ev)
      events[#events + 1] = { level = level, event = ev }
      self:capture(ev)
    end }
  self.client0 = self.client0 or fopts.client
  for k, v in pairs(opts) do
    if k ~= "backend" and k ~= "ledger" and k ~= "ledger_opts" and k ~= "client" and k ~= "policy" then
      fopts[k] = v
    end
  end
  return { flow = flow_mod.new(fopts), ledger = real, counts = counts, events = events }
end

-- Start a flow for subject with the spec identity; extra fields merged in.
function env:start(f, subject, fields)
  local p = { subject = subject, Name = _M.NAME, IdCard = _M.IDCARD, Config = { InputType = "4" } }
  for k, v in pairs(fields or {}) do p[k] = v end
  local started, err = f.flow:start(p)
  self:capture(err)
  return assert(started, tostring(err))
end

-- The simulated user finishes one attempt.
function env:finish_user(tok, body)
  local status = simctl.finish(self.sim, tok, body or { ErrCode = 0 })
  assert(status == 200, "sim finish answered " .. tostring(status))
end

function env:advance(seconds) simctl.advance(self.sim, seconds) end
function env:faults(rules) simctl.faults(self.sim, rules) end
function env:clear_faults() simctl.clear(self.sim) end

function env:close()
  for _, c in ipairs(self.clients) do pcall(c.close, c) end
  for _, l in ipairs(self.ledgers) do pcall(l.close, l) end
  if self.redis then self.redis:destroy() end
  if self.sim then simproc.stop(self.sim) end
  if self.dir then os.execute("rm -rf '" .. self.dir .. "'") end
end

return _M
