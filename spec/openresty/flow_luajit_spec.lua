-- require "eidkit", the flow and a policy script file under a real LuaJIT
-- (OpenResty's, luajit2), outside nginx: spec/openresty/flow_luajit_check.lua
-- run as a child process. A missing luajit fails, never skips.
local libeidkit = require "support.libeidkit"
local proc = require "support.proc"

local root = debug.getinfo(1, "S").source:match("^@(.*)/spec/openresty/[^/]*$") or "."

describe("eidkit under LuaJIT", function()
  it("loads without the tools, runs the flow with a policy script, refuses what needs Lua 5.4", function()
    local luajit = proc.run({ "sh", "-c", "command -v luajit" }).stdout:gsub("%s+$", "")
    assert(luajit ~= "", "luajit is not installed (run scripts/setup-deps)")
    local dir = proc.output("mktemp -d /tmp/eidkit-luajit-XXXXXX"):gsub("%s+$", "")
    -- The build under test (its libeidkit beside build/lua/), and under a
    -- sanitizer build its runtime preloaded.
    local env = { LUA_PATH = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. root .. "/spec/?.lua;;",
      LUA_CPATH = libeidkit.cpath() .. ";;", EIDKIT_LIB = "" }
    for k, v in pairs(libeidkit.preload_env() or {}) do env[k] = v end
    local res = proc.run({ luajit, root .. "/spec/openresty/flow_luajit_check.lua", dir }, { env = env })
    proc.sh("rm -rf " .. proc.quote(dir))
    assert.equals(0, res.code, res.stderr)
    assert.matches("^ok LuaJIT", res.stdout)
    -- The limits, codes and ErrCode table LuaJIT read through the FFI are eidkit.core's.
    local core = require "eidkit.core"
    local got = require("cjson").decode(res.stdout:match("\n(.-)\n?$"))
    assert.same(core.limits, got.limits)
    assert.same(core.errcodes, got.errcodes)
    assert.same(core.errcode_table, got.errcode_table)
    assert.is_true(#got.errcode_table > 40)
  end)
end)
