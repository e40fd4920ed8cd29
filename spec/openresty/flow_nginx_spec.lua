-- eidkit.flow inside a real nginx (Debian's nginx, its Lua module, OpenResty's
-- LuaJIT): require "eidkit" in a worker, flow:start and flow:finish through
-- eidkit.openresty.client against a real `eidkit sim`, the user passing or
-- failing on the simulator's control API in between, with a policy script
-- file loaded as trusted code in its own environment. nginx missing is a
-- failure, never a skip.
-- The ledger is the real one: eidkit.openresty.ledger on a real
-- redis-server, which eidkit.ledger (the C Redis backend, from Lua 5.4)
-- reads and sweeps beside it. Redis restarted mid-run: `unavailable`
-- (retryable) while it is down, then the same token finishes, nothing lost.
local cjson = require "cjson"
local ledger_mod = require "eidkit.ledger"
local nginx = require "support.nginx"
local proc = require "support.proc"
local redis = require "support.redis"
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
      ledger = assert(require("eidkit.openresty.ledger").open("%s")),
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
    location = /t/poll {
      content_by_lua_block {
        local st, err = package.loaded["spec.flow"]:poll_h5 { EidToken = ngx.var.arg_token,
          subject = ngx.var.arg_subject, interval = 0.2, max_wait = 1 }
        ngx.say(require("cjson").encode(st or { code = err.code, message = err.message }))
      }
    }
    location = /t/sweep {
      content_by_lua_block {
        local n, r = package.loaded["spec.flow"]:sweep { limit = 50 }
        ngx.say(require("cjson").encode(n and { due = r.due, recorded = r.recorded, failed = r.failed,
          expired = r.expired, settled = r.settled } or { code = r.code, message = r.message,
          retryable = r.retryable }))
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
  local s, srv, dir, rds, url, c_ledger
  local answers = {}
  lazy_setup(function()
    assert(redis.available, "redis-server is not installed: run scripts/setup-deps")
    rds = redis.start()
    url = rds:url(0, "orflow:")
    c_ledger = assert(ledger_mod.open(url))
    s = simproc.start { "--seed", "11", "--credential", SECRET_ID .. ":" .. SECRET_KEY, "--merchant", MERCHANT }
    dir = proc.output("mktemp -d /tmp/eidkit-orflow-XXXXXX"):gsub("%s+$", "")
    local f = assert(io.open(dir .. "/policy.lua", "wb"))
    f:write(POLICY)
    f:close()
    srv = nginx.start {
      http = INIT:format(nginx.root, nginx.root, s.url, SECRET_ID, SECRET_KEY, url, MERCHANT, dir .. "/policy.lua"),
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
    if c_ledger then c_ledger:close() end
    if rds then rds:destroy() end
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

  it("poll_h5 through the client in nginx: CheckEidTokenStatus until the user is done", function()
    local st = get("/t/start?subject=u-poll")
    local early = get("/t/poll?subject=u-poll&token=" .. st.EidToken)
    assert.is_false(early.done)
    assert.truthy(early.polls >= 2, "polls every 0.2 s for up to 1 s: " .. tostring(early.polls))
    assert.equals(200, simctl.finish(s, st.EidToken, { ErrCode = 0 }))
    local done = get("/t/poll?subject=u-poll&token=" .. st.EidToken)
    assert.same({ "finished", true, 1 }, { done.status, done.done, done.polls })
    assert.equals("wrong_subject", get("/t/poll?subject=u-other&token=" .. st.EidToken).code)
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
  it("the token lives in Redis: the C backend reads what the flow in nginx stored", function()
    local st = get("/t/start?subject=u-cross")
    local rec = assert(c_ledger:get(st.EidToken))
    assert.same({ "issued", "u-cross", MERCHANT }, { rec.state, rec.subject, rec.MerchantId })
    assert.equals(200, simctl.finish(s, st.EidToken, { ErrCode = 0 }))
    assert.equals("passed", get("/t/finish?subject=u-cross&token=" .. st.EidToken).status)
    rec = assert(c_ledger:get(st.EidToken))
    assert.same({ "consumed", 0, 1 }, { rec.state, rec.ErrCode, rec.pulls })
    assert.is_true(#assert(c_ledger:attempts(st.EidToken)) >= 1)
  end)

  it("flow:sweep in nginx records and settles a result nobody came back for; finish answers it", function()
    local st = get("/t/start?subject=u-sweep")
    assert.equals(200, simctl.finish(s, st.EidToken, { ErrCode = 0 }))
    local r = get("/t/sweep")
    assert.is_nil(r.code, r.message)
    assert.is_true(r.recorded >= 1)
    -- The flow's sweep settles what it pulled (consumed, reported once).
    assert.is_true(r.settled >= 1)
    local rec = assert(c_ledger:get(st.EidToken))
    assert.same({ "consumed", 0 }, { rec.state, rec.ErrCode })
    -- C's due list no longer has it; C's export has it, as nginx left it.
    for _, d in ipairs(assert(c_ledger:due(1000))) do assert.not_equals(st.EidToken, d.EidToken) end
    local found
    for _, e in ipairs(assert(c_ledger:export())) do if e.EidToken == st.EidToken then found = e end end
    assert.equals("consumed", found.state)
    -- finish answers the settled outcome.
    assert.equals("passed", get("/t/finish?subject=u-sweep&token=" .. st.EidToken).status)
  end)

  it("Redis restarted mid-run: unavailable and retryable while down, then the same token finishes", function()
    local st = get("/t/start?subject=u-restart")
    assert.equals(200, simctl.finish(s, st.EidToken, { ErrCode = 0 }))
    rds:stop()
    local down = get("/t/finish?subject=u-restart&token=" .. st.EidToken)
    assert.equals("unavailable", down.code)
    local start_down = get("/t/start?subject=u-restart-2")
    assert.equals("unavailable", start_down.code)
    local sweep_down = get("/t/sweep")
    assert.same({ "unavailable", true }, { sweep_down.code, sweep_down.retryable })
    assert(rds:launch())
    -- The pooled connections died with the server: the next call reconnects.
    local o = get("/t/finish?subject=u-restart&token=" .. st.EidToken)
    assert.same({ "passed", 0 }, { o.status, o.code })
    local rec = assert(c_ledger:get(st.EidToken))
    assert.equals("consumed", rec.state)
    assert.is_string(get("/t/start?subject=u-restart-2").EidToken)
  end)
end)
