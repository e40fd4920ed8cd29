-- Time eidkit.sign from Lua on one TC3 vector. Run by bench/run under both
-- the eidkit host and stock lua5.4:
--   bench_sign.lua VECTORS.json VECTOR_NAME REPS TARGET_MS ID_PREFIX LABEL_PREFIX
-- Prints the same "result" lines as bench_sign.c. Not part of the test suite.
--
-- Each timed call is what a merchant writes: a fresh request table passed to
-- eidkit.sign, which returns a fresh headers table; both allocations and the
-- garbage they make are part of the cost.
--
-- The clock is os.clock (process CPU time): stock Lua has no finer wall
-- clock, and for one single-threaded busy loop CPU time and wall time agree.
local eidkit = require "eidkit"
local cjson = require "cjson"

local clock = os.clock
local fmt = string.format

local vectors_path, vector_name, reps, target_ms, id_prefix, label_prefix = ...
reps = assert(math.tointeger(tonumber(reps)), "REPS must be an integer")
target_ms = assert(tonumber(target_ms), "TARGET_MS must be a number")
assert(id_prefix and label_prefix, "usage: bench_sign.lua VECTORS NAME REPS TARGET_MS ID LABEL")

local function load_vector()
  local f = assert(io.open(vectors_path, "rb"))
  local doc = cjson.decode(f:read("a"))
  f:close()
  for _, v in ipairs(doc.vectors) do
    if v.name == vector_name then return v end
  end
  error("no vector named " .. vector_name)
end

local v = load_vector()
-- Framed with os.date, not eidkit.utc_date, so a wrong date is caught too.
local want_auth = fmt("TC3-HMAC-SHA256 Credential=%s/%s/%s/tc3_request, SignedHeaders=%s, Signature=%s",
  v.secret_id, os.date("!%Y-%m-%d", v.timestamp), v.service,
  table.concat(v.signed_headers, ";"), v.signature)

-- Upvalues, as a request handler would have its config and body in locals.
local secret_id, secret_key, host, service = v.secret_id, v.secret_key, v.host, v.service
local action, version, content_type = v.action, v.version, v.content_type
local timestamp, body, signed_headers = v.timestamp, v.body, v.signed_headers
-- Same length as the real secret, so both halves of the fresh case do the same work.
local other_key = string.char(secret_key:byte(1) ~ 1) .. secret_key:sub(2)

local function check(headers, what)
  if headers == nil or headers.Authorization ~= want_auth then
    io.stderr:write(fmt("%s signs wrongly\n  got  %s\n  want %s\n", what,
      headers and headers.Authorization or "nil", want_auth))
    os.exit(1)
  end
  return headers
end

local function run_cached(n)
  local sign = eidkit.sign
  local h
  for _ = 1, n do
    h = sign {
      secret_id = secret_id, secret_key = secret_key, host = host, service = service,
      action = action, version = version, content_type = content_type,
      timestamp = timestamp, body = body, signed_headers = signed_headers,
    }
  end
  return h
end

-- A one-slot signer fed two secrets in turn: every call derives its key, as
-- in the C fresh case. The slot holds secret_key's key when a run starts and
-- n is even, so a run ends on secret_key and its result can be checked.
local fresh_signer = eidkit.signer { cache_slots = 1 }
local function run_fresh(n)
  local s = fresh_signer
  local h
  for i = 1, n do
    h = s:sign {
      secret_id = secret_id, secret_key = i % 2 == 1 and other_key or secret_key, host = host,
      service = service, action = action, version = version, content_type = content_type,
      timestamp = timestamp, body = body, signed_headers = signed_headers,
    }
  end
  return h
end

local function time_run(fn, n)
  local t0 = clock()
  local h = fn(n)
  return clock() - t0, h
end

-- Doubling n until one run lasts TARGET_MS is also the warm-up.
local function measure(id, label, fn)
  local n = 256
  while true do
    local t, h = time_run(fn, n)
    check(h, label)
    if t * 1000 >= target_ms then break end
    n = n * 2
  end
  local us = {}
  for i = 1, reps do
    collectgarbage("collect") -- every rep starts from the same heap
    local t, h = time_run(fn, n)
    check(h, label)
    us[i] = t * 1e6 / n
  end
  table.sort(us)
  local mid = (reps + 1) // 2
  local median = reps % 2 == 1 and us[mid] or (us[mid] + us[mid + 1]) / 2
  io.stdout:write(fmt("result\t%s\t%s\t%.4f\t%.4f\t%.4f\t%d\t%d\n", id, label, median, us[1],
    us[reps], n, reps))
  io.stdout:flush()
end

-- Say which eidkit.core was loaded, so a stale installed copy cannot pass for the build.
local core_from = package.preload["eidkit.core"] and "preloaded by the host"
  or package.searchpath("eidkit.core", package.cpath)
io.stderr:write(fmt("%s: %s, eidkit.core %s (%s), %s, body %d bytes\n", label_prefix, _VERSION,
  eidkit._VERSION, core_from, vector_name, #body))
check(run_cached(1), label_prefix .. " cached")
local cached_stats = eidkit.core.cache_stats()
measure(id_prefix .. "_cached", label_prefix .. " eidkit.sign{...}, cached key", run_cached)
if eidkit.core.cache_stats().misses ~= cached_stats.misses then
  error("the cached case missed the key cache")
end

check(fresh_signer:sign { secret_id = secret_id, secret_key = secret_key, host = host,
  service = service, action = action, version = version, content_type = content_type,
  timestamp = timestamp, body = body, signed_headers = signed_headers }, label_prefix .. " fresh")
measure(id_prefix .. "_fresh", label_prefix .. " signer:sign{...}, fresh key (1 slot)", run_fresh)
if fresh_signer:cache_stats().hits ~= 0 then error("the fresh case hit the key cache") end
fresh_signer:close()
