-- eidkit.ffi under LuaJIT, the way OpenResty calls it: libeidkit's C signer
-- through the FFI, with no C module. Run (ctest ffi_luajit):
--   LUA_PATH='lua/?.lua;;' LUA_CPATH='build/lua/?.so;;' luajit spec/ffi/sign_ffi.lua VECTORS LIB
-- LIB is the libeidkit the documented search must find from LUA_CPATH (the
-- build tree's), compared by real path.
local cjson = require "cjson"
local eidffi = require "eidkit.ffi"

local vectors_path, want_lib = arg[1], arg[2]
assert(vectors_path and want_lib, "usage: luajit sign_ffi.lua vectors.json path/to/libeidkit.so")

local f = assert(io.open(vectors_path, "rb"))
local doc = cjson.decode(f:read("*a"))
f:close()

local failures, count = 0, 0
local function check(name, ok, detail)
  count = count + 1
  if not ok then
    failures = failures + 1
    io.stderr:write(name, ": ", tostring(detail), "\n")
  end
end

local function realpath(p)
  local h = assert(io.popen("readlink -f '" .. p:gsub("'", "'\\''") .. "'"))
  local out = h:read("*l")
  h:close()
  return out
end

local function request(v)
  return {
    secret_id = v.secret_id, secret_key = v.secret_key, service = v.service, host = v.host,
    action = v.action, version = v.version, region = v.region, timestamp = v.timestamp,
    content_type = v.content_type, body = v.body, signed_headers = v.signed_headers,
  }
end

local function authorization(v)
  return v.authorization or
    ("TC3-HMAC-SHA256 Credential=%s/%s/%s/tc3_request, SignedHeaders=%s, Signature=%s"):format(
      v.secret_id, os.date("!%Y-%m-%d", v.timestamp), v.service,
      table.concat(v.signed_headers, ";"), v.signature)
end

-- The library the search found (LUA_CPATH's build/lua/ -> build/).
eidffi.lib()
check("library search", realpath(eidffi.library_path) == realpath(want_lib),
  ("found %s, want %s"):format(tostring(eidffi.library_path), want_lib))

-- Every official vector, through the module-level signer.
for _, v in ipairs(doc.vectors) do
  local headers, err = eidffi.sign(request(v))
  check(v.name, headers and headers.Authorization == authorization(v),
    headers and headers.Authorization or tostring(err))
end

-- The headers to send, exactly (spec/unit/sign_spec.lua has the same case
-- for the Lua 5.4 binding).
local SECRET = "FakeSecretKeyForTestVectors000000"
local function base()
  return {
    secret_id = "AKIDEXAMPLEFAKEFAKEFAKEFAKEFAKE00000", secret_key = SECRET,
    action = "GetEidResult", timestamp = 1735660800,
    body = '{"EidToken":"CE661F1A-0F1E-45BD-BE13-34C05CEA7681","InfoType":"0","BestFramesCount":1}',
  }
end
local want = {
  Authorization = "TC3-HMAC-SHA256 Credential=AKIDEXAMPLEFAKEFAKEFAKEFAKEFAKE00000/2024-12-31/faceid/tc3_request, SignedHeaders=content-type;host, Signature=9d0bc3c64ade52127bed12c509c1285cbe63f648e9a6fec46d1adf5836364b78",
  ["Content-Type"] = "application/json",
  Host = "faceid.tencentcloudapi.com",
  ["X-TC-Action"] = "GetEidResult",
  ["X-TC-Version"] = "2018-03-01",
  ["X-TC-Timestamp"] = "1735660800",
}
local got = eidffi.sign(base())
local same = got ~= nil
for k, v in pairs(want) do same = same and got[k] == v end
for k in pairs(got or {}) do same = same and want[k] ~= nil end
check("headers", same, cjson.encode(got or {}))

-- Misuse raises naming the field, never echoing the secret.
local function raises(name, req, pattern)
  local ok, msg = pcall(eidffi.sign, req)
  msg = tostring(msg)
  check(name, not ok and msg:find(pattern, 1, true) and not msg:find(SECRET, 1, true), msg)
end
local r = base(); r.secret_key = nil
raises("missing secret_key", r, "secret_key")
r = base(); r.secretKey = SECRET
raises("unknown field", r, "unknown field 'secretKey'")
r = base(); r.body = nil
raises("missing body", r, "body: required")
r = base(); r.timestamp = 1.5
raises("fractional timestamp", r, "timestamp: expected integer")
r = base(); r.action = "Get\0EidResult"
raises("NUL byte", r, "action: contains a NUL byte")
r = base(); r.timestamp = -(2 ^ 63)
raises("the C sentinel is not a timestamp", r, "timestamp")
-- The message names the caller's line, as luaL_argerror would.
local _, where = pcall(function() local h = eidffi.sign({ body = "" }); return h end)
check("error level", tostring(where):find("sign_ffi.lua", 1, true), where)

-- A signer of its own: its clock, its key cache.
local s = eidffi.signer { cache_slots = 2, clock = function() return 1735660800 end }
r = base(); r.timestamp = nil
local h1 = s:sign(r)
check("clock", h1 and h1.Authorization == want.Authorization, h1 and h1.Authorization)
s:sign(base())
r = base(); r.secret_key = "AnotherFakeSecretKey000000000000"
s:sign(r)
local stats = s:cache_stats()
check("cache stats", stats.hits == 1 and stats.misses == 2, cjson.encode(stats))
s:close()
s:close() -- idempotent
check("closed", not pcall(s.sign, s, base()), "sign on a closed signer did not raise")
check("bad option", not pcall(eidffi.signer, { slots = 1 }), "unknown option accepted")

-- A check only the C signer makes (EID_TOKEN_MAX) raises like the others.
r = base(); r.token = ("t"):rep(5000)
raises("token too long", r, "token")

print(("ffi (libeidkit %s at %s): %d passed, %d failed"):format(eidffi.version(),
  eidffi.library_path, count - failures, failures))
os.exit(failures == 0 and 0 or 1)
