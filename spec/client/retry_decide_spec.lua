-- One table of retry decisions (spec/support/retry_cases.lua) through both
-- hosts: Lua 5.4 via eidkit.core (bindings/retry.c) and LuaJIT via the FFI
-- (eidkit.ffi.retry, spec/ffi/retry_cases_ffi.lua run under luajit). Both
-- call eid_retry_decide, the function the C client itself decides with, so
-- each must give exactly the verdicts the table states.
local core = require "eidkit.core"
local libeidkit = require "support.libeidkit"
local proc = require "support.proc"
local t = require "support.retry_cases"

local LUAJIT = os.getenv("EIDKIT_LUAJIT") or "luajit"

local function run_luajit()
  -- A sanitizer build's libeidkit needs its runtime preloaded into luajit.
  local env = ""
  for k, v in pairs(libeidkit.preload_env() or {}) do env = env .. k .. "=" .. proc.quote(v) .. " " end
  local h = assert(io.popen(env .. LUAJIT .. " spec/ffi/retry_cases_ffi.lua 2>&1"))
  local text = h:read("a")
  local ok = h:close()
  assert(ok, "luajit spec/ffi/retry_cases_ffi.lua failed:\n" .. text)
  return assert(load(text, "=luajit", "t", {}))()
end

local function check(name, want_verdict, want_error, got_verdict, got_error)
  if want_error then
    assert.is_nil(got_verdict, name .. ": expected a raise")
    assert.truthy(tostring(got_error):find(want_error, 1, true),
      name .. ": raised '" .. tostring(got_error) .. "', want '" .. want_error .. "'")
  else
    assert.is_nil(got_error, name)
    assert.same(want_verdict, got_verdict, name)
  end
end

describe("core.retry_decide (Lua 5.4)", function()
  for _, c in ipairs(t.cases) do
    it(c[1], function()
      local ok, v = pcall(core.retry_decide, c.rules, c[2])
      check(c[1], c[3], c.error, ok and v or nil, not ok and v or nil)
    end)
  end
  it("core.retry_delay applies the deadline to a policy's answer", function()
    for _, d in ipairs(t.delays) do
      assert.equal(d[3], core.retry_delay(d[1], d[2]), ("remaining %g, wanted %g"):format(d[1], d[2]))
    end
  end)
end)

describe("eidkit.ffi.retry.decide (LuaJIT)", function()
  local got
  setup(function() got = run_luajit() end)
  it("ran under LuaJIT", function()
    assert.truthy(tostring(got.jit):match("^LuaJIT"))
    assert.equal(#t.cases, #got.cases)
  end)
  for i, c in ipairs(t.cases) do
    it(c[1], function()
      local g = got.cases[i]
      check(c[1], c[3], c.error, not g.error and g or nil, g.error)
    end)
  end
  it("eidkit.ffi.retry.delay applies the deadline to a policy's answer", function()
    for i, d in ipairs(t.delays) do
      assert.equal(d[3], got.delays[i], ("remaining %g, wanted %g"):format(d[1], d[2]))
    end
  end)
end)
