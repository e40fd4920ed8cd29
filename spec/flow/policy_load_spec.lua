-- eidkit.policy.load and eidkit.flow{policy = "path.lua"}: a merchant's
-- policy script run in eidkit.sandbox, through a real simulator and ledger.
local policy = require "eidkit.policy"
local flowenv = require "support.flowenv"

local dir
local function script(name, text)
  local path = dir .. "/" .. name
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

describe("eidkit.policy.load", function()
  local env
  lazy_setup(function()
    env = flowenv.new { sim_args = { "--seed", "17" } }
    local p = io.popen("mktemp -d /tmp/eidkit-policy-XXXXXX")
    dir = p:read("l")
    p:close()
  end)
  lazy_teardown(function()
    env:close()
    os.execute("rm -rf " .. dir)
  end)

  it("runs a policy script's hooks in a sandbox, merged with the defaults", function()
    local path = script("good.lua", [[
      local rules = require "rules"   -- a sibling file, loaded in the same sandbox
      local P = { info_type = "1" }
      function P.classify(_, outcome) return rules.mark(outcome) end
      return P
    ]])
    script("rules.lua", [[
      return { mark = function(o) o.reason = o.reason .. "/merchant" return o end }
    ]])
    local p, box = policy.load(path, { instructions = 1000000 })
    assert.equals("eidkit.Sandbox (" .. path .. ")", tostring(box))
    assert.equals("1", p.info_type)
    assert.equals(policy.defaults.on_show, p.on_show) -- not overridden: the host's default
    local f = env:flow { policy = p }
    local st = env:start(f, "pl-1")
    env:finish_user(st.EidToken, { ErrCode = 0 })
    local o = assert(f.flow:finish { subject = "pl-1", EidToken = st.EidToken })
    assert.same({ "passed", "passed/merchant" }, { o.status, o.reason })
  end)

  it("a hook that loops, eats memory or reaches for os fails that one call; the next goes on", function()
    local path = script("wild.lua", [[
      local P = {}
      function P.classify(result, outcome)
        local mode = result.Text and result.Text.Extra
        if mode == "loop" then while true do pcall(function() while true do end end) end end
        if mode == "memory" then local t = {} for i = 1, 1e9 do t[i] = ("x"):rep(64) .. i end end
        if mode == "rep" then return ("x"):rep(2^30) end
        if mode == "os" then os.execute("true") end
        return outcome
      end
      return P
    ]])
    local f = env:flow { policy = assert(policy.load(path, { instructions = 2000000,
      memory = 8 * 2 ^ 20, time = 2 })) }
    local cases = { loop = "instructions", memory = "memory", rep = "memory", os = "error" }
    for mode, cause in pairs(cases) do
      local subject = "pl-" .. mode
      local st = assert(f.flow:start { subject = subject, Extra = mode })
      env:finish_user(st.EidToken, { ErrCode = 0 })
      local res, err = f.flow:finish { subject = subject, EidToken = st.EidToken }
      assert.is_nil(res, mode)
      assert.same({ "policy", "classify", cause }, { err.code, err.hook, err.cause }, mode)
      assert.equals("passed", f.ledger:get(st.EidToken).state, mode) -- recorded, not consumed
    end
    local st = assert(f.flow:start { subject = "pl-ok", Extra = "fine" })
    env:finish_user(st.EidToken, { ErrCode = 0 })
    assert.equals("passed", assert(f.flow:finish { subject = "pl-ok", EidToken = st.EidToken }).status)
  end)

  it("loads examples/policy.lua, which requires eidkit.policy for the default onShow rule", function()
    local p = assert(policy.load("examples/policy.lua"))
    local ret = { scene = 1038, referrerInfo = { appId = policy.EID_APPID } }
    assert.is_true(p.on_show(ret))
    assert.is_true(p.on_show { scene = "1037", referrerInfo = { appId = policy.EID_APPID } })
    assert.is_false(p.on_show { scene = 1001 })
    assert.equals("1", p.info_type)
    -- the script's view of eidkit.policy is its own
    local q = assert(policy.load(script("scribble.lua", [[
      local pol = require "eidkit.policy"
      pol.is_eid_return = function() return true end
      return { on_show = function(o) return pol.is_eid_return(o) end }
    ]])))
    assert.is_true(q.on_show {})
    assert.is_false(policy.is_eid_return {})
    assert.is_false(assert(policy.load("examples/policy.lua")).on_show {})
  end)

  it("refuses bytecode, scripts that return no table, and misspelt hooks, naming the file", function()
    local bc = script("bc.lua", string.dump(function() return {} end))
    local _, err = policy.load(bc)
    assert.equals("bytecode", err.code)
    -- The file named once (it read "BC 'BC': precompiled ...").
    assert.equals(bc .. ": precompiled bytecode is refused (text chunks only)", err.message)
    _, err = policy.load(script("num.lua", "return 42"))
    assert.same({ "load", true }, { err.code, err.message:find("must return a table of hooks", 1, true) ~= nil })
    _, err = policy.load(script("typo.lua", "return { clasify = function() end }"))
    assert.equals("load", err.code)
    assert.matches("unknown policy key 'clasify'", err.message, 1, true)
    assert.has_error(function() policy.load(42) end, "bad argument #1 to 'load' (path: expected string)")
    assert.has_error(function() policy.load(bc, { instrucions = 1 }) end)
  end)

  it("eidkit.flow takes a path and loads it in a sandbox; a broken one is a bad option", function()
    local path = script("flowpol.lua", "return { info_type = '1' }")
    local f = env:flow { policy = path }
    assert.equals("1", f.flow.policy.info_type)
    assert.has_error(function() env:flow { policy = dir .. "/missing.lua" } end)
    local ok, msg = pcall(env.flow, env, { policy = dir .. "/missing.lua" })
    assert.is_false(ok)
    assert.matches("bad option 'policy'", msg, 1, true)
    assert.matches("missing.lua", msg, 1, true)
  end)
end)
