-- The Lua side of spec/install_test.sh (not a *_spec file: it needs the trees
-- that script installs, named by EIDKIT_INSTALL_PREFIX, EIDKIT_INSTALL_LIBDIR
-- and EIDKIT_ROCK_TREE). Each case runs a real lua5.4, luajit or nginx on an
-- installed tree only: no path into this checkout or its build.
local cjson = require "cjson"
local nginx = require "support.nginx"
local proc = require "support.proc"
local vectors = require "support.vectors"

local function env(name)
  local v = os.getenv(name)
  assert(v and v ~= "", name .. " is not set: run spec/install_test.sh BUILD_DIR")
  return v
end

local prefix, libdir, rocks = env("EIDKIT_INSTALL_PREFIX"), env("EIDKIT_INSTALL_LIBDIR"), env("EIDKIT_ROCK_TREE")

local vector = vectors.vectors[1]
local REQUEST = cjson.encode(vectors.request(vector))

local function lua_path(share)
  return share .. "/?.lua;" .. share .. "/?/init.lua"
end
local PREFIX_PATH, PREFIX_CPATH = lua_path(prefix .. "/share/lua/5.4"), libdir .. "/lua/5.4/?.so"
local ROCK_PATH, ROCK_CPATH = lua_path(rocks .. "/share/lua/5.4"), rocks .. "/lib/lua/5.4/?.so"

-- Signs REQUEST (stdin) with mode "ffi" (eidkit.ffi), "ffi+lib" (then loads
-- the whole library too) or "eidkit" (the facade); prints the Authorization,
-- the libraries' paths, then every shared object mapped.
local SCRIPT = [[
local cjson = require "cjson"
local req = cjson.decode(io.read("*a"))
local mode = arg[1]
local h, where
if mode == "eidkit" then
  local eidkit = require "eidkit"
  h = assert(eidkit.sign(req))
  local ffi_ok, eidffi = pcall(require, "eidkit.ffi")
  where = jit and eidffi.library_path or package.searchpath("eidkit.core", package.cpath)
  assert(ffi_ok or not jit)
else
  local eidffi = require "eidkit.ffi"
  h = assert(eidffi.sign(req))
  where = eidffi.sign_library_path
  if mode == "ffi+lib" then eidffi.lib() where = where .. " " .. eidffi.library_path end
end
io.write(h.Authorization, "\n", where, "\n")
local seen = {}
for path in io.open("/proc/self/maps"):read("*a"):gmatch("(/%S+%.so[%.%d]*)\n") do
  if not seen[path] then seen[path] = true io.write(path, "\n") end
end
]]

local function run(bin, path, cpath, mode)
  local file = os.tmpname()
  local f = assert(io.open(file, "wb"))
  f:write(SCRIPT)
  f:close()
  -- Only the installed tree and the system's directories (";;"): the
  -- environment this spec runs in points at the build.
  local res = proc.run({ bin, file, mode }, { stdin = REQUEST,
    env = { LUA_PATH = path .. ";;", LUA_CPATH = cpath .. ";;", EIDKIT_LIB = "", EIDKIT_SIGN_LIB = "",
      LD_LIBRARY_PATH = "" } })
  os.remove(file)
  assert.equals(0, res.code, res.stderr)
  local auth, where, maps = res.stdout:match("^([^\n]*)\n([^\n]*)\n(.*)$")
  return auth, where, maps
end

local function assert_sign_only(maps)
  assert.matches("/libeidkit_sign%.so[%.%d]*\n", maps)
  for _, name in ipairs { "libcurl", "libsqlite3", "libhiredis", "libeidkit.so", "libgcrypt" } do
    assert.is_nil(maps:find("/" .. name, 1, true), name .. " is mapped after signing:\n" .. maps)
  end
end

local function under(dir, path)
  local real = proc.output("readlink -f " .. proc.quote(path)):gsub("%s+$", "")
  local base = proc.output("readlink -f " .. proc.quote(dir)):gsub("%s+$", "")
  return real:sub(1, #base + 1) == base .. "/", real .. " is not under " .. base
end

describe("the LuaRocks tree", function()
  it("gives lua5.4 require \"eidkit\", which signs with the rock's eidkit.core", function()
    local auth, where = run("lua5.4", ROCK_PATH, ROCK_CPATH, "eidkit")
    assert.equals(vector.authorization, auth)
    assert.equals(rocks .. "/lib/lua/5.4/eidkit/core.so", where)
  end)

  it("gives luajit's eidkit.ffi its libeidkit_sign (beside the C module), and only that", function()
    local auth, where, maps = run("luajit", ROCK_PATH, ROCK_CPATH, "ffi")
    assert.equals(vector.authorization, auth)
    assert.equals(rocks .. "/lib/lua/5.4/libeidkit_sign.so", where)
    assert_sign_only(maps)
  end)

  it("gives luajit the whole libeidkit for the rest of eidkit.ffi", function()
    local auth, where = run("luajit", ROCK_PATH, ROCK_CPATH, "ffi+lib")
    assert.equals(vector.authorization, auth)
    assert.equals(rocks .. "/lib/lua/5.4/libeidkit_sign.so " .. rocks .. "/lib/lua/5.4/libeidkit.so", where)
  end)
end)

describe("the cmake --install prefix", function()
  it("gives luajit's eidkit.ffi the installed libeidkit_sign, and only that", function()
    local auth, where, maps = run("luajit", PREFIX_PATH, PREFIX_CPATH, "ffi")
    assert.equals(vector.authorization, auth)
    assert(under(libdir, where))
    assert.matches("libeidkit_sign%.so$", where)
    assert_sign_only(maps)
  end)

  describe("in nginx (lua_package_path and lua_package_cpath on the prefix)", function()
    local srv
    setup(function()
      srv = nginx.start { lua_path = PREFIX_PATH, lua_cpath = PREFIX_CPATH, server = [[
    location = /sign {
      content_by_lua_block {
        local cjson = require "cjson.safe"
        local eidffi = require "eidkit.ffi"
        ngx.req.read_body()
        local h = assert(eidffi.sign(cjson.decode(ngx.req.get_body_data())))
        local f = assert(io.open("/proc/self/maps"))
        ngx.print(h.Authorization, "\n", eidffi.sign_library_path, "\n", f:read("*a"))
        f:close()
      }
    }
    location = /eidkit {
      content_by_lua_block {
        local cjson = require "cjson.safe"
        local eidkit = require "eidkit"
        ngx.req.read_body()
        local h = assert(eidkit.sign(cjson.decode(ngx.req.get_body_data())))
        ngx.print(h.Authorization, "\n", require("eidkit.ffi").library_path, "\n",
          package.searchpath("eidkit.flow", package.path))
      }
    }
]] }
    end)
    teardown(function() if srv then srv:stop() end end)

    -- The vector's request to a location: its three lines (Authorization, a
    -- library path, then the rest).
    local function post(path)
      local file = os.tmpname()
      local f = assert(io.open(file, "wb"))
      f:write(REQUEST)
      f:close()
      local res = proc.run { "curl", "-s", "--max-time", "10", "--data-binary", "@" .. file, srv.url .. path }
      os.remove(file)
      assert.equals(0, res.code, res.stderr)
      local a, b, c = res.stdout:match("^([^\n]*)\n([^\n]*)\n(.*)$")
      assert(a, "unexpected answer: " .. res.stdout)
      return a, b, c
    end

    it("signs in a worker that maps only libeidkit_sign", function()
      local auth, where, maps = post("/sign")
      assert.equals(vector.authorization, auth)
      assert(under(libdir, where))
      assert_sign_only(maps)
      assert.matches("/libluajit", maps) -- the worker's own maps
    end)

    it("loads require \"eidkit\" from the prefix in a worker", function()
      local auth, lib, flow = post("/eidkit")
      assert.equals(vector.authorization, auth)
      assert(under(libdir, lib))
      assert(under(prefix, flow))
      assert.is_nil(srv:error_log():find("%[error%]"), srv:error_log())
    end)
  end)
end)
