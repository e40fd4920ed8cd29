-- eidkit.ffi: libeidkit's signing API through the LuaJIT FFI, for OpenResty
-- (and any LuaJIT host), without the Lua 5.4 C module.
--
--   local eidffi = require "eidkit.ffi"
--   local headers, err = eidffi.sign{ secret_id = id, secret_key = key,
--     action = "GetEidToken", body = json }           -- timestamp: now
--   local s = eidffi.signer{ cache_slots = 16, clock = ngx.time }
--   s:sign{...}; s:cache_stats() --> { hits = n, misses = n }; s:close()
--
-- The same contract as eidkit.sign on the Lua 5.4 host: the headers to send
-- (Authorization, Content-Type, Host, X-TC-*), nil and an error table
-- ({code, message, retryable = false}, printing "code: message") for a
-- runtime failure, and misuse (an unknown or mistyped field, a request the
-- signer refuses as invalid) raised naming the field, never its value.
--
-- This file owns the FFI declarations of core/include/eidkit/eidkit.h,
-- eidkit/retry.h (the retry decision, wrapped by eidkit.ffi.retry; and
-- eidkit/client.h's option defaults, ranges and reads),
-- eidkit/host.h and eidkit/errcode.h (clocks, limits, the ErrCode table,
-- read by eidkit.host) that eidkit uses: nothing else may ffi.cdef them. spec/ffi/cdef_drift.lua fails when
-- they drift from the header.
--
-- Two libraries (docs/PACKAGING.md): sign, signer and version use
-- libeidkit_sign, the signer alone (it links only libcrypto, so a process that
-- only signs maps no libcurl, SQLite or hiredis); _M.lib(), for everything
-- else, loads the whole libeidkit. Each is found by the first rule that
-- applies, NAME being libeidkit or libeidkit_sign:
--   1. EIDKIT_LIB (libeidkit) / EIDKIT_SIGN_LIB (libeidkit_sign), an explicit
--      path: used as given, an error if it fails to load (no silent fallback
--      to another copy). With only EIDKIT_LIB set, libeidkit_sign is looked
--      for beside it first.
--   2. For each package.cpath entry DIR/?.so: DIR/NAME.so, then
--      DIR/../NAME.so (the build tree: build/lua/?.so -> build/), then
--      DIR/../../NAME.so (an install: <libdir>/lua/5.1/?.so -> <libdir>);
--      the first file that exists. (A LuaRocks tree has both in DIR.)
--   3. The system's: dlopen of NAME.so, then NAME.so.0.
-- _M.library_path and _M.sign_library_path say which ones were loaded.
--
-- LuaJIT only (it needs `ffi`), but kept to syntax Lua 5.4 also parses.
local ffi = require "ffi"

local error, type, pairs, tostring, tonumber, setmetatable = error, type, pairs, tostring, tonumber, setmetatable
local io_open, os_getenv, floor = io.open, os.getenv, math.floor
local ffi_new, ffi_string, ffi_fill, ffi_gc, ffi_typeof = ffi.new, ffi.string, ffi.fill, ffi.gc, ffi.typeof

local _M = { _VERSION = "0.1.0" }

-- Same spellings as the header, so spec/ffi/cdef_drift.lua can compare each
-- struct field by field (names, order, types) as well as by layout.
_M.cdefs = [[
typedef enum eid_status {
    EID_OK = 0,
    EID_E_INVALID_ARG = 1,
    EID_E_NOMEM = 2,
    EID_E_BUFFER_TOO_SMALL = 3,
    EID_E_CRYPTO = 4,
    EID_E_INTERNAL = 5,
    EID_E_LEDGER_UNKNOWN = 6,
    EID_E_LEDGER_WRONG_SUBJECT = 7,
    EID_E_LEDGER_EXPIRED = 8,
    EID_E_LEDGER_CONSUMED = 9,
    EID_E_LEDGER_EXISTS = 10,
    EID_E_LEDGER_PENDING = 11,
    EID_E_LEDGER_UNAVAILABLE = 12,
    EID_E_LEDGER_STORAGE = 13,
    EID_E_CLIENT_TRANSPORT = 14,
    EID_E_CLIENT_REMOTE = 15,
    EID_E_KEY = 16,
    EID_E_DECRYPT = 17,
    EID_E_FORMAT = 18
} eid_status;
typedef struct eid_error {
    eid_status status;
    char field[32];
    char message[224];
} eid_error;
typedef int64_t (*eid_clock_fn)(void *ud);
typedef struct eid_clock {
    eid_clock_fn now;
    void *ud;
} eid_clock;
typedef struct eid_signer eid_signer;
typedef struct eid_signer_options {
    size_t cache_slots;
    eid_clock clock;
} eid_signer_options;
typedef struct eid_sign_request {
    const char *secret_id;
    const void *secret_key;
    size_t secret_key_len;
    const char *token;
    const char *host;
    const char *service;
    const char *action;
    const char *version;
    const char *region;
    const char *language;
    const char *content_type;
    int64_t timestamp;
    const void *body;
    size_t body_len;
    const char *const *signed_headers;
    size_t signed_headers_count;
} eid_sign_request;
typedef struct eid_signature {
    int64_t timestamp;
    char timestamp_str[24];
    char date[11];
    char signature[65];
    char signed_headers[128];
    char authorization[512];
} eid_signature;
typedef struct eid_header {
    const char *name;
    const char *value;
} eid_header;
const char *eid_strerror(eid_status status);
const char *eid_status_code(eid_status status);
const char *eid_version(void);
eid_status eid_random_bytes(void *buf, size_t n);
eid_status eid_signer_new(const eid_signer_options *opts, eid_signer **out);
void eid_signer_free(eid_signer *signer);
eid_status eid_signer_sign(eid_signer *signer, const eid_sign_request *req,
                           eid_signature *sig, eid_error *err);
void eid_signer_cache_stats(eid_signer *signer, uint64_t *hits, uint64_t *misses);
size_t eid_sign_headers(const eid_sign_request *req, const eid_signature *sig,
                        eid_header out[9]);
]]
-- ---- eidkit.host (issue 15, flow and policy under LuaJIT): eidkit/host.h,
-- eidkit/errcode.h and two pure functions of eidkit.h and eidkit/client.h,
-- what eidkit.host gives eidkit.flow/policy/errors in place of eidkit.core.
.. [[
double eid_clock_now(void);
double eid_clock_monotonic(void);
eid_status eid_sleep(double seconds);
typedef struct eid_named_value {
    const char *name;
    int64_t value;
} eid_named_value;
const eid_named_value *eid_limits(size_t *n);
const eid_named_value *eid_errcode_names(size_t *n);
typedef enum eid_errcode_verdict {
    EID_VERDICT_PASSED = 0,
    EID_VERDICT_FAILED = 1,
    EID_VERDICT_NONE = 2,
    EID_VERDICT_EXPIRED = 3
} eid_errcode_verdict;
typedef struct eid_errcode_info {
    int64_t code;
    eid_errcode_verdict verdict;
    const char *reason;
    int retry_with_new_token;
    int billed;
} eid_errcode_info;
const eid_errcode_info *eid_errcode_table(size_t *n);
const char *eid_errcode_status(eid_errcode_verdict verdict);
int eid_ct_equal(const void *a, size_t alen, const void *b, size_t blen);
int eid_client_is_transport_code(const char *code);
]]
-- ---- end of the eidkit.host block
-- The options' one source (eidkit/client.h): defaults, ranges, the default
-- endpoint and the reads, which eidkit.openresty.client applies as the C
-- client does.
.. [[
typedef struct eid_client_option_spec {
    const char *name;
    const char *unit;
    double def;
    double min;
    double max;
} eid_client_option_spec;
const eid_client_option_spec *eid_client_option(size_t i);
const char *eid_client_default_endpoint(void);
const char *eid_client_default_service(void);
int eid_client_is_read(const char *action);
void eid_trace_id(const unsigned char seed[16], uint64_t counter, char out[64]);
]]
.. [[
typedef enum eid_outcome {
    EID_OUTCOME_OK = 0,
    EID_OUTCOME_REMOTE = 1,
    EID_OUTCOME_MALFORMED = 2,
    EID_OUTCOME_NOMEM = 3,
    EID_OUTCOME_HTTP = 4,
    EID_OUTCOME_TIMEOUT = 5,
    EID_OUTCOME_CONNECT = 6,
    EID_OUTCOME_RESET = 7,
    EID_OUTCOME_TLS = 8,
    EID_OUTCOME_TRUNCATED = 9,
    EID_OUTCOME_TOO_BIG = 10,
    EID_OUTCOME_RECV_NOMEM = 11,
    EID_OUTCOME_OTHER = 12,
    EID_OUTCOME_COUNT = 13
} eid_outcome;
typedef struct eid_retry_rules {
    int max_attempts;
    int retry_unsafe;
    double backoff_base;
    double backoff_cap;
} eid_retry_rules;
typedef struct eid_retry_facts {
    const char *action;
    int attempts;
    eid_outcome outcome;
    int bytes_sent;
    long http_status;
    const char *remote_code;
    int skew_retried;
    double remaining;
    int64_t server_time;
    int64_t local_time;
    double jitter;
} eid_retry_facts;
typedef struct eid_retry_verdict {
    eid_status status;
    char code[96];
    int transient;
    int sent;
    int retryable;
    int adopt_skew;
    int64_t skew;
    int resign;
    int ask_policy;
    double backoff;
    double default_delay;
    double delay;
    int keep_received;
} eid_retry_verdict;
eid_status eid_retry_check_rules(const eid_retry_rules *rules, eid_error *err);
eid_status eid_retry_decide(const eid_retry_rules *rules, const eid_retry_facts *f,
                            eid_retry_verdict *v, eid_error *err);
double eid_retry_delay(const eid_retry_facts *f, double wanted);
const char *eid_outcome_name(eid_outcome o);
eid_status eid_ledger_redis_script(const char *name, char *buf, size_t cap, size_t *len);
const char *eid_ledger_redis_field(size_t i);
eid_status eid_ledger_redis_refusal(const char *code, eid_error *err);
typedef struct eid_ledger_redis_url {
    char host[256];
    int port;
    int db;
    char prefix[65];
    char user[128];
    char password[512];
    int has_password;
} eid_ledger_redis_url;
eid_status eid_ledger_redis_url_parse(const char *url, eid_ledger_redis_url *out,
                                      eid_error *err);
void eid_ledger_redis_url_clear(eid_ledger_redis_url *u);
eid_status eid_ledger_check_url(const char *url, eid_error *err);
eid_status eid_ledger_check_claim(const char *bound_subject, int state,
                                  int64_t expires_at, const char *subject, int64_t now,
                                  eid_error *err);
typedef enum eid_ledger_state {
    EID_LEDGER_ISSUED = 0,
    EID_LEDGER_PASSED = 1,
    EID_LEDGER_FAILED = 2,
    EID_LEDGER_CONSUMED = 3,
    EID_LEDGER_EXPIRED = 4,
    EID_LEDGER_ABANDONED = 5
} eid_ledger_state;
const char *eid_ledger_state_name(eid_ledger_state state);
typedef struct eid_ledger_issue_params {
    const char *token;
    const char *merchant_id;
    const char *subject;
    const char *extra;
    int64_t created_at;
    int64_t expires_at;
    int intention;
} eid_ledger_issue_params;
eid_status eid_ledger_check_issue(const eid_ledger_issue_params *params, eid_error *err);
eid_status eid_ledger_check_take(const char *key, double rate_per_s, double burst,
                                 int64_t now_ms, int64_t *ttl_ms, eid_error *err);
typedef struct eid_ledger_entry {
    char token[129];
    char merchant_id[65];
    char subject[129];
    char extra[1025];
    eid_ledger_state state;
    int64_t created_at;
    int64_t expires_at;
    int64_t result_deadline;
    int64_t finished_at;
    int64_t consumed_at;
    int64_t last_pull_at;
    int32_t pulls;
    int32_t attempts;
    int32_t billable;
    int has_err_code;
    int64_t err_code;
    int has_late_err_code;
    int64_t late_err_code;
    int32_t settled_billable;
    int intention;
    int retry_later;
    int open;
    int late_pass;
    int has_payload;
    char request_ids[1040];
} eid_ledger_entry;
eid_status eid_ledger_redis_entry(const char *const *values, const size_t *lens, size_t n,
                                  int64_t now, eid_ledger_entry *out);
eid_status eid_ledger_redis_entry_packed(const char *record, size_t len, int64_t payload_len,
                                         int64_t now, eid_ledger_entry *out);
typedef struct eid_ledger_attempt {
    char seq[65];
    int64_t req_time_ms;
    int has_err_code;
    int64_t err_code;
    int is_need_charge;
    char sim[17];
    int has_liveness_mode;
    int64_t liveness_mode;
    char compare_lib_type[65];
} eid_ledger_attempt;
typedef struct eid_ledger_outcome {
    int has_verdict;
    int64_t err_code;
    int32_t attempts;
    int32_t billable;
    const char *request_id;
    const eid_ledger_attempt *details;
    size_t n_details;
    int intention;
    const void *payload;
    size_t payload_len;
} eid_ledger_outcome;
typedef struct eid_ledger_digest eid_ledger_digest;
eid_status eid_ledger_digest_json(const char *json, size_t len, eid_ledger_digest **out,
                                  eid_error *err);
const eid_ledger_outcome *eid_ledger_digest_outcome(const eid_ledger_digest *d);
void eid_ledger_digest_free(eid_ledger_digest *d);
typedef struct eid_ledger_redis_args eid_ledger_redis_args;
eid_status eid_ledger_redis_record_args(const char *token, const eid_ledger_outcome *o,
                                        int64_t now, eid_ledger_redis_args **out, eid_error *err);
size_t eid_ledger_redis_args_count(const eid_ledger_redis_args *a);
const char *eid_ledger_redis_args_get(const eid_ledger_redis_args *a, size_t i, size_t *len);
void eid_ledger_redis_args_free(eid_ledger_redis_args *a);
eid_status eid_ledger_redis_attempts(const char *const *values, const size_t *lens,
                                     size_t n, eid_ledger_attempt *out, size_t cap,
                                     size_t *count);
int eid_ledger_redis_expirable(const eid_ledger_entry *e, int64_t now);
typedef struct eid_ledger eid_ledger;
typedef struct eid_ledger_options {
    eid_clock clock;
    int64_t token_ttl;
    int64_t result_window;
    int64_t retention;
    int timeout_ms;
    const unsigned char *payload_key;
    size_t payload_key_len;
} eid_ledger_options;
typedef struct eid_ledger_counts {
    uint64_t count[6];
    uint64_t billable;
    uint64_t due;
} eid_ledger_counts;
eid_status eid_ledger_open(const char *url, const eid_ledger_options *opts,
                           eid_ledger **out, eid_error *err);
void eid_ledger_free(eid_ledger *ledger);
const char *eid_ledger_backend(const eid_ledger *ledger);
eid_status eid_ledger_issue(eid_ledger *ledger, const eid_ledger_issue_params *params,
                            eid_error *err);
eid_status eid_ledger_claim(eid_ledger *ledger, const char *token, const char *subject,
                            eid_ledger_entry *out, eid_error *err);
eid_status eid_ledger_record(eid_ledger *ledger, const char *token,
                             const eid_ledger_outcome *outcome, eid_ledger_entry *out,
                             eid_error *err);
eid_status eid_ledger_consume(eid_ledger *ledger, const char *token, const char *subject,
                              eid_ledger_entry *out, eid_error *err);
eid_status eid_ledger_get(eid_ledger *ledger, const char *token, eid_ledger_entry *out,
                          eid_error *err);
eid_status eid_ledger_attempts(eid_ledger *ledger, const char *token,
                               eid_ledger_attempt *out, size_t cap, size_t *n,
                               eid_error *err);
eid_status eid_ledger_due(eid_ledger *ledger, eid_ledger_entry *out, size_t cap, size_t *n,
                          eid_error *err);
eid_status eid_ledger_export(eid_ledger *ledger, int64_t from, int64_t to,
                             int64_t after_created, const char *after_token,
                             eid_ledger_entry *out, size_t cap, size_t *n, eid_error *err);
eid_status eid_ledger_expire(eid_ledger *ledger, int64_t now, uint64_t *expired,
                             uint64_t *abandoned, eid_error *err);
eid_status eid_ledger_stats(eid_ledger *ledger, eid_ledger_counts *out, eid_error *err);
eid_status eid_ledger_payload(eid_ledger *ledger, const char *token, void *buf, size_t cap,
                              size_t *len, eid_error *err);
eid_status eid_ledger_take(eid_ledger *ledger, const char *key, double rate_per_s,
                           double burst, int64_t now_ms, int *allowed,
                           double *retry_after_s, eid_error *err);
eid_status eid_ledger_give(eid_ledger *ledger, const char *key, double rate_per_s,
                           double burst, int64_t now_ms, eid_error *err);
int64_t eid_ledger_clock_cell(void *ud);
int eid_ledger_is_due(const eid_ledger_entry *e, int64_t now);
int eid_ledger_is_open(const eid_ledger_entry *e, int64_t now);
]]
-- From eid_ledger_redis_script on (core/include/eidkit/ledger.h): what
-- eidkit.openresty.ledger takes from C so that its Redis ledger runs the
-- backend's scripts and rules, not copies.
-- The structs declared above, in order (the drift spec walks these).
_M.structs = { "eid_error", "eid_clock", "eid_signer_options", "eid_sign_request", "eid_signature",
  "eid_header", "eid_retry_rules", "eid_retry_facts", "eid_retry_verdict", "eid_ledger_issue_params",
  "eid_ledger_entry", "eid_ledger_attempt", "eid_ledger_outcome", "eid_ledger_options", "eid_ledger_counts",
  "eid_ledger_redis_url" }
-- eidkit.host's structs (its block above).
_M.structs[#_M.structs + 1] = "eid_named_value"
_M.structs[#_M.structs + 1] = "eid_errcode_info"
_M.structs[#_M.structs + 1] = "eid_client_option_spec"

-- A module reloaded in the same VM (specs clear package.loaded) must not
-- declare the types again: LuaJIT refuses a second definition.
if not pcall(ffi_typeof, "eid_sign_request") then ffi.cdef(_M.cdefs) end

local EID_OK, EID_E_INVALID_ARG = 0, 1
local HEADERS_MAX, SIGNED_HEADERS_MAX = 9, 8
-- EID_TIMESTAMP_NOW (INT64_MIN): exactly representable as a double.
local TIMESTAMP_NOW = -2 ^ 63
local MAX_EXACT = 2 ^ 53

-- ------------------------------------------------------------- the library

local function exists(path)
  local f = io_open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

local ipairs, table_insert = ipairs, table.insert

local function candidates(name)
  local list = {}
  for template in (package.cpath or ""):gmatch("[^;]+") do
    local dir = template:match("^(.*)/%?%.so$")
    if dir then
      list[#list + 1] = dir .. "/" .. name .. ".so"
      list[#list + 1] = dir .. "/../" .. name .. ".so"
      list[#list + 1] = dir .. "/../../" .. name .. ".so"
    end
  end
  return list
end

-- The first library the rules above find for name; raises when none loads.
-- beside: a path whose directory is searched before package.cpath.
local function find(name, env, beside, level)
  local explicit = os_getenv(env)
  if explicit and explicit ~= "" then
    local ok, l = pcall(ffi.load, explicit)
    if not ok then error("eidkit.ffi: " .. env .. "=" .. explicit .. " does not load: " .. tostring(l), level + 1) end
    return l, explicit
  end
  local list = candidates(name)
  local dir = beside and beside:match("^(.*)/[^/]*$")
  if dir then table_insert(list, 1, dir .. "/" .. name .. ".so") end
  for _, path in ipairs(list) do
    if exists(path) then
      local ok, l = pcall(ffi.load, path)
      if ok then return l, path end
    end
  end
  for _, so in ipairs { name .. ".so", name .. ".so.0" } do
    local ok, l = pcall(ffi.load, so)
    if ok then return l, so end
  end
  error("eidkit.ffi: " .. name .. " not found (set " .. env .. ", put it beside a package.cpath"
    .. " directory, or install it where the dynamic linker looks)", level + 1)
end

local lib, sign_lib
-- The loaded libeidkit (loading it on first use); raises when none is found.
function _M.lib()
  if not lib then lib, _M.library_path = find("libeidkit", "EIDKIT_LIB", nil, 2) end
  return lib
end

-- The loaded libeidkit_sign, what signing needs and nothing more.
function _M.sign_lib()
  if not sign_lib then
    local full = os_getenv("EIDKIT_LIB")
    sign_lib, _M.sign_library_path = find("libeidkit_sign", "EIDKIT_SIGN_LIB", full ~= "" and full or nil, 2)
  end
  return sign_lib
end

-- A stored attempt (eid_ledger_attempt) as eidkit.ledger's attempts()
-- gives it on Lua 5.4 ({Seq, ReqTime, IsNeedCharge, Sim, CompareLibType,
-- Errcode and LivenessMode when known}), for the FFI ledgers.
function _M.attempt_table(a)
  local t = { Seq = ffi_string(a.seq), ReqTime = tonumber(a.req_time_ms), IsNeedCharge = a.is_need_charge ~= 0,
    Sim = ffi_string(a.sim), CompareLibType = ffi_string(a.compare_lib_type) }
  if a.has_err_code ~= 0 then t.Errcode = tonumber(a.err_code) end
  if a.has_liveness_mode ~= 0 then t.LivenessMode = tonumber(a.liveness_mode) end
  return t
end

-- ledger:stats()'s table, for the FFI ledgers: count[0..5] the tokens per
-- state (a Lua table, or eid_ledger_counts.count), billable and due the
-- other two counts; states named by libeidkit.
function _M.counts_table(count, billable, due)
  local C, out, total = _M.lib(), {}, 0
  for st = 0, 5 do
    local n = tonumber(count[st] or 0)
    out[ffi_string(C.eid_ledger_state_name(st))] = n
    total = total + n
  end
  out.total, out.billable, out.due = total, tonumber(billable), tonumber(due)
  return out
end

function _M.version()
  return ffi_string(_M.sign_lib().eid_version())
end

-- ---------------------------------------------------------------- errors

local error_mt = { __tostring = function(e) return e.code .. ": " .. e.message end }

local function fail(C, st, err)
  local message = ffi_string(err.message)
  if message == "" then message = ffi_string(C.eid_strerror(st)) end
  return nil, setmetatable({ code = ffi_string(C.eid_status_code(st)), message = message,
    retryable = false }, error_mt)
end

-- ------------------------------------------------------------- requests

-- Scratch space reused by every call on this VM (one per nginx worker): a
-- call never yields, so no two calls share it at once.
local req = ffi_new("eid_sign_request")
local sig = ffi_new("eid_signature")
local err = ffi_new("eid_error")
local names = ffi_new("const char *[?]", SIGNED_HEADERS_MAX)
local headers = ffi_new("eid_header[?]", HEADERS_MAX)

local STRING_FIELDS = {
  secret_id = true, token = true, host = true, service = true, action = true, version = true,
  region = true, language = true, content_type = true,
}

-- Levels count from the function that raises to the caller of sign, so the
-- message points at the merchant's line (as luaL_argerror does).
local function misuse(msg, level) error("bad argument #1 to 'sign' (" .. msg .. ")", level) end

local function check_string(k, v, level)
  if type(v) ~= "string" then misuse(k .. ": expected string, got " .. type(v), level + 1) end
  -- The C core reads these up to a NUL: a truncated value would be signed.
  if v:find("\0", 1, true) then misuse(k .. ": contains a NUL byte", level + 1) end
end

-- Fill the scratch request from t. The C struct keeps pointers into t's
-- strings: t is alive on the caller's stack for the whole call.
local function fill(t, now, level)
  if type(t) ~= "table" then misuse("table expected, got " .. type(t), level + 1) end
  ffi_fill(req, ffi.sizeof(req))
  local have_body, have_timestamp = false, false
  req.timestamp = TIMESTAMP_NOW
  for k, v in pairs(t) do
    if STRING_FIELDS[k] then
      check_string(k, v, level + 1)
      req[k] = v
    elseif k == "secret_key" then
      if type(v) ~= "string" then misuse("secret_key: expected string, got " .. type(v), level + 1) end
      req.secret_key, req.secret_key_len = v, #v
    elseif k == "body" then
      if type(v) ~= "string" then misuse("body: expected string, got " .. type(v), level + 1) end
      req.body, req.body_len = v, #v
      have_body = true
    elseif k == "timestamp" then
      -- Out of 0..9999-12-31 is the C signer's to refuse; only the sentinel
      -- (and what a double cannot carry exactly) must not reach it.
      if type(v) ~= "number" or v ~= floor(v) or v < -MAX_EXACT or v > MAX_EXACT then
        misuse("timestamp: expected integer Unix seconds", level + 1)
      end
      req.timestamp, have_timestamp = v, true
    elseif k == "signed_headers" then
      if type(v) ~= "table" then
        misuse("signed_headers: expected table of header names, got " .. type(v), level + 1)
      end
      local n = #v
      if n > SIGNED_HEADERS_MAX then misuse("signed_headers: more than 8 names", level + 1) end
      for i = 1, n do
        if type(v[i]) ~= "string" then
          misuse("signed_headers[" .. i .. "]: expected string, got " .. type(v[i]), level + 1)
        end
        names[i - 1] = v[i]
      end
      req.signed_headers, req.signed_headers_count = names, n
    else
      misuse("unknown field '" .. tostring(k) .. "'", level + 1)
    end
  end
  if not have_body then misuse("body: required (the exact bytes to send)", level + 1) end
  if not have_timestamp and now then
    local ts = now()
    if type(ts) ~= "number" or ts ~= floor(ts) or ts < -MAX_EXACT or ts > MAX_EXACT then
      error("eidkit.ffi signer clock must return integer Unix seconds, got " .. type(ts), level)
    end
    req.timestamp = ts
  end
end

local function sign_with(C, s, t, now, level)
  fill(t, now, level + 1)
  ffi_fill(err, ffi.sizeof(err)) -- "best effort" detail: never a stale message
  local st = C.eid_signer_sign(s, req, sig, err)
  local out
  if st == EID_OK then
    out = {}
    for i = 0, tonumber(C.eid_sign_headers(req, sig, headers)) - 1 do
      out[ffi_string(headers[i].name)] = ffi_string(headers[i].value)
    end
  end
  -- Leave no pointer into the caller's strings (the secret among them).
  ffi_fill(req, ffi.sizeof(req))
  if st == EID_E_INVALID_ARG then misuse(ffi_string(err.message), level + 1) end
  if st ~= EID_OK then return fail(C, st, err) end
  return out
end

-- --------------------------------------------------------------- signers

local Signer = {}
Signer.__index = Signer

local function check_open(self)
  if self.s == nil then error("attempt to use a closed eidkit.ffi signer", 3) end
  return self.s
end

-- opts.cache_slots: derived keys kept (1..4096, default 8); opts.clock: a
-- function returning integer Unix seconds (ngx.time), read when a request
-- has no timestamp (default: the C signer's system clock). The clock must not
-- yield: it runs while this VM's scratch request is being filled.
function _M.signer(opts)
  local C = _M.sign_lib()
  local o = ffi_new("eid_signer_options")
  local clock
  if opts ~= nil then
    if type(opts) ~= "table" then error("bad argument #1 to 'signer' (table expected)", 2) end
    for k, v in pairs(opts) do
      if k == "cache_slots" then
        if type(v) ~= "number" or v ~= floor(v) or v < 1 or v > 4096 then
          error("bad argument #1 to 'signer' (cache_slots: expected an integer 1..4096)", 2)
        end
        o.cache_slots = v
      elseif k == "clock" then
        if type(v) ~= "function" then error("bad argument #1 to 'signer' (clock: expected function)", 2) end
        clock = v
      else
        error("bad argument #1 to 'signer' (unknown option '" .. tostring(k) .. "')", 2)
      end
    end
  end
  local out = ffi_new("eid_signer *[1]")
  local st = C.eid_signer_new(o, out)
  if st ~= EID_OK then
    ffi_fill(err, ffi.sizeof(err))
    return fail(C, st, err)
  end
  -- The key cache holds secret copies: freed (and wiped) by close or GC.
  return setmetatable({ s = ffi_gc(out[0], C.eid_signer_free), clock = clock, C = C }, Signer)
end

-- Not tail calls: the caller's frame must stay for the error level.
function Signer:sign(t)
  local headers_out, e = sign_with(self.C, check_open(self), t, self.clock, 3)
  return headers_out, e
end

function Signer:cache_stats()
  local s = check_open(self)
  local hits, misses = ffi_new("uint64_t[1]"), ffi_new("uint64_t[1]")
  self.C.eid_signer_cache_stats(s, hits, misses)
  return { hits = tonumber(hits[0]), misses = tonumber(misses[0]) }
end

-- Idempotent: wipes and frees the key cache now rather than at GC.
function Signer:close()
  if self.s ~= nil then
    self.C.eid_signer_free(ffi_gc(self.s, nil))
    self.s = nil
  end
end

-- The module-level signer: one per VM (per nginx worker), made on first use.
local default
local function default_signer()
  if not default then default = assert(_M.signer()) end
  return default
end

function _M.sign(t)
  local s = default_signer()
  local headers_out, e = sign_with(s.C, s.s, t, nil, 3)
  return headers_out, e
end

function _M.cache_stats()
  return default_signer():cache_stats()
end

return _M
