-- eidkit.ledger.capi: the C ledger (libeidkit's eid_ledger_* API) through
-- the LuaJIT FFI, for eidkit.openresty.ledger.open("sqlite:PATH") in nginx.
--
-- EVERY CALL BLOCKS THE WORKER on local disk I/O (SQLite, with its busy
-- timeout while another process holds the write lock): this is the one
-- blocking call eidkit allows in a worker, for a single node whose ledger
-- is a local file. Several nodes, or a worker that must never wait on a
-- disk: use redis:// (cosockets). Open it after the fork (in
-- init_worker_by_lua* or on first use), one per worker process, never in
-- init_by_lua*.
--
-- The methods, records and errors are eidkit.ledger's: the transitions,
-- checks and sealing are eid_ledger_*'s own, the response digest is
-- eid_ledger_digest_json (the Redis ledger's too), and the sweep is
-- eidkit.ledger.sweep. Payloads work here (the key stays in C):
-- payload_key (32 bytes) or payload_key_hex, and keep_payloads stores each
-- recorded response as its JSON text.
local ffi = require "ffi"
local eidffi = require "eidkit.ffi"
local orledger = require "eidkit.openresty.ledger"

local type, error, tostring, tonumber, pairs, ipairs, setmetatable = type, error, tostring, tonumber, pairs, ipairs,
  setmetatable
local format, char = string.format, string.char
local ffi_new, ffi_string, ffi_gc, ffi_copy, ffi_sizeof = ffi.new, ffi.string, ffi.gc, ffi.copy, ffi.sizeof

local internal = orledger.internal
local record_of, failure, encode = internal.record_of, internal.failure, internal.encode

local EID_OK, EID_E_INVALID_ARG, EID_E_BUFFER_TOO_SMALL = 0, 1, 3
local EID_E_LEDGER_UNKNOWN = 6
local TIMESTAMP_MAX = 253402300799
local PAGE = 256 -- export's page, as the Lua 5.4 binding's

local _M = {}

local mt = { __index = {} }
local methods = mt.__index

local cerr = ffi_new("eid_error")

local function from_c(st) return failure(st, ffi_string(cerr.message)) end

-- eidkit.core's rule (eidkit_ledger_job_misuse): a malformed token given to
-- a lookup is unknown_token; any other invalid_arg is misuse and raises,
-- naming the argument the caller wrote.
local LOOKUP = { claim = true, consume = true, get = true, record = true, payload = true, attempts = true }
local ISSUE_NAMES = { token = "EidToken", merchant_id = "MerchantId", extra = "Extra" }

local function fail(op, st)
  if st ~= EID_E_INVALID_ARG then return from_c(st) end
  local field, msg = ffi_string(cerr.field), ffi_string(cerr.message)
  if LOOKUP[op] and field == "token" then return failure(EID_E_LEDGER_UNKNOWN, msg) end
  local argn = 1
  if op == "issue" then
    if ISSUE_NAMES[field] then msg = ISSUE_NAMES[field] .. msg:sub(#field + 1) end
  elseif op == "claim" or op == "consume" then
    argn = field == "subject" and 2 or 1
  elseif op == "record" then
    argn = field == "payload" and 3 or field == "token" and 1 or 2
  elseif op == "take" or op == "give" then
    argn = field == "rate" and 2 or field == "burst" and 3 or 1
  end
  error(format("bad argument #%d to '%s' (%s)", argn, op, msg), 3)
end

local function from_hex(s)
  if type(s) ~= "string" or #s ~= 64 or s:find("[^%x]") then return nil end
  return (s:gsub("%x%x", function(h) return char(tonumber(h, 16)) end))
end

-- ngx.time in a worker (the cached time, as the Redis ledger's), os.time elsewhere.
local function default_clock()
  local ngx = rawget(_G, "ngx")
  return ngx and ngx.time or os.time
end

local function opt_int(opts, k)
  local v = opts[k]
  if v == nil then return 0 end
  if type(v) ~= "number" or v % 1 ~= 0 or v < 0 then
    error(format("bad argument #2 to 'open' (%s: expected a non-negative integer)", k), 3)
  end
  return v
end

-- open(url, opts) -> ledger | nil, err; called by eidkit.openresty.ledger.open
-- for every URL that is not redis://.
function _M.open(url, opts)
  local C = eidffi.lib()
  local key = opts.payload_key
  if opts.payload_key_hex ~= nil then
    key = from_hex(opts.payload_key_hex)
    if not key then error("bad argument #2 to 'open' (payload_key_hex: expected 64 hex digits)", 3) end
  end
  if key ~= nil and (type(key) ~= "string" or #key ~= 32) then
    error("bad argument #2 to 'open' (payload_key: expected 32 bytes)", 3)
  end
  if opts.keep_payloads and not key then
    error("bad argument #2 to 'open' (keep_payloads: needs payload_key or payload_key_hex)", 3)
  end
  local cell = ffi_new("int64_t[1]")
  local o = ffi_new("eid_ledger_options")
  o.clock.now, o.clock.ud = C.eid_ledger_clock_cell, cell
  o.token_ttl, o.result_window = opt_int(opts, "token_ttl"), opt_int(opts, "result_window")
  o.retention, o.timeout_ms = opt_int(opts, "retention"), opt_int(opts, "timeout_ms")
  if key then o.payload_key, o.payload_key_len = ffi.cast("const unsigned char *", key), #key end
  local self = setmetatable({ cell = cell, clock = opts.clock or default_clock(),
    request_ids = opts.request_ids ~= false, keep_payloads = opts.keep_payloads and true or false,
    entry = ffi_new("eid_ledger_entry") }, mt)
  self:tick()
  local out = ffi_new("eid_ledger *[1]")
  local st = C.eid_ledger_open(url, o, out, cerr)
  if st ~= EID_OK then return from_c(st) end
  self.l = ffi_gc(out[0], C.eid_ledger_free)
  return self
end

-- The clock's reading; an error names the caller `level` frames up.
local function read_clock(self, level)
  local t = self.clock()
  if type(t) ~= "number" or t < 0 or t > TIMESTAMP_MAX or t % 1 ~= 0 then
    error("eidkit.openresty.ledger clock must return integer Unix seconds", level)
  end
  return t
end

-- ledger:now() -> the ledger's time (integer Unix seconds), as every call reads it.
function methods.now(self) return read_clock(self, 3) end

-- The ledger's time for the next call, read once as the C binding's clock.
function methods.tick(self)
  local t = read_clock(self, 4)
  self.cell[0] = t
  return t
end

local function handle(self)
  if not self.l then error("attempt to use a closed eidkit.openresty.ledger", 3) end
  self:tick()
  return eidffi.lib(), self.l
end

local function check_string(v, n, op)
  if type(v) ~= "string" then error(format("bad argument #%d to '%s' (string expected)", n, op), 3) end
end

local ISSUE_FIELDS = { EidToken = true, MerchantId = true, subject = true, Extra = true,
  created_at = true, expires_at = true, intention = true }
local params = ffi_new("eid_ledger_issue_params")

function methods.issue(self, t)
  if type(t) ~= "table" then error("bad argument #1 to 'issue' (table expected)", 2) end
  for k in pairs(t) do
    if not ISSUE_FIELDS[k] then error(format("bad argument #1 to 'issue' (unknown field '%s')", tostring(k)), 2) end
  end
  for _, k in ipairs { "EidToken", "MerchantId", "subject", "Extra" } do
    if t[k] ~= nil and type(t[k]) ~= "string" then error(format("bad argument #1 to 'issue' (%s: expected string)", k), 2) end
  end
  for _, k in ipairs { "created_at", "expires_at" } do
    local v = t[k]
    if v ~= nil and (type(v) ~= "number" or v % 1 ~= 0 or v < 0) then
      error(format("bad argument #1 to 'issue' (%s: expected non-negative integer Unix seconds)", k), 2)
    end
  end
  local C, l = handle(self)
  params.token, params.merchant_id, params.subject, params.extra = t.EidToken, t.MerchantId, t.subject, t.Extra
  params.created_at, params.expires_at = t.created_at or 0, t.expires_at or 0
  params.intention = t.intention and 1 or 0
  local st = C.eid_ledger_issue(l, params, cerr)
  if st ~= EID_OK then return fail("issue", st) end
  return true
end

local function entry_call(self, op, fn, token, subject)
  check_string(token, 1, op)
  if subject ~= nil or op == "claim" or op == "consume" then check_string(subject, 2, op) end
  local C, l = handle(self, op)
  local st
  if subject ~= nil then st = C[fn](l, token, subject, self.entry, cerr) else st = C[fn](l, token, self.entry, cerr) end
  if st ~= EID_OK then return fail(op, st) end
  return record_of(self, self.entry, op == "get")
end

function methods.claim(self, token, subject) return entry_call(self, "claim", "eid_ledger_claim", token, subject) end
function methods.consume(self, token, subject)
  return entry_call(self, "consume", "eid_ledger_consume", token, subject)
end
function methods.get(self, token) return entry_call(self, "get", "eid_ledger_get", token) end

local digest_out = ffi_new("eid_ledger_digest *[1]")
local outcome = ffi_new("eid_ledger_outcome")

-- ledger:record(EidToken, response [, payload]): the response (a table, or
-- its JSON text) digested by eid_ledger_digest_json, applied by
-- eid_ledger_record (payload: sealed by C with the ledger's key;
-- keep_payloads: the response's JSON text).
methods.record_text = true -- record takes a response's JSON text as well as its table
function methods.record(self, token, res, payload)
  check_string(token, 1, "record")
  if type(res) ~= "table" and type(res) ~= "string" then
    error("bad argument #2 to 'record' (table or JSON text expected)", 2)
  end
  if payload ~= nil and type(payload) ~= "string" then error("bad argument #3 to 'record' (string expected)", 2) end
  local ok, text = encode(res)
  if not ok then error("bad argument #2 to 'record' (response: " .. tostring(text) .. ")", 2) end
  local C, l = handle(self)
  local st = C.eid_ledger_digest_json(text, #text, digest_out, cerr)
  if st == EID_E_INVALID_ARG then error("bad argument #2 to 'record' (" .. ffi_string(cerr.message) .. ")", 2) end
  if st ~= EID_OK then return from_c(st) end
  local d = digest_out[0]
  ffi_copy(outcome, C.eid_ledger_digest_outcome(d), ffi_sizeof(outcome))
  if payload == nil and self.keep_payloads then payload = text end
  if payload ~= nil then outcome.payload, outcome.payload_len = ffi.cast("const char *", payload), #payload end
  st = C.eid_ledger_record(l, token, outcome, self.entry, cerr)
  outcome.payload, outcome.details, outcome.request_id = nil, nil, nil
  C.eid_ledger_digest_free(d)
  if st ~= EID_OK then return fail("record", st) end
  local rec = record_of(self, self.entry, false)
  if self.entry.late_pass ~= 0 then rec.late = true end
  return rec
end

local function list_of(self, list, n, with_open)
  local out = {}
  for i = 0, n - 1 do out[i + 1] = record_of(self, list[i], with_open) end
  return out
end

function methods.due(self, limit)
  if limit == nil then limit = 100 end
  if type(limit) ~= "number" or limit % 1 ~= 0 or limit < 1 or limit > 100000 then
    error("bad argument #1 to 'due' (limit must be 1..100000)", 2)
  end
  local C, l = handle(self)
  local list, n = ffi_new("eid_ledger_entry[?]", limit), ffi_new("size_t[1]")
  local st = C.eid_ledger_due(l, list, limit, n, cerr)
  if st ~= EID_OK then return fail("due", st) end
  return list_of(self, list, tonumber(n[0]), false)
end

function methods.export(self, t)
  local from, to = 0, 0
  if t ~= nil then
    if type(t) ~= "table" then error("bad argument #1 to 'export' (table expected)", 2) end
    for _, k in ipairs { "from", "to" } do
      local v = t[k]
      if v ~= nil and (type(v) ~= "number" or v % 1 ~= 0 or v < 0) then
        error(format("bad argument #1 to 'export' (%s: expected non-negative integer Unix seconds)", k), 2)
      end
    end
    from, to = t.from or 0, t.to or 0
  end
  local C, l = handle(self)
  local page, n = ffi_new("eid_ledger_entry[?]", PAGE), ffi_new("size_t[1]")
  local out, after, last = {}, 0, nil
  repeat
    local st = C.eid_ledger_export(l, from, to, after, last, page, PAGE, n, cerr)
    if st ~= EID_OK then return fail("export", st) end
    local got = tonumber(n[0])
    for i = 0, got - 1 do out[#out + 1] = record_of(self, page[i], true) end
    if got > 0 then after, last = page[got - 1].created_at, ffi_string(page[got - 1].token) end
  until got < PAGE
  return out
end

function methods.expire(self, at)
  if at ~= nil and (type(at) ~= "number" or at % 1 ~= 0 or at < 0 or at > TIMESTAMP_MAX) then
    error("bad argument #1 to 'expire' (now: out of range)", 2)
  end
  local C, l = handle(self)
  local e, a = ffi_new("uint64_t[1]"), ffi_new("uint64_t[1]")
  local st = C.eid_ledger_expire(l, at or 0, e, a, cerr)
  if st ~= EID_OK then return fail("expire", st) end
  return { expired = tonumber(e[0]), abandoned = tonumber(a[0]) }
end

function methods.stats(self)
  local C, l = handle(self)
  local c = ffi_new("eid_ledger_counts")
  local st = C.eid_ledger_stats(l, c, cerr)
  if st ~= EID_OK then return fail("stats", st) end
  return eidffi.counts_table(c.count, c.billable, c.due)
end

function methods.attempts(self, token)
  check_string(token, 1, "attempts")
  local C, l = handle(self)
  local n = ffi_new("size_t[1]")
  local st = C.eid_ledger_attempts(l, token, nil, 0, n, cerr)
  if st ~= EID_OK and st ~= EID_E_BUFFER_TOO_SMALL then return fail("attempts", st) end
  local want = tonumber(n[0])
  local list = ffi_new("eid_ledger_attempt[?]", want + 1)
  if want > 0 then
    st = C.eid_ledger_attempts(l, token, list, want, n, cerr)
    if st ~= EID_OK and st ~= EID_E_BUFFER_TOO_SMALL then return fail("attempts", st) end
  end
  local out = {}
  for i = 0, math.min(want, tonumber(n[0])) - 1 do
    out[#out + 1] = eidffi.attempt_table(list[i])
  end
  return out
end

function methods.payload(self, token)
  check_string(token, 1, "payload")
  local C, l = handle(self)
  local n = ffi_new("size_t[1]")
  local st = C.eid_ledger_payload(l, token, nil, 0, n, cerr)
  if st ~= EID_OK and st ~= EID_E_BUFFER_TOO_SMALL then return fail("payload", st) end
  local len = tonumber(n[0])
  local buf = ffi_new("char[?]", len + 1)
  st = C.eid_ledger_payload(l, token, buf, len, n, cerr)
  if st ~= EID_OK then return fail("payload", st) end
  return ffi_string(buf, n[0])
end

-- take's and give's arguments, checked in the caller's name.
local function check_bucket(op, key, rate, burst, now_ms)
  if type(key) ~= "string" then error(format("bad argument #1 to '%s' (string expected)", op), 3) end
  if type(rate) ~= "number" then error(format("bad argument #2 to '%s' (number expected)", op), 3) end
  if type(burst) ~= "number" then error(format("bad argument #3 to '%s' (number expected)", op), 3) end
  if now_ms ~= nil and (type(now_ms) ~= "number" or now_ms % 1 ~= 0 or now_ms < 0) then
    error(format("bad argument #4 to '%s' (integer expected)", op), 3)
  end
end

function methods.take(self, key, rate, burst, now_ms)
  check_bucket("take", key, rate, burst, now_ms)
  local C, l = handle(self)
  local allowed, retry = ffi_new("int[1]"), ffi_new("double[1]")
  local st = C.eid_ledger_take(l, key, rate, burst, now_ms or 0, allowed, retry, cerr)
  if st ~= EID_OK then return fail("take", st) end
  if allowed[0] ~= 0 then return true end
  return false, tonumber(retry[0])
end

function methods.give(self, key, rate, burst, now_ms)
  check_bucket("give", key, rate, burst, now_ms)
  local C, l = handle(self)
  local st = C.eid_ledger_give(l, key, rate, burst, now_ms or 0, cerr)
  if st ~= EID_OK then return fail("give", st) end
  return true
end

methods.sweep = require "eidkit.ledger.sweep"

function methods.backend(self)
  if not self.l then error("attempt to use a closed eidkit.openresty.ledger", 2) end
  return ffi_string(eidffi.lib().eid_ledger_backend(self.l))
end

-- ledger:close(): frees the C ledger now (else the GC does); again is a no-op.
function methods.close(self)
  if self.l then
    local l = self.l
    self.l = nil
    eidffi.lib().eid_ledger_free(ffi_gc(l, nil))
  end
end

mt.__tostring = function(self) return "eidkit.openresty.ledger (" .. (self.l and self:backend() or "closed") .. ")" end

return _M
