-- Time eidkit.ffi signing inside an nginx worker (OpenResty's LuaJIT), the
-- counterpart of bench/bench_sign.lua on the Lua 5.4 binding. Served by the
-- nginx that bench/openresty/sign starts, as content_by_lua_file, with
--   ?vectors=PATH&vector=NAME&reps=N&target_ms=MS
-- and answers the same "result" lines bench/bench_sign.lua prints. Not a test.
--
-- Each timed call is what a handler writes: a fresh request table passed to
-- eidffi.sign, which returns a fresh headers table; both allocations and
-- their garbage are part of the cost. The clock is os.clock (the worker's CPU
-- time), as in bench_sign.lua; this blocks the worker for the whole run,
-- which only a benchmark may do.
local cjson = require "cjson"
local eidffi = require "eidkit.ffi"

local clock, fmt = os.clock, string.format
local args = ngx.req.get_uri_args()
local reps = assert(tonumber(args.reps), "reps")
local target_ms = assert(tonumber(args.target_ms), "target_ms")

local function load_vector()
  local f = assert(io.open(args.vectors, "rb"))
  local doc = cjson.decode(f:read("*a"))
  f:close()
  for _, v in ipairs(doc.vectors) do
    if v.name == args.vector then return v end
  end
  error("no vector named " .. tostring(args.vector))
end

local v = load_vector()
local want_auth = fmt("TC3-HMAC-SHA256 Credential=%s/%s/%s/tc3_request, SignedHeaders=%s, Signature=%s",
  v.secret_id, os.date("!%Y-%m-%d", v.timestamp), v.service,
  table.concat(v.signed_headers, ";"), v.signature)

local secret_id, secret_key, host, service = v.secret_id, v.secret_key, v.host, v.service
local action, version, content_type = v.action, v.version, v.content_type
local timestamp, body, signed_headers = v.timestamp, v.body, v.signed_headers
-- Same length as the real secret (bench_sign.lua flips a bit; LuaJIT has no ~).
local other_key = (secret_key:sub(1, 1) == "A" and "B" or "A") .. secret_key:sub(2)

local out = {}
local function check(headers, what)
  if headers == nil or headers.Authorization ~= want_auth then
    error(fmt("%s signs wrongly: got %s", what, headers and headers.Authorization or "nil"))
  end
end

local function run_cached(n)
  local sign = eidffi.sign
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

-- A one-slot signer fed two secrets in turn: every call derives its key.
local fresh_signer = assert(eidffi.signer { cache_slots = 1 })
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

local function measure(id, label, fn)
  local n = 256
  while true do -- doubling until one run lasts target_ms is also the warm-up (and the JIT's)
    local t0 = clock()
    check(fn(n), label)
    if (clock() - t0) * 1000 >= target_ms then break end
    n = n * 2
  end
  local us = {}
  for i = 1, reps do
    collectgarbage("collect")
    local t0 = clock()
    local h = fn(n)
    us[i] = (clock() - t0) * 1e6 / n
    check(h, label)
  end
  table.sort(us)
  local mid = math.floor((reps + 1) / 2)
  local median = reps % 2 == 1 and us[mid] or (us[mid] + us[mid + 1]) / 2
  out[#out + 1] = fmt("result\t%s\t%s\t%.4f\t%.4f\t%.4f\t%d\t%d\n", id, label, median, us[1], us[reps], n, reps)
end

local misses = eidffi.cache_stats().misses
measure("ffi_worker_cached", "LuaJIT FFI in an nginx worker, eidffi.sign{...}, cached key", run_cached)
-- One miss at most: the very first call derives the key.
if eidffi.cache_stats().misses > misses + 1 then error("the cached case missed the key cache") end
measure("ffi_worker_fresh", "LuaJIT FFI in an nginx worker, signer:sign{...}, fresh key (1 slot)", run_fresh)
if fresh_signer:cache_stats().hits ~= 0 then error("the fresh case hit the key cache") end
fresh_signer:close()

ngx.print(fmt("# worker: %s, libeidkit_sign %s at %s\n", jit.version, eidffi.version(), eidffi.sign_library_path))
ngx.print(table.concat(out))
