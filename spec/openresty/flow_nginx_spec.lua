-- eidkit.flow inside a real nginx (Debian's nginx, its Lua module, OpenResty's
-- LuaJIT): require "eidkit" in a worker, flow:start and flow:finish through
-- eidkit.openresty.client against a real `eidkit sim`, the user passing or
-- failing on the simulator's control API in between, with a policy script
-- file loaded as trusted code in its own environment. nginx missing is a
-- failure, never a skip.
-- The ledger is support.memledger, a SPEC-ONLY in-memory stand-in (one
-- worker, so one table): no ledger reaches nginx yet (eidkit.openresty.ledger
-- is being built separately). Everything else is real.
local cjson = require "cjson"
local nginx = require "support.nginx"
local proc = require "support.proc"
local simctl = require "support.simctl"
local simproc = require "support.simproc"

local SECRET_ID = "AKIDorflowSpec00000000000000000000000"
local SECRET_KEY = "orflowSpecSecretKey0123456789abcd"
local MERCHANT = "0NSJ000000000000000000ORFLOW"

local POLICY = [[
local base = require "eidkit.policy"   -- the view a script gets
local P = { info_type = "1" }
function P.classify(_, outcome)
  outcome.reason = outcome.reason .. "/by-policy"
  outcome.reach = table.concat({ tostring(ngx), tostring(io), tostring(os.execute), tostring(package),
    tostring(jit), tostring(base.code_group(0).status) }, ",")
  return outcome
end
return P
]]

-- The flow is made once per worker, where a client's endpoint may be
-- resolved and the policy file read; handlers use it.
local INIT = [[
  include %s/nginx/eidkit.conf;
  init_worker_by_lua_block {
    package.path = "%s/spec/?.lua;" .. package.path
    local eidkit = require "eidkit"
    package.loaded["spec.flow"] = eidkit.flow {
      client = require("eidkit.openresty.client").new {
        endpoint = "%s", secret_id = "%s", secret_key = "%s" },
      ledger = require("support.memledger").new(),
      merchant_id = "%s",
      policy = "%s",
    }
  }
]]

local SERVER = [[
    include %s/nginx/eidkit_location.conf;
    location = /t/start {
      content_by_lua_block {
        local st, err = package.loaded["spec.flow"]:start { subject = ngx.var.arg_subject }
        ngx.say(require("cjson").encode(st or { code = err.code, message = err.message }))
      }
    }
    location = /t/finish {
      content_by_lua_block {
        local o, err = package.loaded["spec.flow"]:finish { subject = ngx.var.arg_subject,
          EidToken = ngx.var.arg_token }
        ngx.say(require("cjson").encode(o or { code = err.code, message = err.message }))
      }
    }
    location = /t/sleep {
      content_by_lua_block {
        require("eidkit.host").sleep(0.4)
        ngx.say("{}")
      }
    }
    location = /t/loaded {
      content_by_lua_block {
        local names = {}
        for name in pairs(package.loaded) do
          if name:match("^eidkit") then names[#names + 1] = name end
        end
        table.sort(names)
        local ok, err = pcall(function() return require("eidkit").client end)
        ngx.say(require("cjson").encode { host = require("eidkit.host").name, loaded = names,
          client = ok and "loaded" or tostring(err) })
      }
    }
]]

describe("eidkit.flow in nginx", function()
  local s, srv, dir
  local answers = {}
  lazy_setup(function()
    s = simproc.start { "--seed", "11", "--credential", SECRET_ID .. ":" .. SECRET_KEY, "--merchant", MERCHANT }
    dir = proc.output("mktemp -d /tmp/eidkit-orflow-XXXXXX"):gsub("%s+$", "")
    local f = assert(io.open(dir .. "/policy.lua", "wb"))
    f:write(POLICY)
    f:close()
    srv = nginx.start {
      http = INIT:format(nginx.root, nginx.root, s.url, SECRET_ID, SECRET_KEY, MERCHANT, dir .. "/policy.lua"),
      server = SERVER:format(nginx.root),
    }
  end)
  lazy_teardown(function()
    if srv then
      -- Nothing secret in error.log, nor in any answer.
      local log = srv:error_log()
      srv:stop()
      assert.falsy(log:find(SECRET_KEY, 1, true), "error.log holds the secret key")
      for _, a in ipairs(answers) do assert.falsy(a:find(SECRET_KEY, 1, true), "an answer holds the secret key") end
    end
    if s then simproc.stop(s) end
    if dir then proc.sh("rm -rf " .. proc.quote(dir)) end
  end)

  local function get(path)
    local r = proc.run { "curl", "-s", "--max-time", "20", srv.url .. path }
    assert(r.code == 0, "curl failed: " .. tostring(r.stderr))
    answers[#answers + 1] = r.stdout
    local ok, v = pcall(cjson.decode, r.stdout)
    assert(ok, "nginx answered: " .. r.stdout .. "\nerror.log:\n" .. srv:error_log():sub(-3000))
    return v
  end

  it("require \"eidkit\" in a worker loads no tool and no Lua 5.4 module", function()
    local v = get("/t/loaded")
    assert.equals("nginx", v.host)
    for _, name in ipairs(v.loaded) do
      assert.falsy(name == "eidkit.core" or name:match("^eidkit%.sim") or name == "eidkit.testing"
        or name == "eidkit.sandbox" or name:match("^eidkit%.cli$") or name:match("^eidkit%.cli%.") or name == "eidkit.client"
        or name == "eidkit.ledger" or name == "eidkit.crypto" or name == "eidkit.serve", name)
    end
    assert.matches("eidkit.client needs the Lua 5.4 host", v.client, 1, true)
  end)

  it("start, the user passes on the simulator, finish: passed, classified by the policy script", function()
    local st = get("/t/start?subject=u-pass")
    assert.matches("^[%w%-]+$", st.EidToken, nil, false)
    assert.truthy(st.expires_at)
    assert.equals(200, simctl.finish(s, st.EidToken, { ErrCode = 0 }))
    local o = get("/t/finish?subject=u-pass&token=" .. st.EidToken)
    assert.same({ "passed", 0, "passed/by-policy", true, st.EidToken },
      { o.status, o.code, o.reason, o.billable, o.EidToken })
    -- the script reached none of the worker's globals; its eidkit.policy view works
    assert.equals("nil,nil,nil,nil,nil,passed", o.reach)
    -- settled once: the same outcome again, and refused to another subject
    local again = get("/t/finish?subject=u-pass&token=" .. st.EidToken)
    assert.same({ "passed", "passed/by-policy" }, { again.status, again.reason })
    assert.equals("wrong_subject", get("/t/finish?subject=u-other&token=" .. st.EidToken).code)
  end)

  it("a failed attempt: failed with the C table's reason, through the policy script", function()
    local st = get("/t/start?subject=u-fail")
    assert.equals(200, simctl.finish(s, st.EidToken, { ErrCode = 2004 }))
    local o = get("/t/finish?subject=u-fail&token=" .. st.EidToken)
    assert.same({ "failed", 2004, "capture/by-policy", true }, { o.status, o.code, o.reason, o.retry_with_new_token })
  end)

  it("the host's sleep yields in a worker (ngx.sleep): five 0.4 s sleeps at once take well under 2 s", function()
    local monotonic = require("eidkit.core").monotonic
    local t0 = monotonic()
    local r = proc.run { "sh", "-c", ("for i in 1 2 3 4 5; do curl -s --max-time 10 -o /dev/null %s/t/sleep & done; wait")
      :format(srv.url) }
    local took = monotonic() - t0
    assert(r.code == 0, tostring(r.stderr))
    -- blocking (eid_sleep) would serialise them on the one worker: 2.0 s
    assert.is_true(took >= 0.35 and took < 1.5, "five sleeps took " .. took .. " s")
  end)

  it("no verdict yet: pending, nothing settled", function()
    local st = get("/t/start?subject=u-wait")
    local o = get("/t/finish?subject=u-wait&token=" .. st.EidToken)
    assert.equals("pending", o.status)
  end)
end)
