-- The gateway's three files under LuaJIT (as OpenResty will load them) and
-- under this interpreter: spec/gateway/portable_check.lua, with requests in
-- coroutines whose flow yields across the gateway's pcall/xpcall.
local proc = require "support.proc"

local root = debug.getinfo(1, "S").source:match("^@(.*)/spec/gateway/[^/]*$") or "."
local script = root .. "/spec/gateway/portable_check.lua"
local lua_path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;;"

describe("eidkit.gateway portability", function()
  it("runs under LuaJIT", function()
    local luajit = proc.run({ "sh", "-c", "command -v luajit" }).stdout:gsub("%s+$", "")
    -- A missing luajit fails: a skipped portability check would pass silently.
    assert(luajit ~= "", "luajit is not installed (run scripts/setup-deps)")
    local res = proc.run({ luajit, script }, { env = { LUA_PATH = lua_path } })
    assert.equals(0, res.code, res.stderr)
    assert.matches("^ok LuaJIT", res.stdout)
  end)

  it("runs under this interpreter", function()
    local said
    local env = setmetatable({ print = function(s) said = s end }, { __index = _G })
    assert(loadfile(script, "t", env))()
    assert.matches("^ok ", said)
  end)
end)
