-- eidkit.serve: the embedded host for eidkit.gateway (docs/internals/serve.md).
-- One loop on the Lua thread waits on every source at once (core.poller):
-- the HTTP servers (core.http_server), the API clients' curl multis, the
-- ledgers' worker pools and signals. Every request runs in a coroutine of
-- its own; a request waiting on Tencent or on the ledger yields, its
-- connection stays suspended (the handler returned false), and the loop
-- answers it with srv:respond once the coroutine finishes. So no network
-- wait holds up another request.
--
--   local host = serve.new{ on_error = function(msg) end }
--   local client = eidkit.client{ ..., await = host.client_await }
--   local ledger = eidkit.ledger.open(url, { workers = 4, await = host.ledger_await })
--   local flow = eidkit.flow{ client = client, ledger = ledger, sleep = host.sleep, ... }
--   local srv = host:mount(eidkit.gateway{ flow = flow }, { host = "127.0.0.1", port = 8080 })
--   host:add_server(other_srv)            -- stepped too (the --sim simulator), never drained
--   host:every(60, "the sweep", function() flow:sweep() end)
--   host:run{ drain_timeout = 10, on_reload = function() end }  -- until SIGTERM/SIGINT, drained
--
-- Knows nothing of the command line (lua/eidkit/cli/serve.lua builds one).
local core = require "eidkit.core"
local gateway = require "eidkit.gateway"

local type, pairs, ipairs, select, tostring, setmetatable, pcall =
  type, pairs, ipairs, select, tostring, setmetatable, pcall
local create, resume, yield, running, status = coroutine.create, coroutine.resume, coroutine.yield,
  coroutine.running, coroutine.status
local traceback, format, floor, max = debug.traceback, string.format, math.floor, math.max
local monotonic = core.monotonic

local _M = {}

-- What a request gets while the host drains, and what one still waiting
-- gets when the drain deadline passes.
_M.SHUTTING_DOWN = {
  status = 503,
  headers = { ["Content-Type"] = "application/json", ["Cache-Control"] = "no-store",
    ["Retry-After"] = "1", Connection = "close" },
  body = '{"error":{"code":"shutting_down","message":"the server is shutting down"}}',
}
local INTERNAL = {
  status = 500,
  headers = { ["Content-Type"] = "application/json", ["Cache-Control"] = "no-store" },
  body = '{"error":{"code":"internal","message":"internal error"}}',
}

-- How long the host keeps stepping after the drain to get answers out.
_M.FLUSH_SECONDS = 2

local mt = { __index = {} }
local methods = mt.__index

local function report(self, message)
  pcall(self.on_error, message)
end

-- ------------------------------------------------------------ coroutines

-- A coroutine ended: a request's is answered, a task's error reported.
local function finished(self, co, ok, result)
  local info = self.managed[co]
  self.managed[co] = nil
  if not ok then report(self, format("%s failed: %s", info.what, traceback(co, tostring(result)))) end
  if info.kind == "request" then
    self.in_flight = self.in_flight - 1
    local resp = ok and type(result) == "table" and result or INTERNAL
    if ok and resp ~= result then report(self, info.what .. " returned no response table") end
    if info.deferred and not info.answered then
      info.answered = true
      if not info.srv:respond(info.id, resp) then self.gone = self.gone + 1 end
    end
    return resp
  end
  if info.done then pcall(info.done) end
  return nil
end

-- Coroutines are reused: one that finished its function yields DONE and
-- waits for the next. A fresh coroutine per request grew its stack and call
-- list from nothing every time, and that garbage was a large part of a
-- request's cost (docs/BENCHMARKS.md, "Serve"). One whose function raised
-- is dead and dropped; one the drain gave up on is never resumed again.
local DONE = {}
local IDLE_MAX = 1024 -- idle coroutines kept for reuse

local function call(fn, ...)
  return fn(...)
end

local function run_reused(...)
  local result = call(...)
  while true do result = call(yield(DONE, result)) end
end

-- Resume co with the values; returns what finished returned when it ended.
local function step_co(self, co, ...)
  if not self.managed[co] then return nil end
  local ok, a, b = resume(co, ...)
  if ok and a == DONE then
    local r = finished(self, co, true, b)
    local idle = self.idle
    if #idle < IDLE_MAX then idle[#idle + 1] = co end
    return r
  end
  if status(co) == "dead" then return finished(self, co, ok, a) end
  return nil
end

-- Run fn(...) in a coroutine the host manages (its awaits yield).
local function spawn(self, info, fn, ...)
  local idle = self.idle
  local co = idle[#idle]
  if co then
    idle[#idle] = nil
  else
    co = create(run_reused)
  end
  self.managed[co] = info
  return co, step_co(self, co, fn, ...)
end

-- The coroutine to park, or nil when the caller is not one of ours (the
-- main thread at start-up, a coroutine of someone else's): then the caller
-- blocks instead.
local function parkable(self)
  local co, main = running()
  if main or not self.managed[co] then return nil end
  return co
end

-- ------------------------------------------------------------ sources

-- Sources are kept in arrays (appended to while the loop walks them: a
-- resumed coroutine may bring a new one) with a map to their waiting
-- coroutines by call or job id.
local function watch(self, list, obj)
  local waiting = list.waiting[obj]
  if not waiting then
    waiting = {}
    list.waiting[obj] = waiting
    list[#list + 1] = obj
    self.poller:add(obj:fd())
  end
  return waiting
end

-- Timers: a list kept sorted by due time (few: sleeps, the sweep, the drain).
local function at(self, due, fn)
  local t = self.timers
  local i = #t
  while i > 0 and t[i].due > due do
    t[i + 1] = t[i]
    i = i - 1
  end
  t[i + 1] = { due = due, fn = fn }
end

local function fire_timers(self)
  local t, now = self.timers, monotonic()
  while t[1] and t[1].due <= now do
    local first = table.remove(t, 1)
    local ok, err = pcall(first.fn)
    if not ok then report(self, "a timer failed: " .. tostring(err)) end
  end
end

-- ------------------------------------------------------------ the module

-- serve.new{on_error = function(message)} -> host
function _M.new(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("bad argument #1 to 'new' (expected a table of options)", 2) end
  if opts.on_error ~= nil and type(opts.on_error) ~= "function" then
    error("bad option 'on_error' (expected a function)", 2)
  end
  local poller, perr = core.poller()
  if not poller then return nil, perr end
  local self = setmetatable({
    poller = poller, servers = {}, public = {}, timers = {},
    clients = { waiting = {} }, pools = { waiting = {} },
    managed = {}, idle = {}, step_hooks = {}, in_flight = 0, tasks = 0, gone = 0,
    draining = false, stopped = false,
    on_error = opts.on_error or function(m) io.stderr:write("eidkit serve: ", m, "\n") end,
  }, mt)
  -- The seams the host's client, ledger and flow are built with. Each parks
  -- the calling coroutine and returns what the loop resumes it with; called
  -- from outside one of the host's coroutines they block instead.

  -- eidkit.client's await: (c, action, body) -> text, attempts | nil, err
  self.client_await = function(c, action, body)
    local co = parkable(self)
    if not co then return c:call(action, body) end
    local id, err = c:submit(action, body)
    if not id then return nil, err end
    watch(self, self.clients, c)[id] = co
    return yield()
  end
  -- eidkit.ledger's await (eidkit.ledger.pool): (pool, id) -> the job's results
  self.ledger_await = function(pool, id)
    local co = parkable(self)
    if not co then
      pool:wait(id)
      return select(2, pool:next(id))
    end
    -- Its workers are woken once a turn (step), for all of the turn's jobs.
    if not self.pools.waiting[pool] then pool:defer(true) end
    watch(self, self.pools, pool)[id] = co
    return yield()
  end
  -- eidkit.flow's sleep (policy.retry's delays): a timer, not a nap
  self.sleep = function(seconds)
    local co = parkable(self)
    if not co then return core.sleep(seconds) end
    at(self, monotonic() + seconds, function() step_co(self, co) end)
    yield()
  end
  return self
end

-- host:add_server(srv): step srv in the loop (it is not quiesced on drain).
function methods.add_server(self, srv)
  self.servers[#self.servers + 1] = srv
  self.poller:add(srv:fd())
  return srv
end

-- host:mount(gw, {host =, port =, max_connections =, connection_timeout =,
--   request_timeout =, max_per_address =, real_ip =, tls_cert =, tls_key = (PEM text)})
--   -> the core.http_server serving gw, one coroutine per request.
-- real_ip: an eidkit.realip list of trusted proxies; a request through one
-- carries the client's address from X-Forwarded-For as req.remote_addr.
function methods.mount(self, gw, o)
  o = o or {}
  local srv
  local real_ip = o.real_ip
  local function handle(req)
    return gw:handle(req)
  end
  local function handler(req)
    if self.draining then return _M.SHUTTING_DOWN end
    if real_ip then req.remote_addr = real_ip:client(req.remote, req.headers["x-forwarded-for"]) end
    local info = { kind = "request", what = "the request", id = req.id, srv = srv }
    self.in_flight = self.in_flight + 1
    local co, resp = spawn(self, info, handle, req)
    if not self.managed[co] then return resp end
    info.deferred = true
    return false
  end
  srv = core.http_server {
    host = o.host, port = o.port, max_connections = o.max_connections, tls_cert = o.tls_cert, tls_key = o.tls_key,
    connection_timeout = o.connection_timeout, request_timeout = o.request_timeout,
    max_per_address = o.max_per_address,
    -- 16 KiB: refused before buffering, in the gateway's own format
    max_body = gw.max_body or gateway.MAX_BODY,
    too_large_body = gateway.error_response("too_large").body,
    handler = handler,
    on_error = function(m) report(self, "HTTP server: " .. m) end,
  }
  self.public[#self.public + 1] = srv
  return self:add_server(srv)
end

-- host:spawn(name, fn, ...) -> runs fn(...) now in a coroutine the host
-- manages (its client and ledger calls yield); errors go to on_error.
function methods.spawn(self, name, fn, ...)
  if type(fn) ~= "function" then error("bad argument #2 to 'spawn' (expected a function)", 2) end
  self.tasks = self.tasks + 1
  local info = { kind = "task", what = tostring(name) }
  info.done = function() self.tasks = self.tasks - 1 end
  spawn(self, info, fn, ...)
end

-- host:every(seconds, name, fn): run fn in its own coroutine every `seconds`
-- (first after one interval); a run still going when the next is due is not
-- doubled. Not during a drain.
function methods.every(self, seconds, name, fn)
  if type(seconds) ~= "number" or seconds ~= seconds or seconds <= 0 then
    error("bad argument #1 to 'every' (expected seconds > 0)", 2)
  end
  local busy = false
  local function tick()
    if self.draining or self.stopped then return end
    if not busy then
      busy = true
      self.tasks = self.tasks + 1
      local info = { kind = "task", what = tostring(name) }
      info.done = function()
        busy = false
        self.tasks = self.tasks - 1
      end
      spawn(self, info, fn)
    end
    at(self, monotonic() + seconds, tick)
  end
  at(self, monotonic() + seconds, tick)
end

-- host:after(seconds, fn): call fn once after `seconds`, on the loop.
function methods.after(self, seconds, fn)
  at(self, monotonic() + seconds, fn)
end

-- Milliseconds the loop may sleep: the least of every source's timeout.
local function wait_ms(self, limit)
  local t = limit or -1
  local function least(ms)
    if ms >= 0 and (t < 0 or ms < t) then t = ms end
  end
  for _, srv in ipairs(self.servers) do least(srv:timeout()) end
  for _, c in ipairs(self.clients) do least(c:timeout()) end
  if self.timers[1] then least(floor(max(0, self.timers[1].due - monotonic()) * 1000 + 1)) end
  return t
end

-- Every finished call of source (a client or a ledger pool): resume the
-- coroutine that waits for it with the call's results.
local function resume_done(self, source, waiting)
  while true do
    local id, a, b = source:next()
    if not id then return end
    local co = waiting[id]
    waiting[id] = nil
    if co then step_co(self, co, a, b) end
  end
end

-- One turn of the loop: wait (at most limit_ms), then let every source do
-- its work and resume the coroutines whose wait is over.
function methods.step(self, limit_ms)
  local pools = self.pools
  for i = 1, #pools do pools[i]:flush() end -- what the last turn posted (ledger_await)
  self.poller:wait(wait_ms(self, limit_ms))
  while true do
    local sig = self.poller:signal()
    if not sig then break end
    if self.on_signal then pcall(self.on_signal, sig) end
  end
  for _, srv in ipairs(self.servers) do srv:step(0) end
  local clients = self.clients
  for i = 1, #clients do
    local c = clients[i]
    local ok, err = pcall(c.perform, c, 0)
    if not ok then report(self, "the API client's logger or retry policy raised: " .. tostring(err)) end
    resume_done(self, c, clients.waiting[c])
  end
  for i = 1, #pools do resume_done(self, pools[i], pools.waiting[pools[i]]) end
  fire_timers(self)
  local hooks = self.step_hooks
  for i = 1, #hooks do
    local ok, err = pcall(hooks[i])
    if not ok then report(self, "a step hook failed: " .. tostring(err)) end
  end
end

-- host:on_step(fn): call fn after every turn of the loop (the access log
-- flushes there: one write per turn, not one per line).
function methods.on_step(self, fn)
  if type(fn) ~= "function" then error("bad argument #1 to 'on_step' (expected a function)", 2) end
  self.step_hooks[#self.step_hooks + 1] = fn
end

-- host:stats() -> {in_flight, tasks, gone (answers whose client had left), deferred}
function methods.stats(self)
  local deferred = 0
  for _, srv in ipairs(self.public) do deferred = deferred + srv:stats().deferred end
  return { in_flight = self.in_flight, tasks = self.tasks, gone = self.gone, deferred = deferred }
end

-- host:drain(timeout): stop accepting, let the requests in flight (and a
-- running sweep) finish for up to `timeout` seconds, answer what remains
-- 503, and give the answers a moment to leave. Returns the number of
-- requests answered 503 at the deadline.
function methods.drain(self, timeout)
  self.draining = true
  for _, srv in ipairs(self.public) do srv:quiesce() end
  local deadline = monotonic() + (timeout or 10)
  while (self.in_flight > 0 or self.tasks > 0) and monotonic() < deadline do
    self:step(max(1, floor((deadline - monotonic()) * 1000)))
  end
  local cut = 0
  for co, info in pairs(self.managed) do
    if info.kind == "request" and info.deferred and not info.answered then
      info.answered = true
      cut = cut + 1
      info.srv:respond(info.id, _M.SHUTTING_DOWN)
    end
    self.managed[co] = nil
  end
  self.in_flight = 0
  local flush = monotonic() + _M.FLUSH_SECONDS
  while monotonic() < flush do
    local active = 0
    for _, srv in ipairs(self.public) do active = active + srv:stats().active end
    if active == 0 then break end
    self:step(50)
  end
  return cut
end

-- host:run{drain_timeout = 10, on_reload = function() end} -> "signal", cut
-- Serves until SIGTERM or SIGINT (or host:shutdown()), then drains. SIGHUP
-- calls on_reload. SIGPIPE is ignored while it runs.
function methods.run(self, o)
  o = o or {}
  self.poller:signals({ "TERM", "INT", "HUP" }, { "PIPE" })
  local why = "stopped"
  self.on_signal = function(sig)
    if sig == "HUP" then
      if o.on_reload then
        local ok, err = pcall(o.on_reload)
        if not ok then report(self, "reload failed: " .. tostring(err)) end
      end
    elseif sig == "TERM" or sig == "INT" then
      why = "signal"
      self.stopped = true
    end
  end
  while not self.stopped do self:step(1000) end
  local cut = self:drain(o.drain_timeout)
  return why, cut
end

-- host:shutdown(): make run() drain and return, as SIGTERM does.
function methods.shutdown(self) self.stopped = true end

-- host:close(): close the servers and the poller (clients and ledgers are
-- the caller's). Idempotent.
function methods.close(self)
  for _, srv in ipairs(self.servers) do pcall(srv.close, srv) end
  self.servers, self.public = {}, {}
  self.poller:close()
end

mt.__close = function(self) self:close() end
mt.__name = "eidkit.Serve"

return _M
