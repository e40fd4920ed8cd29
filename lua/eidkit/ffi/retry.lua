-- eidkit.ffi.retry: the API client's retry decision (eidkit/retry.h) through
-- the LuaJIT FFI, with the tables of eidkit.core.retry_decide on Lua 5.4:
--
--   local retry = require "eidkit.ffi.retry"
--   local v = retry.decide({ max_attempts = 4 }, { action = "GetEidResult",
--     attempts = 1, outcome = "reset", sent = true, remaining = 29.5, jitter = math.random() })
--   -- v.delay: seconds before the next attempt, nil to stop; v.resign: at once,
--   -- re-signed with v.skew; v.keep_received: the body may go into the error;
--   -- v.code, v.sent, v.retryable, ...
--   retry.delay(remaining, wanted) --> wanted | nil   (a policy's answer, deadline applied)
--
-- No rule lives here: the C function decides; this file only moves fields.
-- spec/client/retry_decide_spec.lua runs one table of cases through this and
-- through eidkit.core and fails when they disagree.
local ffi = require "ffi"
local eidffi = require "eidkit.ffi"

local error, type, pairs, tostring, tonumber = error, type, pairs, tostring, tonumber
local floor = math.floor
local ffi_new, ffi_string, ffi_fill, ffi_sizeof = ffi.new, ffi.string, ffi.fill, ffi.sizeof

local _M = {}

local C = eidffi.lib()

-- outcome name -> eid_outcome, from the C names (one source).
local OUTCOMES = {}
for i = 0, 63 do
  local name = C.eid_outcome_name(i)
  if name == nil then break end
  OUTCOMES[ffi_string(name)] = i
end
_M.outcomes = OUTCOMES

-- Scratch structs, one set per VM: decide never yields.
local rules = ffi_new("eid_retry_rules")
local facts = ffi_new("eid_retry_facts")
local verdict = ffi_new("eid_retry_verdict")
local err = ffi_new("eid_error")

-- The messages of eidkit.core.retry_decide, so misuse reads the same on
-- both hosts.
local function bad_field(k, msg) error("bad field '" .. k .. "' (" .. msg .. ")", 0) end

local function want(k, v, ty)
  if type(v) ~= ty then bad_field(k, "expected " .. ty) end
end

local function integer(k, v)
  if type(v) ~= "number" or v ~= floor(v) or v < -2 ^ 53 or v > 2 ^ 53 then bad_field(k, "expected integer") end
  return v
end

local NO_OUTCOME = "expected an outcome name such as 'timeout'"

local RULES = {
  max_attempts = function(v) rules.max_attempts = integer("max_attempts", v) end,
  unsafe = function(v) want("unsafe", v, "boolean") rules.retry_unsafe = v and 1 or 0 end,
  base = function(v) want("base", v, "number") rules.backoff_base = v end,
  cap = function(v) want("cap", v, "number") rules.backoff_cap = v end,
}

-- Strings stay referenced by the caller's table for the whole call.
local FACTS = {
  action = function(v) want("action", v, "string") facts.action = v end,
  attempts = function(v) facts.attempts = integer("attempts", v) end,
  outcome = function(v)
    if OUTCOMES[v] == nil then bad_field("outcome", NO_OUTCOME) end
    facts.outcome = OUTCOMES[v]
  end,
  sent = function(v) want("sent", v, "boolean") facts.bytes_sent = v and 1 or 0 end,
  http_status = function(v) facts.http_status = integer("http_status", v) end,
  remote_code = function(v) want("remote_code", v, "string") facts.remote_code = v end,
  skew_retried = function(v) want("skew_retried", v, "boolean") facts.skew_retried = v and 1 or 0 end,
  remaining = function(v) want("remaining", v, "number") facts.remaining = v end,
  server_time = function(v) facts.server_time = integer("server_time", v) end,
  local_time = function(v) facts.local_time = integer("local_time", v) end,
  jitter = function(v) want("jitter", v, "number") facts.jitter = v end,
}

local function read(what, t, setters)
  for k, v in pairs(t) do
    local set = setters[k]
    if not set then error("bad " .. what .. " (unknown field '" .. tostring(k) .. "')", 0) end
    set(v)
  end
end

local function delay_of(d)
  if d < 0 then return nil end
  return d
end

-- decide([rules,] facts) -> verdict; the shapes of eidkit.core.retry_decide.
function _M.decide(r, f)
  ffi_fill(rules, ffi_sizeof(rules))
  ffi_fill(facts, ffi_sizeof(facts))
  if r ~= nil then
    if type(r) ~= "table" then error("bad argument #1 to 'decide' (table expected)", 2) end
    read("rules", r, RULES)
  end
  if type(f) ~= "table" then error("bad argument #2 to 'decide' (table expected)", 2) end
  read("facts", f, FACTS)
  if f.outcome == nil then error("bad field 'outcome' (" .. NO_OUTCOME .. ")", 0) end
  local st = C.eid_retry_decide(rules, facts, verdict, err)
  -- Leave no pointer into the caller's strings.
  facts.action, facts.remote_code = nil, nil
  if st ~= 0 then
    error("bad argument to 'decide' (" .. ffi_string(err.message) .. ")", 0)
  end
  local v = verdict
  return {
    status = ffi_string(C.eid_status_code(v.status)),
    code = ffi_string(v.code),
    transient = v.transient ~= 0,
    sent = v.sent ~= 0,
    retryable = v.retryable ~= 0,
    adopt_skew = v.adopt_skew ~= 0,
    skew = tonumber(v.skew),
    resign = v.resign ~= 0,
    ask_policy = v.ask_policy ~= 0,
    backoff = delay_of(v.backoff),
    default_delay = delay_of(v.default_delay),
    delay = delay_of(v.delay),
    keep_received = v.keep_received ~= 0,
  }
end

local delay_facts = ffi_new("eid_retry_facts")

-- delay(remaining, wanted) -> wanted | nil: the deadline rule for a retry
-- policy's answer (eid_retry_delay).
function _M.delay(remaining, wanted)
  if type(remaining) ~= "number" then error("bad argument #1 to 'delay' (number expected)", 2) end
  if wanted ~= nil and type(wanted) ~= "number" then error("bad argument #2 to 'delay' (number expected)", 2) end
  delay_facts.remaining = remaining
  return delay_of(C.eid_retry_delay(delay_facts, wanted or -1))
end

return _M
