-- eidkit.openresty.ledger: the EidToken ledger on Redis inside an nginx
-- worker, through resty.redis cosockets (the worker yields while Redis
-- answers; it never blocks), with the connections kept in nginx's pool.
--
--   local ledger = require("eidkit.openresty.ledger").open("redis://127.0.0.1:6379/0")
--   assert(ledger:issue{ EidToken = tok, MerchantId = mid, subject = "user-42" })
--   local rec, err = ledger:claim(tok, "user-42")
--   local rec, err = ledger:consume(tok, "user-42")  -- once; then err.code == "consumed"
--
-- The same data, methods, records and error tables as eidkit.ledger on the
-- C Redis backend (issue, get, claim, record, consume, due, export, expire,
-- stats, attempts, sweep, take): a token issued, recorded or swept on one
-- host is read, swept and exported on the other. What is not written twice:
--   * the transition scripts and their prologue (ERR_EXPIRED, ERR_PENDING,
--     FIELDS, NO_VERDICT): eid_ledger_redis_script gives the text the C
--     backend runs, so the SHA-1 sent with EVALSHA is the same;
--   * the record's hash fields (eid_ledger_redis_field) and how a record is
--     read, `open` included (eid_ledger_redis_entry), the state names,
--     issue's and take's argument checks (eid_ledger_check_issue, _take),
--     the claim rule (eid_ledger_check_claim) and the refusals' codes and
--     messages (eid_ledger_redis_refusal): libeidkit through eidkit.ffi.
--   * record's digest of the response and its script arguments
--     (eid_ledger_digest_json, eid_ledger_redis_record_args: the builder
--     the C backend's r_record calls), the index walks' rules
--     (eid_ledger_is_due, eid_ledger_is_open, eid_ledger_redis_expirable),
--     the attempts' decoding and order (eid_ledger_redis_attempts), and the
--     sweep (eidkit.ledger.sweep, eidkit.ledger's own).
-- Payloads are not stored or read here: sealing needs the ledger's key,
-- which only the C ledger holds (opening with keep_payloads raises).
-- open("sqlite:PATH") gives the C ledger itself through the FFI instead
-- (eidkit.ledger.capi: blocking local calls, payloads supported).
--
-- Cosockets exist in rewrite, access and content handlers and in timers,
-- not in init_by_lua, set_by_lua, header or body filters, log_by_lua.
local ffi = require "ffi"
local eidffi = require "eidkit.ffi"

local type, error, tostring, tonumber, pairs, ipairs, setmetatable = type, error, tostring, tonumber, pairs, ipairs,
  setmetatable
local format, byte, find, sub = string.format, string.byte, string.find, string.sub
local unpack, ngx = unpack, ngx
local ffi_new, ffi_string = ffi.new, ffi.string

-- Debian's lua-nginx-redis ships lua-resty-redis as nginx.redis; OpenResty
-- bundles it as resty.redis.
local function load_redis()
  local ok, mod = pcall(require, "resty.redis")
  if ok then return mod end
  local ok2, mod2 = pcall(require, "nginx.redis")
  if ok2 then return mod2 end
  error("eidkit.openresty.ledger: neither resty.redis nor nginx.redis loads: " .. tostring(mod), 3)
end

local _M = {}

local DEFAULT_TTL, RESULT_WINDOW, RETENTION = 7200, 3 * 86400, 7 * 86400
local TIMESTAMP_MAX = 253402300799
local EID_OK, EID_E_INVALID_ARG, EID_E_BUFFER_TOO_SMALL = 0, 1, 3
local EID_E_INTERNAL, EID_E_LEDGER_UNAVAILABLE, EID_E_LEDGER_STORAGE = 5, 12, 13
local EID_E_LEDGER_UNKNOWN = 6
local CONSUMED, EXPIRED, ABANDONED = 3, 4, 5
-- What a refusal for want of a password adds, as the C backend says it.
local NOAUTH_HINT = " (give the password in the URL: redis://:PASSWORD@HOST:PORT/DB)"

local error_mt = { __tostring = function(e) return e.code .. ": " .. e.message end }

-- { code, message, retryable } as eidkit.core's error: `unavailable` is
-- retryable (nothing changed), no other is.
local function failure(st, message)
  local C = eidffi.lib()
  if not message or message == "" then message = ffi_string(C.eid_strerror(st)) end
  return nil, setmetatable({ code = ffi_string(C.eid_status_code(st)), message = message,
    retryable = st == EID_E_LEDGER_UNAVAILABLE }, error_mt)
end

local cerr = ffi_new("eid_error")
local function from_c(st) return failure(st, ffi_string(cerr.message)) end

-- ----------------------------------------------------- what C gives us

local scripts, FIELDS -- loaded once per worker, on first open

local function hex(s)
  return (s:gsub(".", function(c) return format("%02x", byte(c)) end))
end

-- name -> { text =, sha = }: the backend's own text (prologue + file).
local function load_scripts()
  if scripts then return scripts, FIELDS end
  local C = eidffi.lib()
  local len = ffi_new("size_t[1]")
  local list = {}
  for _, name in pairs { "issue", "record", "consume", "expire", "take", "read" } do
    local st = C.eid_ledger_redis_script(name, nil, 0, len)
    if st ~= EID_E_BUFFER_TOO_SMALL then error("eidkit.openresty.ledger: no script " .. name, 3) end
    local n = tonumber(len[0])
    local buf = ffi_new("char[?]", n + 1)
    st = C.eid_ledger_redis_script(name, buf, n + 1, len)
    if st ~= EID_OK then error("eidkit.openresty.ledger: no script " .. name, 3) end
    local text = ffi_string(buf, n)
    list[name] = { text = text, sha = hex(ngx.sha1_bin(text)) }
  end
  local fields, i = {}, 0
  while true do
    local f = C.eid_ledger_redis_field(i)
    if f == nil then break end
    i = i + 1
    fields[i] = ffi_string(f)
  end
  scripts, FIELDS = list, fields
  return scripts, FIELDS
end

-- ----------------------------------------------------------- the URL

-- redis://[[USER]:PASSWORD@]HOST:PORT[/DB][?prefix=P], read by the C
-- backend's own parser (eid_ledger_redis_url_parse): one grammar, the
-- same refusals in the same words.
local function parse_url(url)
  local C = eidffi.lib()
  local u = ffi_new("eid_ledger_redis_url")
  if C.eid_ledger_redis_url_parse(url, u, cerr) ~= EID_OK then return nil, ffi_string(cerr.message) end
  local loc = { host = ffi_string(u.host), port = u.port, db = u.db, prefix = ffi_string(u.prefix) }
  if u.has_password ~= 0 then loc.user, loc.password = ffi_string(u.user), ffi_string(u.password) end
  C.eid_ledger_redis_url_clear(u)
  return loc
end

-- The pool a ledger's connections go back to names its server, database
-- and login: a connection authenticated as one user is never handed to a
-- ledger opened as another. Logins are numbered in this worker rather than
-- named, so that no pool name (nginx may log them) carries a secret.
local logins, n_logins = {}, 0
local function login_id(user, password)
  if not password then return 0 end
  local k = user .. "\0" .. password
  if not logins[k] then
    n_logins = n_logins + 1
    logins[k] = n_logins
  end
  return logins[k]
end

-- ------------------------------------------------------ connections

local mt = { __index = {} }
local methods = mt.__index

-- A connection from the worker's pool (SELECT only on a fresh one), or
-- nil, err. The pool name holds the database, so a pooled connection is
-- never handed to a ledger on another one.
local function connect(self)
  local red = self.redis:new()
  -- One timeout for connect, send and read. (set_timeouts before connect
  -- makes this nginx log "attempt to send data on a closed socket".)
  red:set_timeout(self.timeout_ms)
  local ok, err = red:connect(self.host, self.port, self.connect_opts)
  if not ok then
    return nil, format("redis: cannot connect to %s:%d: %s", self.host, self.port, tostring(err))
  end
  if (red:get_reused_times() or 0) == 0 then
    if self.password then
      local res, aerr
      if self.user ~= "" then res, aerr = red:auth(self.user, self.password) else res, aerr = red:auth(self.password) end
      if not res then
        red:close()
        -- Redis's refusal names neither the user nor the password.
        return nil, format("redis: AUTH at %s:%d failed: %s", self.host, self.port, sub(tostring(aerr), 1, 150))
      end
    end
    if self.db ~= 0 then
      local res, serr = red:select(self.db)
      if not res then
        red:close()
        return nil, format("redis: SELECT %d failed: %s%s", self.db, sub(tostring(serr), 1, 150),
          find(tostring(serr), "^NOAUTH") and NOAUTH_HINT or "")
      end
    end
  end
  return red
end

local function release(self, red)
  -- Back to the pool for the next request; a failed put only loses the
  -- connection.
  local ok = red:set_keepalive(self.keepalive_ms, self.pool_size)
  if not ok then red:close() end
end

-- Redis's own refusal (an error reply) as the C backend classes it.
local function reply_failure(msg)
  msg = sub(tostring(msg), 1, 160)
  if find(msg, "^OOM") or find(msg, "^MISCONF") or find(msg, "^READONLY") then
    return failure(EID_E_LEDGER_STORAGE, "redis: " .. msg)
  end
  if find(msg, "^LOADING") or find(msg, "^BUSY") then
    return failure(EID_E_LEDGER_UNAVAILABLE, "redis: " .. msg)
  end
  if find(msg, "^NOAUTH") then return failure(EID_E_LEDGER_UNAVAILABLE, "redis: " .. msg .. NOAUTH_HINT) end
  return failure(EID_E_INTERNAL, "redis: " .. msg)
end

-- run(self, fn, a, b, c, d): fn(red, a, b, c, d) -> res | false, reply error |
-- nil, I/O error. A broken connection is made again and fn run once more
-- (every call here is safe to repeat, as in the C backend); then
-- unavailable. The hot paths (get, script) pass module-level functions and
-- their arguments rather than a closure: making a closure on every call
-- stops LuaJIT from compiling the caller.
local function run(self, fn, a, b, c, d)
  local last
  for _ = 1, 2 do
    local red, cerr_msg = connect(self)
    if red then
      local res, err = fn(red, a, b, c, d)
      if res ~= nil then
        if res == false then
          release(self, red)
          return reply_failure(err)
        end
        release(self, red)
        return res
      end
      red:close() -- an I/O error: the connection's state is unknown
      last = format("redis: connection to %s:%d lost: %s", self.host, self.port, tostring(err))
    else
      last = cerr_msg
    end
  end
  return failure(EID_E_LEDGER_UNAVAILABLE, last)
end

-- A committed pipeline's replies as run wants them: the list, or false and
-- the first error reply in it, or nil and the I/O error.
local function pipeline_replies(r, e)
  if not r then return nil, e end
  for i = 1, #r do
    if type(r[i]) == "table" and r[i][1] == false then return false, r[i][2] end
  end
  return r
end

-- EVALSHA the backend's script; EVAL its text when the server answers
-- NOSCRIPT (a restart, SCRIPT FLUSH), which caches it again.
local function eval_script(red, self, sc, nkeys, args)
  local res, err = red:evalsha(sc.sha, nkeys, unpack(args))
  if res == false and find(tostring(err), "^NOSCRIPT") then
    self.noscript = self.noscript + 1
    res, err = red:eval(sc.text, nkeys, unpack(args))
  end
  return res, err
end

local function script(self, name, nkeys, ...)
  return run(self, eval_script, self, self.scripts[name], nkeys, { ... })
end

-- ----------------------------------------------------------- records

local null = ngx.null

-- One per worker: filled and read with no yield in between (claim reads it
-- right after get, before anything else runs in the worker).
local entry = ffi_new("eid_ledger_entry")
local values, lens, nvalues -- sized once FIELDS is known

local function set_time(rec, k, v)
  if v ~= 0 then rec[k] = tonumber(v) end
end

-- v[first .. first + #FIELDS - 1] (the FIELDS values) and the payload
-- length, read into `entry` by libeidkit (eid_ledger_redis_entry: the C
-- backend's own reader, `open` as of now included). nil, err if the record
-- does not exist.
local function read_entry(v, first, payload_len, now, out)
  if not values then
    nvalues = #FIELDS + 1
    values, lens = ffi_new("const char *[?]", nvalues), ffi_new("size_t[?]", nvalues)
  end
  -- The strings stay referenced by v (and `keep`) during the call.
  local keep = {}
  for i = 1, nvalues do
    local x = i <= #FIELDS and v[first + i - 1] or payload_len
    if x == nil or x == null then
      values[i - 1], lens[i - 1] = nil, 0
    else
      x = tostring(x)
      keep[i] = x
      values[i - 1], lens[i - 1] = x, #x
    end
  end
  out = out or entry
  local st = eidffi.lib().eid_ledger_redis_entry(values, lens, nvalues, now, out)
  if st ~= EID_OK then
    if st == EID_E_INVALID_ARG then return failure(EID_E_INTERNAL, "redis: unexpected record") end
    return from_c(eidffi.lib().eid_ledger_redis_refusal("unknown_token", cerr))
  end
  return out, keep
end

-- The record eidkit.core pushes for `entry` (bindings/ledger.c push_entry);
-- `open` only where eid_ledger_get sets it.
local function record_of(self, e, with_open)
  local rec = {
    EidToken = ffi_string(e.token), MerchantId = ffi_string(e.merchant_id),
    subject = ffi_string(e.subject), Extra = ffi_string(e.extra),
    state = ffi_string(eidffi.lib().eid_ledger_state_name(e.state)),
    created_at = tonumber(e.created_at), expires_at = tonumber(e.expires_at),
    result_deadline = tonumber(e.result_deadline),
    pulls = tonumber(e.pulls), attempts = tonumber(e.attempts), billable = tonumber(e.billable),
    intention = e.intention ~= 0, has_payload = e.has_payload ~= 0,
  }
  set_time(rec, "finished_at", e.finished_at)
  set_time(rec, "consumed_at", e.consumed_at)
  set_time(rec, "last_pull_at", e.last_pull_at)
  if e.has_err_code ~= 0 then rec.ErrCode = tonumber(e.err_code) end
  if e.has_late_err_code ~= 0 then rec.late_ErrCode = tonumber(e.late_err_code) end
  if e.state == CONSUMED then rec.settled_billable = tonumber(e.settled_billable) end
  if e.retry_later ~= 0 then rec.retry_later = true end
  if with_open and e.open ~= 0 then rec.open = true end
  if self.request_ids then
    local ids = {}
    for id in ffi_string(e.request_ids):gmatch("[^,]+") do ids[#ids + 1] = id end
    rec.request_ids = ids
  end
  return rec
end

-- A script's answer, {"ok", record, payload length [, late]} or {code},
-- read into `entry` by libeidkit (eid_ledger_redis_entry_packed: the record
-- is one JSON string, see the scripts' RECORD). Returns entry, or nil, err.
local function packed_entry(res, now)
  if type(res) ~= "table" or type(res[1]) ~= "string" then
    return failure(EID_E_INTERNAL, "redis: unexpected script answer")
  end
  if res[1] ~= "ok" then return from_c(eidffi.lib().eid_ledger_redis_refusal(res[1], cerr)) end
  local rec, plen = res[2], res[3]
  if type(rec) ~= "string" or type(plen) ~= "number" then
    return failure(EID_E_INTERNAL, "redis: unexpected script answer")
  end
  local st = eidffi.lib().eid_ledger_redis_entry_packed(rec, #rec, plen, now, entry)
  if st == EID_OK then return entry end
  if st == EID_E_LEDGER_UNKNOWN then
    return from_c(eidffi.lib().eid_ledger_redis_refusal("unknown_token", cerr))
  end
  return failure(EID_E_INTERNAL, "redis: unexpected script answer")
end

-- A transition's answer: the record and whether the token is still open.
local function answer(self, res, now)
  local e, err = packed_entry(res, now)
  if not e then return nil, err end
  return record_of(self, e, false), e.open ~= 0
end

-- What issue, consume and record send, as functions for run (no closure
-- per request, as in script and get).
--
-- Each call's commands share one connection: a call that gave its
-- connection back and took one again for a follow-up would take the one
-- nginx had just handed a queued waiter (the backlog), and the waiter would
-- open another: a burst on a full pool churned connections.

-- issue: both indexes in one round trip, then the script. Indexed before
-- the hash exists, so an index never misses a token; either index failing
-- fails the call before the script runs.
local function issue_cmds(red, self, sc, args)
  red:init_pipeline(2)
  red:zadd(self.created_key, "NX", args.score, args.token)
  red:zadd(self.due_key, "NX", args.score, args.token)
  local r, e = pipeline_replies(red:commit_pipeline())
  if not r then return r, e end
  return eval_script(red, self, sc, 1, args)
end

-- consume, record: the script, read as a transition's answer ({record,
-- open, late}; {nil, err} when the answer is a refusal). A token the call
-- closed leaves the due index, as in the C backend, on the same
-- connection; best effort (the next due walk drops a stale member): an I/O
-- error there closes the connection (run then cannot pool it) and the
-- answer stands, as the script has run.
local function transition(red, self, sc, nkeys, args)
  local res, err = eval_script(red, self, sc, nkeys, args)
  if not res then return res, err end
  local rec, open = answer(self, res, args.now)
  if rec and not open then
    local ok = red:zrem(self.due_key, args.token)
    if ok == nil then red:close() end
  end
  return { rec, open, late = type(res) == "table" and res[4] == 1 }
end

-- --------------------------------------------- one pipeline a turn
--
-- Every poll of a pending token records its answer (and takes from the
-- upstream bucket; a claim the worker has not cached reads the record):
-- a script a request. Sent one by one, each costs the worker a pooled
-- connection's round (take, send, a read that first finds nothing, read,
-- give back) and redis-server a read and a write of its own. Instead the
-- scripts the requests of one turn of the worker's event loop call go out
-- together, on one connection, as one pipeline (docs/internals/openresty.md,
-- "One pipeline a turn").
--
-- The end of a turn is where ngx.semaphore resumes a waiter (its post is an
-- nginx posted event, run after the turn's I/O events and timers; a timer
-- or ngx.sleep(0) would run only after the next turn's I/O). So a few
-- flushers (timers) wait on `wake`; the first call of a batch posts it, and
-- the flusher that wakes takes the whole batch at the end of the turn.
-- While every flusher waits on Redis, calls keep joining the open batch.

local semaphore -- ngx.semaphore, loaded with the first batch
local FLUSHERS = 4 -- batches in flight at once, each on its own connection
local IDLE_S = 30 -- a flusher with nothing to send for this long ends

local function batch_cmds(red, self, b)
  local n = b.n
  red:init_pipeline(n)
  for i = 1, n do
    local it = b[i]
    red:evalsha(it.sc.sha, it.nkeys, unpack(it.args))
  end
  local r, e = red:commit_pipeline()
  if not r then return nil, e end
  local closed
  for i = 1, n do
    local it, res = b[i], r[i]
    if type(res) == "table" and res[1] == false and find(tostring(res[2]), "^NOSCRIPT") then
      self.noscript = self.noscript + 1
      local err
      res, err = red:eval(it.sc.text, it.nkeys, unpack(it.args))
      if res == nil then return nil, err end
      if res == false then res = { false, err } end
    end
    if type(res) == "table" and res[1] == false then
      b.out[i], b.err[i] = reply_failure(res[2])
    elseif it.raw then
      b.out[i] = res
    else
      local rec, open = answer(self, res, it.args.now)
      if rec and not open then
        closed = closed or {}
        closed[#closed + 1] = it.args.token
      end
      b.out[i] = { rec, open, late = type(res) == "table" and res[4] == 1 }
    end
  end
  if closed then
    local ok = red:zrem(self.due_key, unpack(closed))
    if ok == nil then red:close() end
  end
  return true
end

-- Sends batch b and hands each caller its answer; a failure of the whole
-- pipeline (Redis unreachable twice, or a fault here) is every caller's.
local function flush(self, b)
  self.batches = self.batches + 1
  local ok, r, err = pcall(run, self, batch_cmds, self, b)
  if not ok then r, err = failure(EID_E_INTERNAL, "redis: ledger batch failed: " .. tostring(r)) end
  if not r then
    for i = 1, b.n do b.out[i], b.err[i] = nil, err end
  end
  b.sema:post(b.n)
end

local function flusher(premature, self)
  local q = self.batching
  -- Waits of a second, so that a worker told to quit (a reload) is not
  -- held up by its flushers for longer than that.
  local idle = 0
  while not premature and not ngx.worker.exiting() and idle < IDLE_S do
    if q.wake:wait(1) then
      idle = 0
      local b = q.open
      q.open = nil
      if b then flush(self, b) end
    else
      idle = idle + 1
    end
  end
  q.running = q.running - 1
  -- Calls that joined a batch before the worker began to quit still get
  -- their answer (later calls go straight to Redis).
  local b = q.open
  if b and ngx.worker.exiting() then
    q.open = nil
    flush(self, b)
  end
end

local function start_flushers(self)
  local q = self.batching
  if not q.wake then
    semaphore = semaphore or require "ngx.semaphore"
    q.wake = semaphore.new()
  end
  while q.running < FLUSHERS do
    if not ngx.timer.at(0, flusher, self) then break end
    q.running = q.running + 1
  end
  return q.running > 0
end

-- The script's call through this turn's batch: its answer as transition()
-- gives it, or (raw) as the script gave it; nil, err when Redis could not
-- be reached or refused.
local function batched(self, sc, nkeys, args, raw)
  local q = self.batching
  if not q or ngx.worker.exiting() or (q.running < FLUSHERS and not start_flushers(self)) then
    if raw then return run(self, eval_script, self, sc, nkeys, args) end
    return run(self, transition, self, sc, nkeys, args)
  end
  local b = q.open
  if not b then
    b = { n = 0, out = {}, err = {}, sema = semaphore.new() }
    q.open = b
    q.wake:post(1)
  end
  local i = b.n + 1
  b.n = i
  b[i] = { sc = sc, nkeys = nkeys, args = args, raw = raw }
  local ok, werr = b.sema:wait(q.wait_s)
  if not ok then
    return failure(EID_E_LEDGER_UNAVAILABLE, "redis: no answer to the record batch: " .. tostring(werr))
  end
  local out = b.out[i]
  if out == nil then return nil, b.err[i] end
  return out
end

-- --------------------------------------------------------------- open

-- open(url [, opts]) -> ledger | nil, err (a malformed URL: invalid_arg).
-- "sqlite:PATH" opens the C ledger through the FFI instead
-- (eidkit.ledger.capi: blocking local calls, payloads supported).
-- opts: token_ttl, result_window, retention (s, as eidkit.ledger.open),
-- timeout_ms (connect, send and read; default 5000), clock (function
-- returning Unix seconds; default ngx.time), request_ids (false: records
-- without the list), pool_size (connections per worker, default 1024: at
-- most this many open at once; a handler making several calls in a row may
-- take the connection a queued waiter was handed, which then opens another,
-- so a pool smaller than the bursts churns connections), backlog
-- (calls that may wait for one of them, default 4096; past it a call fails
-- as when Redis cannot be reached), keepalive_ms (an idle pooled
-- connection's life, default 60000), batch (false: each get, record,
-- consume and take on a pooled connection of its own rather than in its
-- turn's pipeline).
-- Nothing is sent to Redis here: cosockets may not exist where a ledger is
-- made (init_by_lua), and each call connects from the pool.
function _M.open(url, opts)
  if type(url) ~= "string" then error("bad argument #1 to 'open' (url: expected string)", 2) end
  if opts ~= nil and type(opts) ~= "table" then
    error("bad argument #2 to 'open' (expected table of options)", 2)
  end
  opts = opts or {}
  if opts.clock ~= nil and type(opts.clock) ~= "function" then
    error("bad argument #2 to 'open' (clock: expected function)", 2)
  end
  -- sqlite:PATH (any URL but redis://): the C ledger through the FFI, a
  -- blocking local call (eidkit.ledger.capi says when that is acceptable).
  if not find(url, "^redis://") then return require("eidkit.ledger.capi").open(url, opts) end
  local loc, why = parse_url(url)
  if not loc then return failure(EID_E_INVALID_ARG, why) end
  -- Sealing a payload needs the key, which only the C ledger holds: refused
  -- here rather than records silently stored without one.
  for _, k in ipairs { "keep_payloads", "payload_key", "payload_key_hex" } do
    if opts[k] then
      error(("bad argument #2 to 'open' (%s: payloads are not supported by eidkit.openresty.ledger;"
        .. " use eidkit.ledger)"):format(k), 2)
    end
  end
  local self = setmetatable({
    redis = load_redis(), host = loc.host, port = loc.port, db = loc.db, prefix = loc.prefix,
    user = loc.user, password = loc.password,
    pool = format("eidkit-ledger:%s:%d:%d:%d", loc.host, loc.port, loc.db, login_id(loc.user, loc.password)),
    token_ttl = opts.token_ttl or DEFAULT_TTL, result_window = opts.result_window or RESULT_WINDOW,
    retention = opts.retention or RETENTION, timeout_ms = opts.timeout_ms or 5000,
    clock = opts.clock or ngx.time, request_ids = opts.request_ids ~= false,
    pool_size = opts.pool_size or 1024, backlog = opts.backlog or 4096,
    keepalive_ms = opts.keepalive_ms or 60000,
    noscript = 0, -- EVALs after NOSCRIPT, for specs and metrics
    batches = 0, -- pipelines sent (one a turn), for specs
  }, mt)
  -- At most pool_size connections at once; a call finding them all busy
  -- waits for one (in a queue of up to `backlog`) rather than opening
  -- another: Redis answers in well under a millisecond, and a burst of
  -- requests (a thousand clients whose upstream calls end together) would
  -- otherwise open and close a connection each.
  self.connect_opts = { pool = self.pool, pool_size = self.pool_size, backlog = self.backlog }
  self.scripts = load_scripts()
  self.due_key, self.created_key = self.prefix .. "due", self.prefix .. "created"
  if opts.batch ~= false then
    -- The semaphores are made in the worker that uses them (open may run
    -- in init_by_lua, in the master).
    self.batching = { running = 0, wait_s = 3 * self.timeout_ms / 1000 + 1 }
  end
  return self
end

local function key_of(self, token) return self.prefix .. "{" .. token .. "}" end

-- The ledger's time, read once per call like the C binding's clock.
local function now_of(self)
  local t = self.clock()
  if type(t) ~= "number" or t < 0 or t > TIMESTAMP_MAX or t % 1 ~= 0 then
    error("eidkit.openresty.ledger clock must return integer Unix seconds", 3)
  end
  return t
end

local nonce_n = 0
-- Tells our own resent write from another's: unique per worker and call.
local function nonce()
  nonce_n = nonce_n + 1
  return format("%x-%x-%x-%x", ngx.worker.pid(), ngx.now() * 1000, nonce_n, math.random(0, 0x7fffffff))
end

local params = ffi_new("eid_ledger_issue_params")

-- A token a lookup is given may come from a user: malformed is simply not
-- in the ledger (unknown_token with eid_ledger_check_issue's message), as
-- eidkit.core answers; not a string raises.
local function lookup_token(token, fname)
  if type(token) ~= "string" then error(("bad argument #1 to '%s' (string expected)"):format(fname), 3) end
  params.token, params.merchant_id, params.subject, params.extra = token, "m", "s", nil
  if eidffi.lib().eid_ledger_check_issue(params, cerr) ~= EID_OK then return from_c(EID_E_LEDGER_UNKNOWN) end
  return true
end

local ISSUE_FIELDS = { EidToken = true, MerchantId = true, subject = true, Extra = true,
  created_at = true, expires_at = true, intention = true }

-- ledger:issue{EidToken=, MerchantId=, subject= [, Extra=, created_at=, expires_at=, intention=]}
--   -> true | nil, err (exists, unavailable, ...)
function methods.issue(self, t)
  if type(t) ~= "table" then error("bad argument #1 to 'issue' (table expected)", 2) end
  for k in pairs(t) do
    if not ISSUE_FIELDS[k] then error(("bad argument #1 to 'issue' (unknown field '%s')"):format(tostring(k)), 2) end
  end
  for _, k in pairs { "EidToken", "MerchantId", "subject", "Extra" } do
    if t[k] ~= nil and type(t[k]) ~= "string" then
      error(("bad argument #1 to 'issue' (%s: expected string)"):format(k), 2)
    end
  end
  params.token, params.merchant_id, params.subject, params.extra = t.EidToken, t.MerchantId, t.subject, t.Extra
  local st = eidffi.lib().eid_ledger_check_issue(params, cerr)
  if st ~= EID_OK then error(("bad argument #1 to 'issue' (%s)"):format(ffi_string(cerr.message)), 2) end
  local created = t.created_at or now_of(self)
  if created == 0 then created = now_of(self) end
  if type(created) ~= "number" or created < 0 or created > TIMESTAMP_MAX then
    error("bad argument #1 to 'issue' (created_at: out of range)", 2)
  end
  local expires = t.expires_at
  if expires == nil or expires == 0 then expires = created + self.token_ttl end
  if type(expires) ~= "number" or expires <= created or expires > TIMESTAMP_MAX then
    error("bad argument #1 to 'issue' (expires_at: must be after created_at)", 2)
  end
  local deadline = created + self.result_window
  -- Relative to the ledger's clock, so an injected clock keeps its meaning.
  local keep = deadline + self.retention - created
  if keep <= 0 then keep = 1 end
  local token = t.EidToken
  local sc = format("%d", created)
  -- Indexed before the hash exists, so an index never misses a token.
  local args = { key_of(self, token), token, t.MerchantId, t.subject, t.Extra or "",
    sc, format("%d", expires), format("%d", deadline), nonce(), format("%d", keep), t.intention and "1" or "0",
    token = token, score = sc }
  local res, err = run(self, issue_cmds, self, self.scripts.issue, args)
  if not res then return nil, err end
  if type(res) == "table" and res[1] == "ok" then return true end
  if type(res) == "table" and type(res[1]) == "string" then
    return from_c(eidffi.lib().eid_ledger_redis_refusal(res[1], cerr))
  end
  return failure(EID_E_INTERNAL, "redis: unexpected script answer")
end

-- Whether a record exists, and its stored attempts, in one round trip.
local function read_attempts(red, key)
  red:init_pipeline(2)
  red:exists(key)
  red:hgetall(key .. ":attempts")
  return pipeline_replies(red:commit_pipeline())
end

-- ledger:get(EidToken) -> record | nil, err (unknown_token, unavailable, ...),
-- `open` as eid_ledger_get sets it (eid_ledger_redis_entry_packed).
function methods.get(self, token)
  local okt, terr = lookup_token(token, "get")
  if not okt then return nil, terr end
  -- One script answering one string, not HMGET's twenty-odd bulk strings:
  -- lua-resty-redis reads each of those with two socket calls.
  local res, err = batched(self, self.scripts.read, 1, { key_of(self, token) }, true)
  if not res then return nil, err end
  local e, rerr = packed_entry(res, now_of(self))
  if not e then return nil, rerr end
  return record_of(self, e, true)
end

-- ledger:now() -> the ledger's time (integer Unix seconds), as every call reads it.
function methods.now(self) return now_of(self) end

-- ledger:claim(EidToken, subject) -> record | nil, err; changes nothing.
function methods.claim(self, token, subject)
  if type(token) ~= "string" then error("bad argument #1 to 'claim' (string expected)", 2) end
  if type(subject) ~= "string" then error("bad argument #2 to 'claim' (string expected)", 2) end
  local okt, terr = lookup_token(token, "claim")
  if not okt then return nil, terr end
  local rec, err = self:get(token)
  if not rec then return nil, err end
  -- eid_ledger_claim's record is the backend's, without `open`.
  rec.open = nil
  local st = eidffi.lib().eid_ledger_check_claim(entry.subject, entry.state, entry.expires_at, subject,
    now_of(self), cerr)
  if st == EID_E_INVALID_ARG then error("bad argument #2 to 'claim' (" .. ffi_string(cerr.message) .. ")", 2) end
  if st ~= EID_OK then return from_c(st) end
  return rec
end

-- ledger:consume(EidToken, subject) -> record | nil, err; once per token.
function methods.consume(self, token, subject)
  if type(token) ~= "string" then error("bad argument #1 to 'consume' (string expected)", 2) end
  if type(subject) ~= "string" then error("bad argument #2 to 'consume' (string expected)", 2) end
  local okt, terr = lookup_token(token, "consume")
  if not okt then return nil, terr end
  local now = now_of(self)
  -- As the C backend, a closed token leaves the due index (a failure
  -- consumed before its TTL stays, the user may retry).
  local out, err = batched(self, self.scripts.consume, 1,
    { key_of(self, token), format("%d", now), subject, nonce(), token = token, now = now })
  if not out then return nil, err end
  if not out[1] then return nil, out[2] end
  return out[1]
end

-- The response as JSON for eid_ledger_digest_json: JSON text (record's
-- response may be given so) as it is; a table through a private cjson
-- (settings never leak to other users of the module), where a sparse list
-- becomes an object (no entries, as rawlen sees most such tables) instead
-- of an error, and 14 significant digits (lua-cjson's most) keep ReqTime's
-- 13-digit milliseconds exact.
local json
local function encode(res)
  if type(res) == "string" then return true, res end
  if not json then
    json = require("cjson").new()
    json.encode_sparse_array(true)
    json.encode_number_precision(14)
    json.encode_max_depth(32)
  end
  return pcall(json.encode, res)
end

local digest_out = ffi_new("eid_ledger_digest *[1]")
local args_out = ffi_new("eid_ledger_redis_args *[1]")
local arg_len = ffi_new("size_t[1]")

-- The record script's keys (key, the token's) and ARGV for `res` at now,
-- from libeidkit (the digest and eid_ledger_record's checks, then the
-- arguments r_record sends), or raises (level) naming the field at fault,
-- as eidkit.core's record does.
local function record_args(key, token, res, now, level)
  local ok, text = encode(res)
  if not ok then error("bad argument #2 to 'record' (response: " .. tostring(text) .. ")", level) end
  local C = eidffi.lib()
  local st = C.eid_ledger_digest_json(text, #text, digest_out, cerr)
  if st ~= EID_OK then
    if st == EID_E_INVALID_ARG then error("bad argument #2 to 'record' (" .. ffi_string(cerr.message) .. ")", level) end
    return from_c(st)
  end
  local d = digest_out[0]
  st = C.eid_ledger_redis_record_args(token, C.eid_ledger_digest_outcome(d), now, args_out, cerr)
  C.eid_ledger_digest_free(d)
  if st ~= EID_OK then
    -- As eidkit.core: a malformed token is simply not in the ledger (it
    -- usually comes from a user), not misuse.
    if st == EID_E_INVALID_ARG and ffi_string(cerr.field) == "token" then return from_c(EID_E_LEDGER_UNKNOWN) end
    if st == EID_E_INVALID_ARG then error("bad argument #2 to 'record' (" .. ffi_string(cerr.message) .. ")", level) end
    return from_c(st)
  end
  local a = args_out[0]
  local n = tonumber(C.eid_ledger_redis_args_count(a))
  local out = { key, key .. ":attempts" }
  for i = 0, n - 1 do
    local p = C.eid_ledger_redis_args_get(a, i, arg_len)
    out[i + 3] = ffi_string(p, arg_len[0])
  end
  C.eid_ledger_redis_args_free(a)
  return out
end

-- ledger:record(EidToken, response) -> record | nil, err (unknown_token,
-- unavailable, ...): one GetEidResult answer (the Response table, or a body
-- with Response; either as a table or as its JSON text), applied by the
-- backend's record script with the arguments libeidkit builds for it;
-- raises naming the field when the answer cannot be read. A third argument (a payload) raises: payloads are
-- sealed with the ledger's key, which only the C ledger holds.
methods.record_text = true -- record takes a response's JSON text as well as its table
function methods.record(self, token, res, payload)
  if type(token) ~= "string" then error("bad argument #1 to 'record' (string expected)", 2) end
  if type(res) ~= "table" and type(res) ~= "string" then
    error("bad argument #2 to 'record' (table or JSON text expected)", 2)
  end
  if payload ~= nil then
    error("bad argument #3 to 'record' (payloads are not stored by eidkit.openresty.ledger: "
      .. "it holds no payload key)", 2)
  end
  local now = now_of(self)
  local args, aerr = record_args(key_of(self, token), token, res, now, 3)
  if not args then return nil, aerr end
  -- As r_record, a token that can no longer change leaves the due index.
  args.token, args.now = token, now
  local out, err = batched(self, self.scripts.record, 2, args)
  if not out then return nil, err end
  local rec = out[1]
  if not rec then return nil, out[2] end
  -- The script's last element: this call stored a late pass.
  if out.late then rec.late = true end
  return rec
end

-- ------------------------------------------------- walking the indexes

local BATCH = 256 -- as the C backend's walk
local NEXT, STOP, DROP = 0, 1, 2

-- The C backend's walk (ledger_redis.c): zkey from rank `start` in batches
-- of BATCH, each record read by pipelined HMGET + HSTRLEN into e (its own
-- struct: a visit may yield); visit(e or nil when the hash is gone, token,
-- score) -> NEXT | STOP | DROP | DROP + STOP, or nil, err. Members a visit
-- drops are removed after their batch (best effort, as in C) and the rank
-- adjusted. -> true | nil, err
local function walk(self, zkey, start, now, visit)
  local e = ffi_new("eid_ledger_entry")
  local rank = start
  while true do
    local z, err = run(self, function(red) return red:zrange(zkey, rank, rank + BATCH - 1, "WITHSCORES") end)
    if not z then return nil, err end
    if type(z) ~= "table" then return failure(EID_E_INTERNAL, "redis: unexpected ZRANGE reply") end
    local n = #z / 2
    local replies
    if n > 0 then
      replies, err = run(self, function(red)
        red:init_pipeline(2 * n)
        for i = 1, n do
          local key = key_of(self, z[2 * i - 1])
          red:hmget(key, unpack(FIELDS))
          red:hstrlen(key, "payload")
        end
        return red:commit_pipeline()
      end)
      if not replies then return nil, err end
      for i = 1, 2 * n do
        local r = replies[i]
        if type(r) == "table" and r[1] == false then return reply_failure(r[2]) end
      end
    end
    local drop, go_on = {}, n == BATCH
    for i = 1, n do
      local tok, score = z[2 * i - 1], tonumber(z[2 * i])
      local h = replies[2 * i - 1]
      if type(h) ~= "table" then return failure(EID_E_INTERNAL, "redis: unexpected HMGET reply") end
      local rec
      if h[1] ~= nil and h[1] ~= null then
        local got, rerr = read_entry(h, 1, replies[2 * i], now, e)
        if not got then return nil, rerr end
        rec = got
      end
      local v, verr = visit(rec, tok, score)
      if v == nil then return nil, verr end
      if v >= DROP then drop[#drop + 1] = tok; v = v - DROP end
      if v == STOP then go_on = false break end
    end
    if #drop > 0 then run(self, function(red) return red:zrem(zkey, unpack(drop)) end) end
    if not go_on then return true end
    rank = rank + n - #drop
  end
end

local function is_due(e, now) return eidffi.lib().eid_ledger_is_due(e, now) ~= 0 end
local function is_open(e, now) return eidffi.lib().eid_ledger_is_open(e, now) ~= 0 end

-- ledger:due([limit]) -> {record...} | nil, err: the tokens whose result
-- must still be pulled, oldest first (limit 1..100000, default 100).
function methods.due(self, limit)
  if limit == nil then limit = 100 end
  if type(limit) ~= "number" or limit % 1 ~= 0 or limit < 1 or limit > 100000 then
    error("bad argument #1 to 'due' (limit must be 1..100000)", 2)
  end
  local now = now_of(self)
  local out = {}
  local ok, err = walk(self, self.due_key, 0, now, function(e, _, score)
    -- A member with no hash yet may be an issue in flight: keep it a while.
    if e == nil then return score < now - 60 and DROP or NEXT end
    if not is_due(e, now) then return is_open(e, now) and NEXT or DROP end
    out[#out + 1] = record_of(self, e, false)
    return #out < limit and NEXT or STOP
  end)
  if not ok then return nil, err end
  return out
end

local function export_bound(t, k)
  local v = t[k]
  if v == nil then return 0 end
  if type(v) ~= "number" or v % 1 ~= 0 or v < 0 then
    error(("bad argument #1 to 'export' (%s: expected non-negative integer Unix seconds)"):format(k), 3)
  end
  return v
end

-- ledger:export([{from =, to =}]) -> {record...} | nil, err: the tokens
-- created in [from, to) (absent or 0: open), by (created_at, token), each
-- with `open` as eid_ledger_export sets it.
function methods.export(self, t)
  local from, to = 0, 0
  if t ~= nil then
    if type(t) ~= "table" then error("bad argument #1 to 'export' (table expected)", 2) end
    from, to = export_bound(t, "from"), export_bound(t, "to")
  end
  if to == 0 then to = math.huge end
  if from > to then error("bad argument #1 to 'export' (from: after 'to')", 2) end
  local now = now_of(self)
  local start, err = run(self, function(red) return red:zcount(self.created_key, "-inf", format("(%d", from)) end)
  if not start then return nil, err end
  local out = {}
  local ok
  ok, err = walk(self, self.created_key, tonumber(start), now, function(e, _, score)
    if score >= to then return STOP end
    if e == nil or score < from then return NEXT end
    out[#out + 1] = record_of(self, e, true)
    return NEXT
  end)
  if not ok then return nil, err end
  return out
end

-- ledger:expire([now]) -> {expired = n, abandoned = n} | nil, err: issued
-- tokens past their TTL become expired, issued/expired ones past their
-- result window abandoned (the backend's expire script), as of now (absent
-- or 0: the ledger's clock).
function methods.expire(self, at)
  if at ~= nil and (type(at) ~= "number" or at % 1 ~= 0 or at < 0 or at > TIMESTAMP_MAX) then
    error("bad argument #1 to 'expire' (now: out of range)", 2)
  end
  local now = (at == nil or at == 0) and now_of(self) or at
  local counts = { expired = 0, abandoned = 0 }
  local snow = format("%d", now)
  local C = eidffi.lib()
  local ok, err = walk(self, self.due_key, 0, now, function(e, tok, score)
    if e == nil then return score < now - 60 and DROP or NEXT end
    if C.eid_ledger_redis_expirable(e, now) ~= 0 then
      local res, serr = script(self, "expire", 1, key_of(self, tok), snow)
      if not res then return nil, serr end
      local what = type(res) == "table" and res[1]
      if what == "expired" then
        counts.expired = counts.expired + 1
        e.state = EXPIRED
      elseif what == "abandoned" then
        counts.abandoned = counts.abandoned + 1
        e.state = ABANDONED
      end
    end
    return is_open(e, now) and NEXT or DROP
  end)
  if not ok then return nil, err end
  -- The hashes of tokens this old are gone (EXPIRE); trim their index.
  local _, terr = run(self, function(red)
    return red:zremrangebyscore(self.created_key, "-inf", format("(%d", now - self.result_window - self.retention))
  end)
  if terr then return nil, terr end
  return counts
end

-- ledger:stats() -> {issued =, passed =, ..., total =, billable =, due =} | nil, err
function methods.stats(self)
  local now = now_of(self)
  local count, billable, due = {}, 0, 0
  local ok, err = walk(self, self.created_key, 0, now, function(e)
    if e == nil then return NEXT end
    local st = tonumber(e.state)
    count[st] = (count[st] or 0) + 1
    billable = billable + tonumber(e.billable)
    if is_due(e, now) then due = due + 1 end
    return NEXT
  end)
  if not ok then return nil, err end
  return eidffi.counts_table(count, billable, due)
end

-- ledger:attempts(EidToken) -> {attempt...} | nil, err: every LivenessDetail
-- entry recorded, once per Seq, by ReqTime then Seq (libeidkit decodes and
-- orders them, as for the C backend).
function methods.attempts(self, token)
  local okt, terr = lookup_token(token, "attempts")
  if not okt then return nil, terr end
  local res, err = run(self, read_attempts, key_of(self, token))
  if not res then return nil, err end
  if res[1] ~= 1 then return from_c(eidffi.lib().eid_ledger_redis_refusal("unknown_token", cerr)) end
  local flat = res[2]
  if type(flat) ~= "table" then return failure(EID_E_INTERNAL, "redis: unexpected HGETALL reply") end
  local n = #flat
  local vals, vlens = ffi_new("const char *[?]", n + 1), ffi_new("size_t[?]", n + 1)
  for i = 1, n do vals[i - 1], vlens[i - 1] = flat[i], #flat[i] end
  local cap = math.floor(n / 2)
  local list = ffi_new("eid_ledger_attempt[?]", cap + 1)
  local count = ffi_new("size_t[1]")
  local st = eidffi.lib().eid_ledger_redis_attempts(vals, vlens, n, list, cap, count)
  if st ~= EID_OK then return failure(EID_E_INTERNAL, "redis: unexpected attempts") end
  local out = {}
  for i = 0, tonumber(count[0]) - 1 do
    out[#out + 1] = eidffi.attempt_table(list[i])
  end
  return out
end

-- ledger:payload(EidToken): raises, as eidkit.core does for a ledger opened
-- without a payload key (this one never holds one); a malformed token is
-- unknown_token first, as there.
function methods.payload(_, token)
  local okt, terr = lookup_token(token, "payload")
  if not okt then return nil, terr end
  error("bad argument #1 to 'payload' (payload: no payload key configured)", 2)
end

-- ledger:sweep(pull [, opts]) -> report | nil, err: eidkit.ledger.sweep, the
-- sweep eidkit.ledger runs, over these methods.
methods.sweep = require "eidkit.ledger.sweep"

-- One run of take.lua for take (cost "1") or give (cost "-1"), the
-- arguments checked in op's name as eidkit.core checks them.
local function bucket(self, op, cost, key, rate, burst, now_ms)
  if type(key) ~= "string" then error(format("bad argument #1 to '%s' (string expected)", op), 3) end
  if type(rate) ~= "number" then error(format("bad argument #2 to '%s' (number expected)", op), 3) end
  if type(burst) ~= "number" then error(format("bad argument #3 to '%s' (number expected)", op), 3) end
  if now_ms ~= nil and (type(now_ms) ~= "number" or now_ms % 1 ~= 0) then
    error(format("bad argument #4 to '%s' (integer expected)", op), 3)
  end
  now_ms = now_ms or 0
  local ttl = ffi_new("int64_t[1]")
  local st = eidffi.lib().eid_ledger_check_take(key, rate, burst, now_ms, ttl, cerr)
  if st ~= EID_OK then error(format("bad argument to '%s' (%s)", op, ffi_string(cerr.message)), 3) end
  if now_ms == 0 then now_ms = now_of(self) * 1000 end
  local res, err = batched(self, self.scripts.take, 1, { self.prefix .. "bucket:" .. key, format("%d", now_ms),
    format("%.17g", rate), format("%.17g", burst), format("%d", tonumber(ttl[0])), cost }, true)
  if not res then return nil, err end
  if type(res) == "table" and res[1] == 1 then return true end
  if type(res) == "table" and res[1] == 0 and type(res[2]) == "string" then return false, tonumber(res[2]) end
  return failure(EID_E_INTERNAL, "redis: unexpected script answer")
end

-- ledger:take(key, rate, burst [, now_ms]) -> true | false, retry_after_s | nil, err:
-- one token from the bucket `key` (take.lua, shared with every C ledger on
-- this Redis; now_ms absent or 0: the ledger's clock).
function methods.take(self, key, rate, burst, now_ms)
  return bucket(self, "take", "1", key, rate, burst, now_ms)
end

-- ledger:give(key, rate, burst [, now_ms]) -> true | nil, err: one token
-- back into the bucket `key`, never above burst (eid_ledger_give's rule,
-- the same script).
function methods.give(self, key, rate, burst, now_ms)
  local ok, err = bucket(self, "give", "-1", key, rate, burst, now_ms)
  if ok == false then return failure(EID_E_INTERNAL, "redis: the bucket refused a give") end
  return ok, err
end

-- ledger:backend() -> "redis"
function methods.backend() return "redis" end

-- ledger:script_shas() -> {name = sha1 hex}: what EVALSHA sends, for specs.
function methods.script_shas(self)
  local out = {}
  for name, sc in pairs(self.scripts) do out[name] = sc.sha end
  return out
end

-- ledger:close(): nothing to free (connections live in nginx's pool).
function methods.close() end

-- For eidkit.ledger.capi (the C ledger through the FFI), which builds the
-- same records and errors: not an API.
_M.internal = { record_of = record_of, failure = failure, encode = encode }

mt.__tostring = function(self) return format("eidkit.openresty.ledger (redis %s:%d/%d)", self.host, self.port, self.db) end

return _M
