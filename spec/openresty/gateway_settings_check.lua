-- eidkit.gateway.settings, value by value, with the exact option or message
-- each value gives: run under LuaJIT (as nginx loads it) and under Lua 5.4
-- (as `eidkit serve` does) by spec/openresty/gateway_settings_spec.lua.
-- Raises on the first difference; prints "ok <interpreter>" at the end.
--   LUA_PATH="lua/?.lua;;" luajit spec/openresty/gateway_settings_check.lua
local settings = require "eidkit.gateway.settings"

local format, concat, sort = string.format, table.concat, table.sort

-- A canonical text for an option: keys sorted, numbers as %.14g (so 5 and
-- 5.0, Lua 5.4's integer and LuaJIT's number, read the same).
local function show(v)
  if type(v) == "number" then return format("%.14g", v) end
  if type(v) ~= "table" then return tostring(v) end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  local out = {}
  for i, k in ipairs(keys) do out[i] = tostring(k) .. "=" .. show(v[k]) end
  return "{" .. concat(out, ",") .. "}"
end

local LIMIT = "LABEL: expected COUNT/SECONDS such as 5/600, or off; got '%s'"
local RATE = "LABEL: expected calls per second > 0, or off; got '%s'"
local SECS_POS = "LABEL: expected seconds > 0, at most 86400; got '%s'"
local SECS_ZERO = "LABEL: expected seconds >= 0, at most 86400; got '%s'"
local CASES = {
  { "token_limit", nil, "nil" },
  { "token_limit", "5/600", "{count=5,per=600}" },
  { "token_limit", "1/0.5", "{count=1,per=0.5}" },
  { "token_limit", "10/60", "{count=10,per=60}" },
  { "token_limit", "off", "false" },
  { "token_limit", false, "false" },
  { "token_limit", "0/600", nil, LIMIT:format("0/600") },
  { "token_limit", "5", nil, LIMIT:format("5") },
  { "token_limit", "a/b", nil, LIMIT:format("a/b") },
  { "token_limit", "5/0", nil, LIMIT:format("5/0") },
  { "token_limit", "-1/5", nil, LIMIT:format("-1/5") },
  { "token_limit", "5/600x", nil, LIMIT:format("5/600x") },
  { "token_limit", "", nil, LIMIT:format("") },
  { "token_limit", "99999999999999999999/5", nil, LIMIT:format("99999999999999999999/5") },
  { "upstream_rate", nil, "nil" },
  { "upstream_rate", "100", "{GetEidResult={burst=20,rate=80},GetEidToken={burst=20,rate=80}}" },
  { "upstream_rate", "1e3", "{GetEidResult={burst=200,rate=800},GetEidToken={burst=200,rate=800}}" },
  { "upstream_rate", "0.5", "{GetEidResult={burst=1,rate=0.4},GetEidToken={burst=1,rate=0.4}}" },
  { "upstream_rate", 10, "{GetEidResult={burst=2,rate=8},GetEidToken={burst=2,rate=8}}" },
  { "upstream_rate", "off", "{GetEidResult=false,GetEidToken=false}" },
  { "upstream_rate", "0", nil, RATE:format("0") },
  { "upstream_rate", "-3", nil, RATE:format("-3") },
  { "upstream_rate", "abc", nil, RATE:format("abc") },
  { "upstream_rate", "100001", nil, RATE:format("100001") },
  { "upstream_rate", "nan", nil, RATE:format("nan") },
  { "upstream_rate", "1e999", nil, RATE:format("1e999") },
  { "upstream_rate", "inf", nil, RATE:format("inf") },
  { "upstream_rate", "0x10", "{GetEidResult={burst=3.2,rate=12.8},GetEidToken={burst=3.2,rate=12.8}}" },
  -- seconds: the fifth element is the least value.
  { "seconds", nil, "nil", nil, 0.001 },
  { "seconds", "10", "10", nil, 0.001 },
  { "seconds", 2.5, "2.5", nil, 0.001 },
  { "seconds", "0.001", "0.001", nil, 0.001 },
  { "seconds", "86400", "86400", nil, 0 },
  { "seconds", "0", "0", nil, 0 },
  { "seconds", "0x10", "16", nil, 0 },
  { "seconds", "0", nil, SECS_POS:format("0"), 0.001 },
  { "seconds", "0.0005", nil, SECS_POS:format("0.0005"), 0.001 },
  { "seconds", "-1", nil, SECS_ZERO:format("-1"), 0 },
  { "seconds", "86401", nil, SECS_ZERO:format("86401"), 0 },
  { "seconds", "nan", nil, SECS_POS:format("nan"), 0.001 },
  { "seconds", "1e999", nil, SECS_POS:format("1e999"), 0.001 },
  { "seconds", "abc", nil, SECS_POS:format("abc"), 0.001 },
  { "seconds", "", nil, SECS_POS:format(""), 0.001 },
  { "fields", nil, "nil" },
  { "fields", "Name,IdCard", "{1=Name,2=IdCard}" },
  { "fields", " Name , Extra,,", "{1=Name,2=Extra}" },
  { "fields", "", "{}" },
}

local function check(cond, what)
  if not cond then error("gateway_settings_check: " .. what, 2) end
end

for _, c in ipairs(CASES) do
  local fn, v, want, want_err = c[1], c[2], c[3], c[4]
  local got, err = settings[fn](v, "LABEL", c[5])
  local case = format("%s(%s)", fn, show(v))
  if want_err then
    check(got == nil and err == want_err, format("%s: want nil, %q; got %s, %s", case, want_err, show(got), tostring(err)))
  else
    check(err == nil and show(got) == want, format("%s: want %s; got %s, %s", case, want, show(got), tostring(err)))
  end
end

-- The demo authorize: the header's value is the subject; without it, a refusal.
local auth = settings.DEMO_POLICY.authorize
check(settings.DEMO_HEADER == "x-eidkit-demo-user", "DEMO_HEADER")
check(auth({ headers = { ["x-eidkit-demo-user"] = "u1" } }) == "u1", "demo authorize: the header's user")
for _, req in ipairs { {}, { headers = {} }, { headers = { ["x-eidkit-demo-user"] = "" } },
  { headers = { ["x-eidkit-demo-user"] = { "a", "b" } } } } do
  local ok, why = auth(req)
  check(ok == false and why == "no X-Eidkit-Demo-User header", "demo authorize refuses " .. show(req))
end

print("ok " .. (rawget(_G, "jit") and jit.version or _VERSION))
