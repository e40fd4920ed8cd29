-- One source for the API clients' options (eidkit/client.h: eid_client_option,
-- eid_client_default_endpoint, eid_client_is_read), checked on both clients:
-- eidkit.client on this Lua 5.4 host (bindings/client.c over the C client)
-- and eidkit.openresty.client in a real nginx. For every numeric option of
-- libeidkit's table, both accept its min, default and max and refuse just
-- outside them or the wrong type with the same words naming the option, and
-- the OpenResty client applies the table's default (the C client's is
-- spec/c/test_client_options.c's). For a table of actions, both clients
-- reuse a connection exactly for those C calls reads, seen by the endpoint
-- (nginx's $connection for each request). Regression: the OpenResty client
-- accepted any max_response above 2^32, which the Lua 5.4 host refuses.
local cjson = require "cjson"
local client_mod = require "eidkit.client"
local child = require "support.child"
local nginx = require "support.nginx"
local proc = require "support.proc"

local format = string.format

-- What the endpoint answers: the connection a request came on (nginx's
-- serial number) and how many requests that connection has carried.
local ENDPOINT = [[
  server {
    listen 127.0.0.1:%d;
    access_log off;
    location = / {
      default_type application/json;
      return 200 '{"Response":{"RequestId":"$connection $connection_requests"}}';
    }
  }
]]

local SERVER = [[
    include %s/nginx/eidkit_location.conf;
    # libeidkit's table read through the FFI, and what a client made without
    # the options applied.
    location = /t/table {
      content_by_lua_block {
        local cjson = require "cjson"
        local ffi = require "ffi"
        local C = require("eidkit.ffi").lib()
        local c = require("eidkit.openresty.client").new { peer = "127.0.0.1", secret_id = "id", secret_key = "k" }
        local out = { options = {}, default_endpoint = ffi.string(C.eid_client_default_endpoint()),
          client = tostring(c) }
        for i = 0, 63 do
          local o = C.eid_client_option(i)
          if o == nil then break end
          local name = ffi.string(o.name)
          out.options[#out.options + 1] = { name = name, unit = ffi.string(o.unit), def = tonumber(o.def),
            min = tonumber(o.min), max = tonumber(o.max), applied = c[name] }
        end
        ngx.say(cjson.encode(out))
      }
    }
    # Each probe {name, value} given to new: "accepted" or the error.
    location = /t/new {
      content_by_lua_block {
        local cjson = require "cjson"
        ngx.req.read_body()
        local new = require("eidkit.openresty.client").new
        local out = {}
        for i, p in ipairs(cjson.decode(ngx.req.get_body_data())) do
          local o = { endpoint = "http://127.0.0.1:9", secret_id = "id", secret_key = "k" }
          o[p.name] = p.value
          local ok, err = pcall(new, o)
          out[i] = ok and "accepted" or (tostring(err):gsub("^.-: bad", "bad"))
        end
        ngx.say(cjson.encode(out))
      }
    }
    # Two calls of one action on one client: the endpoint's answers, and
    # whether C calls the action a read.
    location = /t/pool {
      content_by_lua_block {
        local cjson = require "cjson"
        local action = ngx.var.arg_action
        local c = require("eidkit.openresty.client").new { endpoint = "http://127.0.0.1:" .. ngx.var.arg_port,
          secret_id = "id", secret_key = "k", retry = { max_attempts = 1 } }
        local out = { read = require("eidkit.ffi").lib().eid_client_is_read(action) ~= 0, ids = {} }
        for i = 1, 2 do
          local res, err = c:call(action, {})
          out.ids[i] = res and res.RequestId or tostring(err)
        end
        ngx.say(cjson.encode(out))
      }
    }
]]

local function get(srv, path)
  local r = proc.run { "curl", "-s", "--max-time", "20", srv.url .. path }
  assert(r.code == 0, "curl failed: " .. tostring(r.stderr))
  local ok, out = pcall(cjson.decode, r.stdout)
  assert(ok, "nginx answered: " .. r.stdout .. "\nerror.log:\n" .. srv:error_log():sub(-3000))
  return out
end

local function post(srv, path, body)
  local r = proc.run { "curl", "-s", "--max-time", "20", "-H", "Content-Type: application/json",
    "--data-binary", cjson.encode(body), srv.url .. path }
  assert(r.code == 0, "curl failed: " .. tostring(r.stderr))
  local ok, out = pcall(cjson.decode, r.stdout)
  assert(ok, "nginx answered: " .. r.stdout .. "\nerror.log:\n" .. srv:error_log():sub(-3000))
  return out
end

-- The same probe on this host's client.
local function new_lua54(name, value)
  local ok, c = pcall(client_mod.new, { endpoint = "http://127.0.0.1:9", secret_id = "id", secret_key = "k",
    [name] = value })
  if not ok then return (tostring(c):gsub("^.-: bad", "bad")) end
  c:close()
  return "accepted"
end

describe("the API clients' options, from libeidkit's one table", function()
  local srv, port, tbl
  lazy_setup(function()
    port = child.free_port()
    srv = nginx.start {
      http = ("  include %s/nginx/eidkit.conf;\n"):format(nginx.root) .. ENDPOINT:format(port),
      server = SERVER:format(nginx.root),
    }
    tbl = get(srv, "/t/table")
  end)
  lazy_teardown(function() if srv then srv:stop() end end)

  it("lists the options both clients take, each with a default inside its range", function()
    local names = {}
    for i, o in ipairs(tbl.options) do
      names[i] = o.name
      assert.truthy(o.min <= o.def and o.def <= o.max, o.name)
    end
    assert.same({ "connect_timeout", "timeout", "deadline", "max_response" }, names)
  end)

  it("eidkit.openresty.client applies each default and the default endpoint", function()
    for _, o in ipairs(tbl.options) do assert.equal(o.def, o.applied, o.name) end
    assert.equal("eidkit.openresty.client (" .. tbl.default_endpoint .. ")", tbl.client)
  end)

  it("both clients accept min, default and max, and refuse just outside, the same way", function()
    local probes, want = {}, {}
    for _, o in ipairs(tbl.options) do
      local bytes = o.unit == "bytes"
      local eps = bytes and 1 or o.min / 2
      local range = format("bad option '%s' (out of range: %.15g..%.15g %s)", o.name, o.min, o.max, o.unit)
      local cases = {
        { o.min, "accepted" }, { o.def, "accepted" }, { o.max, "accepted" },
        { o.min - eps, range }, { o.max + eps, range },
        { "1", format("bad option '%s' (expected %s, got string)", o.name, bytes and "integer" or "seconds") },
      }
      if bytes then
        cases[#cases + 1] = { 1.5, format("bad option '%s' (expected integer, got number)", o.name) }
      end
      for _, c in ipairs(cases) do
        probes[#probes + 1] = { name = o.name, value = c[1] }
        want[#want + 1] = c[2]
      end
    end
    local got_or = post(srv, "/t/new", probes)
    local got_54 = {}
    for i, p in ipairs(probes) do got_54[i] = new_lua54(p.name, p.value) end
    assert.same(want, got_54)
    assert.same(want, got_or)
  end)

  it("both clients' retry knobs take the same ranges (eid_retry_check_rules)", function()
    -- {knob, value, accepted}: EID_RETRY_MAX_ATTEMPTS_LIMIT, EID_RETRY_BACKOFF_MIN and _LIMIT.
    local knobs = {
      { "max_attempts", 1, true }, { "max_attempts", 100, true }, { "max_attempts", 101, false },
      { "max_attempts", -1, false }, { "max_attempts", 0, false }, { "base", 0, false }, { "cap", 0, false },
      { "base", 0.001, true }, { "base", 3600, true }, { "base", 0.0005, false }, { "base", 3601, false },
      { "cap", 0.001, true }, { "cap", 3600, true }, { "cap", 0.0005, false }, { "cap", 3601, false },
    }
    local probes, want = {}, {}
    for i, k in ipairs(knobs) do
      probes[i] = { name = "retry", value = { [k[1]] = k[2] } }
      want[i] = k[1] .. "=" .. tostring(k[2]) .. (k[3] and " accepted" or " refused")
    end
    local function verdicts(answers)
      local out = {}
      for i, k in ipairs(knobs) do
        out[i] = k[1] .. "=" .. tostring(k[2]) .. (answers[i] == "accepted" and " accepted" or " refused")
      end
      return out
    end
    local got_54 = {}
    for i, p in ipairs(probes) do got_54[i] = new_lua54(p.name, p.value) end
    assert.same(want, verdicts(got_54))
    assert.same(want, verdicts(post(srv, "/t/new", probes)))
  end)

  -- action, read: a read is retried after a send and may reuse a pooled
  -- connection; anything else gets a connection of its own.
  local ACTIONS = {
    { "GetEidResult", true }, { "CheckEidTokenStatus", true }, { "GetWeChatBillDetails", true },
    { "GetEidToken", false }, { "DetectAuth", false }, { "getEidResult", false },
  }

  -- "conn requests" -> conn, requests
  local function conn(id)
    local c, n = tostring(id):match("^(%d+) (%d+)$")
    assert(c, "not the endpoint's answer: " .. tostring(id))
    return c, tonumber(n)
  end

  -- Two calls' answers: a read's second call came on the first one's
  -- connection (nginx's pool may have carried earlier reads on it); anything
  -- else had a connection of its own each time.
  local function check_pooling(read, ids)
    local c1, n1 = conn(ids[1])
    local c2, n2 = conn(ids[2])
    if read then
      assert.same({ c1, n1 + 1 }, { c2, n2 })
    else
      assert.are_not.equal(c1, c2)
      assert.same({ 1, 1 }, { n1, n2 })
    end
  end

  for _, case in ipairs(ACTIONS) do
    local action, read = case[1], case[2]
    it(format("both clients reuse a connection for %s exactly when C calls it a read (%s)", action,
      tostring(read)), function()
      local out = get(srv, "/t/pool?port=" .. port .. "&action=" .. action)
      assert.equal(read, out.read)
      check_pooling(out.read, out.ids)

      local c = client_mod.new { endpoint = "http://127.0.0.1:" .. port, secret_id = "id", secret_key = "k",
        retry = { max_attempts = 1 } }
      local ids = {}
      for i = 1, 2 do
        local res, err = c:call(action, {})
        assert(res, tostring(err))
        ids[i] = res.RequestId
      end
      c:close()
      check_pooling(out.read, ids)
    end)
  end
end)
