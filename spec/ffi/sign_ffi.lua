-- LuaJIT FFI calls libeidkit directly, the way an OpenResty binding will:
-- proves the signer's ABI (status codes, caller-owned structs, no callbacks)
-- is usable without a C module. Run: luajit spec/ffi/sign_ffi.lua LIB VECTORS
local ffi = require "ffi"
local cjson = require "cjson"

local libpath, vectors_path = arg[1], arg[2]
assert(libpath and vectors_path, "usage: luajit sign_ffi.lua path/to/libeidkit.so vectors.json")

-- Mirrors core/include/eidkit/eidkit.h (the parts used here).
ffi.cdef [[
typedef int eid_status;
typedef int64_t (*eid_clock_fn)(void *ud);
typedef struct eid_clock { eid_clock_fn now; void *ud; } eid_clock;
typedef struct eid_error { eid_status status; char field[32]; char message[224]; } eid_error;
typedef struct eid_signer eid_signer;
typedef struct eid_signer_options { size_t cache_slots; eid_clock clock; } eid_signer_options;
typedef struct eid_sign_request {
  const char *secret_id; const void *secret_key; size_t secret_key_len; const char *token;
  const char *host; const char *service; const char *action; const char *version;
  const char *region; const char *language; const char *content_type;
  int64_t timestamp; const void *body; size_t body_len;
  const char *const *signed_headers; size_t signed_headers_count;
} eid_sign_request;
typedef struct eid_signature {
  int64_t timestamp; char timestamp_str[24]; char date[11]; char signature[65];
  char signed_headers[128]; char authorization[512];
} eid_signature;
eid_status eid_signer_new(const eid_signer_options *opts, eid_signer **out);
void eid_signer_free(eid_signer *signer);
eid_status eid_signer_sign(eid_signer *signer, const eid_sign_request *req,
                           eid_signature *sig, eid_error *err);
const char *eid_version(void);
]]

local lib = ffi.load(libpath)
local f = assert(io.open(vectors_path, "rb"))
local doc = cjson.decode(f:read("*a"))
f:close()

local out = ffi.new("eid_signer *[1]")
assert(lib.eid_signer_new(nil, out) == 0)
local signer = ffi.gc(out[0], lib.eid_signer_free)

local failures, count = 0, 0
for _, v in ipairs(doc.vectors) do
  local names = ffi.new("const char *[?]", #v.signed_headers)
  for i, n in ipairs(v.signed_headers) do names[i - 1] = n end
  local req = ffi.new("eid_sign_request", {
    secret_id = v.secret_id, secret_key = v.secret_key, secret_key_len = #v.secret_key,
    host = v.host, service = v.service, action = v.action, version = v.version, region = v.region,
    content_type = v.content_type, timestamp = v.timestamp, body = v.body, body_len = #v.body,
    signed_headers = names, signed_headers_count = #v.signed_headers,
  })
  local sig, err = ffi.new("eid_signature"), ffi.new("eid_error")
  local st = lib.eid_signer_sign(signer, req, sig, err)
  count = count + 1
  if st ~= 0 or ffi.string(sig.signature) ~= v.signature then
    failures = failures + 1
    io.stderr:write(v.name, ": status ", tostring(st), " ", ffi.string(err.message), "\n")
  end
end

-- Bad input comes back as a status and a message, not a crash.
local bad = ffi.new("eid_sign_request", { secret_id = "AKID", action = "GetEidToken", timestamp = 1 })
local err = ffi.new("eid_error")
count = count + 1
if lib.eid_signer_sign(signer, bad, ffi.new("eid_signature"), err) ~= 1
    or ffi.string(err.field) ~= "secret_key" then
  failures = failures + 1
  io.stderr:write("bad input: expected EID_E_INVALID_ARG for secret_key, got ", ffi.string(err.message), "\n")
end

print(("ffi (libeidkit %s): %d passed, %d failed"):format(ffi.string(lib.eid_version()),
  count - failures, failures))
os.exit(failures == 0 and 0 or 1)
