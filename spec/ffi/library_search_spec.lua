-- How eidkit.ffi finds libeidkit and libeidkit_sign (docs/OPENRESTY.md,
-- docs/PACKAGING.md): EIDKIT_LIB / EIDKIT_SIGN_LIB, then beside a
-- package.cpath directory, then the dynamic linker's; and that signing alone
-- maps only libeidkit_sign. Each case runs a real luajit (OpenResty's) with
-- its own environment.
local scratch = require "support.scratch"
local libeidkit = require "support.libeidkit"
local proc = require "support.proc"

local root = debug.getinfo(1, "S").source:match("^@(.*)/spec/ffi/[^/]*$") or "."

local SCRIPT = [[
local eidffi = require "eidkit.ffi"
local ok, err = pcall(eidffi.lib)
if not ok then io.stderr:write(tostring(err)) os.exit(3) end
io.write(eidffi.library_path, "\n", eidffi.version())
]]

-- Signs, then lists the libraries this process has mapped (one per line after
-- the Authorization), then, when asked, uses the whole library too.
local SIGN_ONLY = [[
local eidffi = require "eidkit.ffi"
local h = assert(eidffi.sign { secret_id = "a", secret_key = "b", action = "X", body = "", timestamp = 0 })
local maps = assert(io.open("/proc/self/maps")):read("*a")
local seen = {}
io.write(h.Authorization, "\n", eidffi.sign_library_path, "\n", eidffi.version(), "\n")
for path in maps:gmatch("(/%S+%.so[%.%d]*)\n") do
  if not seen[path] then seen[path] = true io.write(path, "\n") end
end
if arg[1] == "full" then
  -- The retry decision lives only in the whole library.
  local decide = eidffi.lib().eid_retry_decide
  io.write("full: ", eidffi.library_path, " ", tostring(decide ~= nil), "\n")
  maps = assert(io.open("/proc/self/maps")):read("*a")
  io.write("curl mapped after lib(): ", tostring(maps:find("libcurl", 1, true) ~= nil), "\n")
end
]]

local AUTHORIZATION = "TC3-HMAC-SHA256 Credential=a/1970-01-01/faceid/tc3_request, SignedHeaders=content-type;host,"
  .. " Signature=8b9ba17741b4bcfae6ed2aa6da912feff3393a67de0880ab71a2da949100fe7b"

local function luajit(env, script, ...)
  local luajit_bin = proc.output("command -v luajit"):gsub("%s+$", "")
  assert(luajit_bin ~= "", "luajit is not installed (run scripts/setup-deps)")
  env.LUA_PATH = root .. "/lua/?.lua;;"
  -- Unset for this run unless the case sets them ("" counts as unset).
  env.EIDKIT_LIB = env.EIDKIT_LIB or ""
  env.LD_LIBRARY_PATH = env.LD_LIBRARY_PATH or ""
  for k, v in pairs(libeidkit.preload_env() or {}) do env[k] = v end
  env.EIDKIT_SIGN_LIB = env.EIDKIT_SIGN_LIB or ""
  local argv = { luajit_bin, "-e", script or SCRIPT }
  if select("#", ...) > 0 then
    -- luajit -e gives no arg table: run the script from a file instead.
    local file = scratch.file()
    local f = assert(io.open(file, "wb"))
    f:write(script)
    f:close()
    argv = { luajit_bin, file, ... }
    local res = proc.run(argv, { env = env })
    os.remove(file)
    return res
  end
  return proc.run(argv, { env = env })
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

  describe("libeidkit_sign", function()
    local sign_lib
    setup(function() sign_lib = lua_dir .. "/../libeidkit_sign.so" end)

    it("is what signing loads, found from a build/lua/?.so cpath entry", function()
      local res = luajit({ LUA_CPATH = lua_dir .. "/?.so;;" }, SIGN_ONLY, "sign")
      assert.equals(0, res.code, res.stderr)
      local lines = {}
      for l in res.stdout:gmatch("[^\n]+") do lines[#lines + 1] = l end
      assert.equals(AUTHORIZATION, lines[1])
      assert.equals(sign_lib, lines[2])
      assert.equals("0.1.0", lines[3])
    end)

    it("maps no libcurl, SQLite, hiredis nor libeidkit when a process only signs", function()
      local res = luajit({ LUA_CPATH = lua_dir .. "/?.so;;" }, SIGN_ONLY, "sign")
      assert.equals(0, res.code, res.stderr)
      assert.matches("/libeidkit_sign%.so[%.%d]*\n", res.stdout)
      assert.matches("/libcrypto%.so[%.%d]*\n", res.stdout) -- the list is real: the signer's own dependency
      for _, name in ipairs { "libcurl", "libsqlite3", "libhiredis", "libeidkit.so", "libgcrypt" } do
        assert.is_nil(res.stdout:find("/" .. name, 1, true), name .. " is mapped:\n" .. res.stdout)
      end
    end)

    it("leaves the whole library to the rest of eidkit.ffi, which still loads it", function()
      local res = luajit({ LUA_CPATH = lua_dir .. "/?.so;;" }, SIGN_ONLY, "full")
      assert.equals(0, res.code, res.stderr)
      assert.matches("full: " .. lua_dir:gsub("%p", "%%%0") .. "/../libeidkit%.so true\n", res.stdout)
      assert.matches("curl mapped after lib%(%): true", res.stdout)
    end)

    it("loads EIDKIT_SIGN_LIB when set, and fails naming it when it does not load", function()
      local res = luajit({ EIDKIT_SIGN_LIB = sign_lib, LUA_CPATH = "/nonexistent/?.so;;" }, SIGN_ONLY, "sign")
      assert.equals(0, res.code, res.stderr)
      assert.matches("\n" .. sign_lib:gsub("%p", "%%%0") .. "\n", res.stdout)
      res = luajit({ EIDKIT_SIGN_LIB = "/nonexistent/libeidkit_sign.so", LUA_CPATH = lua_dir .. "/?.so;;" },
        SIGN_ONLY, "sign")
      assert.is_not.equals(0, res.code)
      assert.matches("EIDKIT_SIGN_LIB=/nonexistent/libeidkit_sign.so does not load", res.stderr, 1, true)
    end)

    it("is looked for beside EIDKIT_LIB before package.cpath", function()
      local res = luajit({ EIDKIT_LIB = lib, LUA_CPATH = "/nonexistent/?.so;;" }, SIGN_ONLY, "sign")
      assert.equals(0, res.code, res.stderr)
      assert.matches("\n" .. sign_lib:gsub("%p", "%%%0") .. "\n", res.stdout)
    end)

    it("falls back to the dynamic linker's libeidkit_sign.so", function()
      local res = luajit({ LUA_CPATH = "/nonexistent/?.so", LD_LIBRARY_PATH = lua_dir .. "/.." }, SIGN_ONLY, "sign")
      assert.equals(0, res.code, res.stderr)
      assert.matches("\nlibeidkit_sign.so\n", res.stdout, 1, true)
    end)
  end)
end)
