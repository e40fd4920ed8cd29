-- require "eidkit" under a real LuaJIT (outside nginx), the flow and a
-- policy script file run there: what spec/openresty/flow_luajit_spec.lua
-- checks. Raises on the first failure; prints "ok <LuaJIT version>", then
-- eidkit.host's C tables as JSON.
--   LUA_PATH="lua/?.lua;lua/?/init.lua;spec/?.lua;;" LUA_CPATH="build/lua/?.so;;" \
--     luajit spec/openresty/flow_luajit_check.lua POLICY_DIR
-- The ledger is support.memledger (a spec-only in-memory stand-in: no real
-- ledger is reachable from LuaJIT yet) and the client a spec-only stand-in
-- answering as the API would (plain LuaJIT has no transport: the real client
-- runs inside nginx, spec/openresty/flow_nginx_spec.lua).
local dir = assert(arg[1], "usage: flow_luajit_check.lua POLICY_DIR")

local function check(cond, what)
  if not cond then error("flow_luajit_check: " .. what, 2) end
end

local function write(name, text)
  local f = assert(io.open(dir .. "/" .. name, "wb"))
  f:write(text)
  f:close()
  return dir .. "/" .. name
end

check(rawget(_G, "jit"), "not running under LuaJIT")
local eidkit = require "eidkit"
check(require("eidkit.host").name == "luajit", "host is " .. require("eidkit.host").name)

-- Nothing of the tools, nor the Lua 5.4 module, came with it.
for name in pairs(package.loaded) do
  check(not (name == "eidkit.core" or name:match("^eidkit%.sim") or name == "eidkit.testing"
    or name == "eidkit.sandbox" or name:match("^eidkit%.cli$") or name:match("^eidkit%.cli%.") or name == "eidkit.serve"
    or name == "eidkit.ledger" or name == "eidkit.client" or name == "eidkit.crypto"),
    "require \"eidkit\" loaded " .. name)
end
check(type(eidkit.flow) == "table" and type(eidkit.policy) == "table" and type(eidkit.gateway) == "table",
  "flow, policy and gateway are in the facade")

-- What needs the Lua 5.4 host raises when used, naming it.
for _, k in ipairs { "client", "ledger", "crypto", "sandbox", "credentials", "utc_date", "sign_explain" } do
  local ok, err = pcall(function() return eidkit[k] end)
  check(not ok and tostring(err):find("eidkit." .. k .. " needs the Lua 5.4 host", 1, true),
    "eidkit." .. k .. ": " .. tostring(err))
end

-- Signing through the FFI, as eidkit.sign on Lua 5.4.
local h = assert(eidkit.sign { secret_id = "AKIDx", secret_key = "k", action = "GetEidToken", body = "{}",
  timestamp = 1700000000 })
check(h.Authorization:find("^TC3%-HMAC%-SHA256 Credential=AKIDx/2023%-11%-14/faceid/tc3_request"),
  "signed: " .. tostring(h.Authorization))

-- The classification from the C table, through the FFI.
local policy = eidkit.policy
check(policy.code_group(0).status == "passed" and policy.code_group(2004).reason == "capture"
  and policy.code_group(15).status == "expired" and policy.code_group(99999).reason == "unclassified",
  "code_group")
local o = policy.default_outcome { Text = { ErrCode = 0, LivenessDetail = { { IsNeedCharge = true } } } }
check(o.status == "passed" and o.code == 0 and o.billable and o.charges == 1, "default_outcome")

-- SPEC-ONLY stand-in client: GetEidToken and GetEidResult as the API answers them.
local results, n = {}, 0
local client = {
  get_eid_token = function()
    n = n + 1
    return { EidToken = ("TOKEN-%04d-0000-0000-000000000000"):format(n), Url = "https://eid.example/", RequestId = "r" .. n }
  end,
  get_eid_result = function(_, p)
    local code = results[p.EidToken]
    local res = { RequestId = "rr", Text = { ErrCode = code, LivenessDetail = code and { { IsNeedCharge = code == 0 } } or nil } }
    return res
  end,
}

local path = write("policy.lua", [[
  local base = require "eidkit.policy"        -- the view scripts get
  local rules = require "rules"               -- a sibling file
  local P = { info_type = "1" }
  function P.classify(_, outcome)
    outcome.reason = rules.mark(outcome.reason)
    -- what the script can reach: never the host's io, os.execute, debug, package, ngx, jit
    outcome.reach = table.concat({ tostring(io), tostring(os.execute), tostring(debug), tostring(package),
      tostring(ngx), tostring(jit), tostring(getmetatable("")), tostring(base.code_group(0).status) }, ",")
    return outcome
  end
  return P
]])
write("rules.lua", [[return { mark = function(r) return r .. "/by-policy" end }]])

local ledger = require("support.memledger").new()
local slept = 0
local flow = eidkit.flow { client = client, ledger = ledger, merchant_id = "M", policy = path,
  sleep = function(s) slept = slept + s end }
check(flow.policy.info_type == "1", "the script's info_type")

local st = assert(flow:start { subject = "u1" })
results[st.EidToken] = 0
local out = assert(flow:finish { subject = "u1", EidToken = st.EidToken })
check(out.status == "passed" and out.reason == "passed/by-policy", "passed: " .. out.status .. " " .. out.reason)
check(out.reach == "nil,nil,nil,nil,nil,nil,nil,passed", "the script reached " .. out.reach)
local again = assert(flow:finish { subject = "u1", EidToken = st.EidToken })
check(again.status == "passed", "replay")
local _, werr = flow:finish { subject = "u2", EidToken = st.EidToken }
check(werr and werr.code == "wrong_subject" and tostring(werr):find("^wrong_subject: "), "another subject's token")

local st2 = assert(flow:start { subject = "u1" })
results[st2.EidToken] = 2004
local out2 = assert(flow:finish { subject = "u1", EidToken = st2.EidToken })
check(out2.status == "failed" and out2.reason == "capture/by-policy" and out2.retry_with_new_token == true,
  "failed: " .. out2.status .. " " .. out2.reason)

-- A hook that raises fails that one call, named.
local raising = write("raising.lua", [[return { classify = function() error("boom") end }]])
local f2 = eidkit.flow { client = client, ledger = ledger, merchant_id = "M", policy = raising }
local st3 = assert(f2:start { subject = "u3" })
results[st3.EidToken] = 0
local _, perr = f2:finish { subject = "u3", EidToken = st3.EidToken }
check(perr and perr.code == "policy" and perr.hook == "classify" and perr.message:find("boom", 1, true),
  "raising hook: " .. tostring(perr))

-- Bytecode is refused; sandbox limits need the Lua 5.4 host; a broken script fails to load.
local bc = write("bc.lua", string.dump(function() return {} end))
local ok, lerr = pcall(eidkit.flow, { client = client, ledger = ledger, merchant_id = "M", policy = bc })
check(not ok and tostring(lerr):find("bytecode", 1, true), "bytecode: " .. tostring(lerr))
local lok, limerr = pcall(policy.load, path, { instructions = 1000 })
check(not lok and tostring(limerr):find("sandbox limits (argument #2) needs the Lua 5.4 host", 1, true),
  "limits: " .. tostring(limerr))
local p, nerr = policy.load(write("notable.lua", "return 42"))
check(p == nil and nerr.code == "load" and nerr.message:find("must return a table of hooks", 1, true), "not a table")
local eok, eerr = pcall(eidkit.flow, { client = client, ledger = ledger, merchant_id = "M",
  eidinfo_key = "/nonexistent.pem" })
check(not eok and tostring(eerr):find("eidinfo_key option (eidkit.crypto) needs the Lua 5.4 host", 1, true),
  "eidinfo_key: " .. tostring(eerr))

-- poll_h5: CheckEidTokenStatus until finished, through the host's sleep;
-- network errors in a row give up (is_network: the C transport codes).
local statuses = {}
client.check_eid_token_status = function(_, q)
  local list = statuses[q.EidToken]
  local s = table.remove(list, 1)
  if s == "TIMEOUT" then return nil, { code = "timeout", message = "no answer", retryable = true } end
  return { Status = s, RequestId = "rq" }
end
local st4 = assert(flow:start { subject = "u4" })
statuses[st4.EidToken] = { "init", "processing", "TIMEOUT", "finished" }
slept = 0
local polled = assert(flow:poll_h5 { EidToken = st4.EidToken, subject = "u4", interval = 0.5, max_wait = 60 })
check(polled.status == "finished" and polled.done == true and polled.polls == 4 and polled.network_errors == 1
  and slept == 1.5, "poll_h5: " .. polled.status .. " after " .. polled.polls .. " polls, slept " .. slept)
local _, pw = flow:poll_h5 { EidToken = st4.EidToken, subject = "u5" }
check(pw and pw.code == "wrong_subject", "poll_h5, another subject")
statuses[st4.EidToken] = { "TIMEOUT", "TIMEOUT" }
local _, pg = flow:poll_h5 { EidToken = st4.EidToken, interval = 0, max_errors = 2 }
check(pg and pg.code == "timeout" and pg.action == "CheckEidTokenStatus"
  and pg.message:find("gave up after 2 network errors", 1, true), "poll_h5 gives up: " .. tostring(pg))

-- set_policy: a script file or a table replaces the hooks for the next call;
-- a script that does not load changes nothing.
local other = write("other.lua", [[return { classify = function(_, o) o.reason = "swapped"; return o end }]])
check(flow:set_policy(other) == true, "set_policy(path)")
local st5 = assert(flow:start { subject = "u6" })
results[st5.EidToken] = 0
check(assert(flow:finish { subject = "u6", EidToken = st5.EidToken }).reason == "swapped", "the swapped policy")
local nok, nlerr = flow:set_policy(write("broken.lua", "return {"))
check(nok == nil and nlerr.code == "load", "a broken script: " .. tostring(nlerr and nlerr.message))
local st6 = assert(flow:start { subject = "u6" })
results[st6.EidToken] = 0
check(assert(flow:finish { subject = "u6", EidToken = st6.EidToken }).reason == "swapped", "kept after a broken one")
check(flow:set_policy { info_type = "0" } == true, "set_policy(table)")
check(flow.policy.info_type == "0", "the table's info_type")
check(not pcall(flow.set_policy, flow, { classify = 42 }), "a hook that is not a function raises")
check(flow.policy.info_type == "0", "unchanged after a refused table")

-- The host's clock and sleep (C, through the FFI).
local host = require "eidkit.host"
local t0 = host.monotonic()
host.sleep(0.05)
check(host.monotonic() - t0 >= 0.045, "sleep")
check(math.abs(host.now() - os.time()) < 2, "now")
check(not pcall(host.sleep, -1), "sleep -1")

-- The nginx gateway's configure reads its ledger URL with libeidkit's
-- eid_ledger_check_url through the FFI: the words eidkit serve uses.
local orgw = require "eidkit.openresty.gateway"
local function configure_ledger(url)
  return pcall(orgw.configure, { endpoint = "http://127.0.0.1:1", secret_id = "AKIDx", secret_key = "k",
    merchant_id = "0NSJ", ledger = url, demo_authorize = true, sweep_interval = 0 })
end
local cok, cerr = configure_ledger("redis://hunter2@127.0.0.1:1/0")
check(not cok and tostring(cerr):find("eidkit gateway: ledger: url: redis URL names a user without a password", 1, true)
  and not tostring(cerr):find("hunter2", 1, true), "configure: " .. tostring(cerr))
check(configure_ledger("redis://:p%40ss@127.0.0.1:1/0?prefix=x:"), "configure with a password URL")

print("ok " .. rawget(_G, "jit").version)
-- What eidkit.host read from C through the FFI, for the spec to compare with
-- eidkit.core's on Lua 5.4 (one source: the same C tables).
print(require("cjson").encode { limits = host.limits, errcodes = host.errcodes, errcode_table = host.errcode_table })
