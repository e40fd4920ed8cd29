-- How eidkit.ffi finds libeidkit (docs/OPENRESTY.md): EIDKIT_LIB, then beside
-- a package.cpath directory, then the dynamic linker's. Each case runs a real
-- luajit (OpenResty's) with its own environment.
local libeidkit = require "support.libeidkit"
local proc = require "support.proc"

local root = debug.getinfo(1, "S").source:match("^@(.*)/spec/ffi/[^/]*$") or "."

local SCRIPT = [[
local eidffi = require "eidkit.ffi"
local ok, err = pcall(eidffi.lib)
if not ok then io.stderr:write(tostring(err)) os.exit(3) end
io.write(eidffi.library_path, "\n", eidffi.version())
]]

local function luajit(env)
  local luajit_bin = proc.output("command -v luajit"):gsub("%s+$", "")
  assert(luajit_bin ~= "", "luajit is not installed (run scripts/setup-deps)")
  env.LUA_PATH = root .. "/lua/?.lua;;"
  -- Unset for this run unless the case sets them ("" counts as unset).
  env.EIDKIT_LIB = env.EIDKIT_LIB or ""
  env.LD_LIBRARY_PATH = env.LD_LIBRARY_PATH or ""
  for k, v in pairs(libeidkit.preload_env() or {}) do env[k] = v end
  return proc.run({ luajit_bin, "-e", SCRIPT }, { env = env })
end

describe("eidkit.ffi library search", function()
  local lua_dir, lib
  setup(function()
    lua_dir = libeidkit.lua_dir()
    lib = lua_dir .. "/../libeidkit.so"
  end)

  it("loads EIDKIT_LIB when set, before anything on package.cpath", function()
    local res = luajit { EIDKIT_LIB = lib, LUA_CPATH = "/nonexistent/?.so;;" }
    assert.equals(0, res.code, res.stderr)
    assert.equals(lib .. "\n0.1.0", res.stdout)
  end)

  it("fails naming EIDKIT_LIB when it does not load, with no fallback", function()
    local res = luajit { EIDKIT_LIB = "/nonexistent/libeidkit.so", LUA_CPATH = lua_dir .. "/?.so;;" }
    assert.equals(3, res.code)
    assert.matches("EIDKIT_LIB=/nonexistent/libeidkit.so does not load", res.stderr, 1, true)
  end)

  it("finds the build tree's library from a build/lua/?.so cpath entry", function()
    local res = luajit { LUA_CPATH = lua_dir .. "/?.so;;" }
    assert.equals(0, res.code, res.stderr)
    assert.equals(lua_dir .. "/../libeidkit.so\n0.1.0", res.stdout)
  end)

  it("falls back to the dynamic linker's libeidkit.so", function()
    local res = luajit { LUA_CPATH = "/nonexistent/?.so", LD_LIBRARY_PATH = lua_dir .. "/.." }
    assert.equals(0, res.code, res.stderr)
    assert.equals("libeidkit.so\n0.1.0", res.stdout)
  end)
end)
