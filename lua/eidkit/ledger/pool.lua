-- A ledger backend over an eidkit.LedgerPool (bindings/ledger_pool.c): the
-- same methods as the C object eidkit.Ledger, each run by a worker thread
-- while the caller waits through `await`. eidkit.ledger.open returns it
-- wrapped in the ledger class when given `workers` or `await`.
--
-- await(pool, id) -> what pool:next(id) gives after the id: the method's
-- results, or false and a message for misuse the C ledger found. The
-- default blocks this thread until the job is done (pool:wait); a host with
-- an event loop yields the caller's coroutine instead and resumes it with
-- what pool:next() returned (lua/eidkit/serve.lua).
local error, select, setmetatable, tostring, type = error, select, setmetatable, tostring, type

local _M = {}

local mt = { __index = {} }
local methods = mt.__index

local function blocking_await(pool, id)
  pool:wait(id)
  return select(2, pool:next(id))
end

-- Misuse is raised here, in the caller, as the C object raises it: false
-- and a message (take's own false comes with a number, the wait).
local function settle(a, b)
  if a == false and type(b) == "string" then error(b, 0) end
  return a, b
end

-- pool.new(pool [, await]) -> backend
function _M.new(pool, await)
  return setmetatable({ pool = pool, await = await or blocking_await }, mt)
end

-- Each operation: post the job (argument errors raise here, naming the
-- method), then wait for its results.
function methods.issue(self, ...) return settle(self.await(self.pool, self.pool:issue(...))) end
function methods.claim(self, ...) return settle(self.await(self.pool, self.pool:claim(...))) end
function methods.record(self, ...) return settle(self.await(self.pool, self.pool:record(...))) end
function methods.consume(self, ...) return settle(self.await(self.pool, self.pool:consume(...))) end
function methods.get(self, ...) return settle(self.await(self.pool, self.pool:get(...))) end
function methods.due(self, ...) return settle(self.await(self.pool, self.pool:due(...))) end
function methods.export(self, ...) return settle(self.await(self.pool, self.pool:export(...))) end
function methods.expire(self, ...) return settle(self.await(self.pool, self.pool:expire(...))) end
function methods.stats(self) return settle(self.await(self.pool, self.pool:stats())) end
function methods.payload(self, ...) return settle(self.await(self.pool, self.pool:payload(...))) end
function methods.take(self, ...) return settle(self.await(self.pool, self.pool:take(...))) end
function methods.give(self, ...) return settle(self.await(self.pool, self.pool:give(...))) end
function methods.attempts(self, ...) return settle(self.await(self.pool, self.pool:attempts(...))) end
function methods.backend(self) return self.pool:backend() end
-- Finishes every queued job, then joins the workers.
function methods.close(self) self.pool:close() end

mt.__tostring = function(self) return tostring(self.pool) end

return _M
