-- eidkit.policy.trusted: a merchant's policy script loaded as trusted code in
-- its own environment, for hosts without eidkit.sandbox (LuaJIT, OpenResty:
-- the sandbox needs Lua 5.4's C hooks and allocator). eidkit.policy.load
-- uses it there.
--
--   local mod, err = require("eidkit.policy.trusted").loadfile(path, { ["eidkit.policy"] = view })
--
-- What it does: text chunks only; a fresh global table per script with the
-- base functions, copies of string (without dump), table and math (without
-- randomseed), os.time/clock/date/difftime, and print to stderr; no io, os
-- (beyond those), debug, package, load of host modules, dofile or
-- loadstring; require finds only the modules given (a per-script view) and
-- the script's sibling files, each in an environment of its own.
-- getmetatable/setmetatable reach only metatables a script of this tree set
-- (not the strings' metatable, which the whole VM shares).
--
-- What it does NOT do (docs/OPENRESTY.md): no instruction, time or memory
-- limit. A hook that loops never returns and stalls the nginx worker; one
-- that allocates without end grows the worker until the OS or LuaJIT stops
-- it; a pattern that backtracks runs to its end. Hook arguments are the
-- flow's own tables, passed by reference. This is code the merchant trusts,
-- kept out of the host's globals by accident, not by force.
local type, error, select, next, pairs, ipairs, tostring, tonumber, assert, pcall, xpcall =
  type, error, select, next, pairs, ipairs, tostring, tonumber, assert, pcall, xpcall
local rawget, rawset, rawequal, setmetatable, getmetatable, load =
  rawget, rawset, rawequal, setmetatable, getmetatable, load
local io_open, stderr, format, match, gsub, find, sub, byte, concat =
  io.open, io.stderr, string.format, string.match, string.gsub, string.find, string.sub, string.byte,
  table.concat

local host = require "eidkit.host"

local _M = {}

-- The libraries a script is given (eidkit.policy.libs, shared with the Lua
-- 5.4 sandbox), each copied again per script below.
local libs = require "eidkit.policy.libs"
local copy, LIB = libs.snapshot, libs.LIB

local BYTECODE = "precompiled bytecode is refused (text chunks only)"

local function fail(code, message)
  return nil, setmetatable({ code = code, message = message, retryable = false }, host.error_mt)
end

local function read_file(path)
  local f, err = io_open(path, "rb")
  if not f then return nil, err end
  local src = f:read("*a")
  f:close()
  if sub(src, 1, 1) == "#" then src = "--" .. src end -- a shebang line, as luaL_loadfile skips it
  return src
end

local new_env

-- The script's require: the given modules, then files next to the script.
local function require_for(tree, dir)
  return function(name)
    if type(name) ~= "string" or not match(name, "^[%w_]+[%w_.]*$") or find(name, "..", 1, true)
      or sub(name, -1) == "." then
      error(format("require: bad module name %s (letters, digits, _ and . only)", tostring(name)), 2)
    end
    local v = tree.loaded[name]
    if v ~= nil then return v end
    v = tree.modules[name]
    if v ~= nil then return v end
    local path = dir .. "/" .. gsub(name, "%.", "/") .. ".lua"
    local src, err = read_file(path)
    if not src then error(format("require '%s': %s", name, err), 2) end
    if byte(src, 1) == 27 then error(format("require '%s': %s", name, BYTECODE), 2) end
    local fn, msg = load(src, "@" .. path, "t", new_env(tree, dir))
    if not fn then error(msg, 0) end
    v = fn(name, path)
    if v == nil then v = true end
    tree.loaded[name] = v
    return v
  end
end

function new_env(tree, dir)
  local env = {
    assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs, pcall = pcall,
    xpcall = xpcall, select = select, tonumber = tonumber, tostring = tostring, type = type,
    rawequal = rawequal, rawget = rawget, rawset = rawset, unpack = rawget(table, "unpack") or rawget(_G, "unpack"),
    _VERSION = _VERSION,
  }
  for name, lib in pairs(LIB) do env[name] = copy(lib) end
  local owned = tree.owned
  function env.getmetatable(v)
    local mt = getmetatable(v)
    if mt == nil or not owned[mt] then return nil end
    return mt
  end
  function env.setmetatable(t, mt)
    if type(t) ~= "table" then
      error(format("bad argument #1 to 'setmetatable' (table expected, got %s)", type(t)), 2)
    end
    local cur = getmetatable(t)
    if cur ~= nil and not owned[cur] then error("cannot change a protected metatable", 2) end
    if mt ~= nil then
      if type(mt) ~= "table" then
        error(format("bad argument #2 to 'setmetatable' (nil or table expected, got %s)", type(mt)), 2)
      end
      owned[mt] = true
    end
    return setmetatable(t, mt)
  end
  local prefix = tree.name .. ": "
  function env.print(...)
    local parts = {}
    for i = 1, select("#", ...) do parts[i] = tostring((select(i, ...))) end
    stderr:write(prefix, concat(parts, "\t"), "\n")
  end
  env._G = env
  env.require = require_for(tree, dir)
  return env
end

-- loadfile(path, modules) -> the script's value (true when it returns
-- nothing) | nil, err (code "load": unreadable, bytecode, syntax; "error":
-- the chunk raised). modules: {name = value} a script may require.
function _M.loadfile(path, modules)
  if type(path) ~= "string" then error("bad argument #1 to 'loadfile' (string expected)", 2) end
  local src, err = read_file(path)
  if not src then return fail("load", path .. ": cannot open " .. tostring(err)) end
  if byte(src, 1) == 27 then return fail("load", path .. ": " .. BYTECODE) end
  local tree = { name = path, modules = modules or {}, loaded = {}, owned = setmetatable({}, { __mode = "k" }) }
  local fn, msg = load(src, "@" .. path, "t", new_env(tree, match(path, "^(.*)/[^/]*$") or "."))
  if not fn then return fail("load", tostring(msg)) end
  local ok, v = pcall(fn)
  if not ok then return fail("error", path .. ": " .. tostring(v)) end
  if v == nil then v = true end
  return v
end

return _M
