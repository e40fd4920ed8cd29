-- eidkit.sandbox: run merchant policy scripts under limits (issue 6).
-- Each loaded script gets its own _ENV with fresh copies of the allowed
-- libraries; every call runs under an instruction budget, a memory cap and a
-- wall-clock limit enforced by eidkit.core (bindings/sandbox.c). A script
-- that errors, loops or eats memory fails that one call with an error table.
--
--   local sandbox = require "eidkit.sandbox"
--   local box = sandbox.new{ instructions = 1e7, memory = 64 * 2^20, time = 1.0, name = "policy" }
--   local mod, err = box:loadfile("my_policy.lua")   -- or box:load(source, chunkname)
--   local hooks = box:wrap(mod)                       -- hooks.classify(...) -> results | nil, err
--   local ok, r = box:call(fn, ...)                   -- true, results... | nil, err
--
-- Design and what it does not stop: docs/internals/sandbox.md.
local core = require "eidkit.core"

local type, error, select, next, pairs, ipairs = type, error, select, next, pairs, ipairs
local rawget, rawset, rawequal, rawlen = rawget, rawset, rawequal, rawlen
local setmetatable, getmetatable, tostring, tonumber = setmetatable, getmetatable, tostring, tonumber
local assert, pcall, xpcall, load = assert, pcall, xpcall, load
local raw_getmetatable, getinfo = debug.getmetatable, debug.getinfo
local byte, find, sub, format, match, gsub = string.byte, string.find, string.sub, string.format,
  string.match, string.gsub
local pattern = require "eidkit.sandbox.pattern"
local concat, pack, unpack = table.concat, table.pack, table.unpack
local floor, huge, mtype = math.floor, math.huge, math.type
local co_create, co_resume, co_close = coroutine.create, coroutine.resume, coroutine.close
local collectgarbage, io_open, stderr = collectgarbage, io.open, io.stderr
local sandbox_limits, sandbox_call, sandbox_arm = core.sandbox_limits, core.sandbox_call, core.sandbox_arm
local sandbox_tripped, sandbox_copy = core.sandbox_tripped, core.sandbox_copy
local error_mt = core.error_mt

local _M = {}

-- The defaults of sandbox.new.
_M.defaults = {
  instructions = 10000000,
  memory = 64 * 2 ^ 20,
  time = 1.0,
  libs = { "string", "table", "math", "utf8" },
  pattern_subject = 8192,
}

-- Libraries that may be allowed, and those refused with a reason.
local REFUSED = {
  io = "files and processes", debug = "it reaches every value and hook",
  package = "it loads host modules and C code",
}
local BYTECODE = "precompiled bytecode is refused in the sandbox (text chunks only)"
local PATTERN_FUNCS = { find = true, match = true, gmatch = true, gsub = true }

-- The libraries a script may be given (eidkit.policy.libs, shared with
-- LuaJIT's trusted loader).
local LIB = require("eidkit.policy.libs").LIB

local function shallow(t)
  local c = {}
  for k, v in next, t do c[k] = v end
  return c
end

local function bytes_text(n)
  if n % 2 ^ 20 == 0 then return format("%d MiB", floor(n / 2 ^ 20)) end
  return format("%d bytes", n)
end

-- Pattern matching in C is one call that no hook can interrupt, and it
-- backtracks without bound. When a bound on its work (pattern.cost) is
-- small the C function runs; otherwise eidkit.sandbox.pattern, the same
-- matcher in Lua, which the instruction and time limits stop like any code.
-- Subjects over the cap are still refused, as before.
local PATTERN_C_MAX = 1e6 -- steps: a few milliseconds in C
local function guard_pattern(name, fn, cap)
  local lua_fn = pattern[name]
  return function(s, p, init, plain)
    if type(s) == "string" and not (name == "find" and plain) then
      if cap and #s > cap and (type(p) ~= "string" or find(p, "[%^%$%*%+%?%.%(%)%[%]%%%-]")) then
        error(format("string.%s: a subject of %d bytes is over the sandbox's pattern limit of %d bytes",
          name, #s, cap), 2)
      end
      if type(p) == "string" and pattern.cost(#s, p, name ~= "gmatch" and byte(p, 1) == 94) > PATTERN_C_MAX then
        return lua_fn(s, p, init, plain)
      end
    end
    return fn(s, p, init, plain)
  end
end

-- table.sort without a comparator is one C call (1.5 s for the 4M numbers
-- 64 MiB holds); past SORT_C elements a Lua comparator makes it hookable.
local SORT_C = 10000
local function lt(a, b) return a < b end
local function table_lib()
  local lib = shallow(LIB.table)
  local sort = LIB.table.sort
  function lib.sort(t, comp)
    if comp == nil and type(t) == "table" and rawlen(t) > SORT_C then comp = lt end
    return sort(t, comp)
  end
  return lib
end

local function string_lib(cap)
  local lib = shallow(LIB.string)
  for name in pairs(PATTERN_FUNCS) do lib[name] = guard_pattern(name, LIB.string[name], cap) end
  return lib
end

-- coroutine: every thread the script runs gets the count hook first
-- (core.sandbox_arm), and none runs once the call has tripped.
local function coroutine_lib()
  local lib = shallow(coroutine)
  local function arm(co)
    if type(co) == "thread" then sandbox_arm(co) end
  end
  function lib.create(f)
    local co = co_create(f)
    sandbox_arm(co, true)
    return co
  end
  function lib.resume(co, ...)
    arm(co)
    return co_resume(co, ...)
  end
  function lib.close(co)
    arm(co)
    return co_close(co)
  end
  local function unwrap(co, ok, ...)
    if ok then return ... end
    local e = ...
    co_close(co)
    if type(e) == "string" then error(e, 2) end
    error(e, 0)
  end
  function lib.wrap(f)
    local co = lib.create(f)
    return function(...) arm(co) return unwrap(co, co_resume(co, ...)) end
  end
  return lib
end

----------------------------------------------------------------- errors
local function label_of(fn)
  local info = getinfo(fn, "S")
  if info.what == "C" then return "function" end
  return format("function at %s:%d", info.short_src, info.linedefined)
end

-- nil, err for a hook call or a load the sandbox stopped or refused.
local function sandbox_error(box, label, code, msg, where, traceback, capped)
  local detail
  if code == "instructions" then
    detail = capped and "instruction budget of the enclosing call exceeded"
      or format("instruction budget of %d exceeded", box.instructions)
  elseif code == "time" then
    detail = capped and "time limit of the enclosing call exceeded"
      or format("time limit of %g s exceeded", box.time)
  elseif code == "memory" and msg == nil then
    detail = capped and "memory limit of the enclosing call exceeded"
      or format("memory limit of %s exceeded", bytes_text(box.memory))
  else
    detail = msg
  end
  if type(label) == "function" then label = label_of(label) end
  local err = { code = code, name = box.name, hook = label, where = where, traceback = traceback,
    retryable = false }
  if label == box.name and type(detail) == "string" and find(detail, box.name, 1, true) then
    -- The box's own script failing to load: the detail names it already
    -- ("cannot open x.lua: ...", "x.lua:3: syntax error"), once is enough.
    err.message = format("%s%s", detail, where and " at " .. where or "")
  elseif label == box.name then -- the script as a whole (bytecode, its chunk raising): named once
    err.message = format("%s: %s%s", box.name, tostring(detail), where and " at " .. where or "")
  else
    err.message = format("%s '%s': %s%s", box.name, label, detail, where and " at " .. where or "")
  end
  return nil, setmetatable(err, error_mt)
end

local function finish(box, label, ok, ...)
  if ok then return true, ... end
  return sandbox_error(box, label, ...)
end

------------------------------------------------- values across the boundary
-- In: tables are copied without metatables (a script cannot change or hook
-- the host's tables); functions and other values pass as they are. The copy
-- is core.sandbox_copy (bindings/sandbox.c): shared and cyclic tables stay
-- so, and nesting past 1,000 levels raises.
local function copy_in(v)
  if type(v) ~= "table" then return v end
  return sandbox_copy(v)
end

-- Out: tables are copied without metatables (nothing of the script runs when
-- the host reads them) and functions come back wrapped, so calling one goes
-- through the box.
local wrap_fn
local function copy_out(box, label, v, seen)
  local t = type(v)
  if t == "function" then
    seen = seen or {}
    local w = seen[v]
    if not w then
      w = wrap_fn(box, label, v)
      seen[v] = w
    end
    return w
  end
  if t ~= "table" then return v end
  seen = seen or {}
  local c = seen[v]
  if c then return c end
  c = {}
  seen[v] = c
  for k, x in next, v do
    local tk, tx = type(k), type(x)
    if tk == "table" or tk == "function" then k = copy_out(box, label, k, seen) end
    if tx == "table" or tx == "function" then
      -- a function's label names where it was found, e.g. "policy.classify"
      local sub_label = tk == "string" and (label and label .. "." .. k or k) or label
      x = copy_out(box, sub_label, x, seen)
    end
    rawset(c, k, x)
  end
  return c
end

local function map(copy, box, label, n, ...)
  if n == 0 then return end
  if n == 1 then
    if copy == copy_in then return (copy_in((...))) end
    return (copy_out(box, label, (...)))
  end
  local t = pack(...)
  for i = 1, n do
    if copy == copy_in then t[i] = copy_in(t[i]) else t[i] = copy_out(box, label, t[i]) end
  end
  return unpack(t, 1, n)
end

local function results_out(box, label, ...)
  return map(copy_out, box, label, select("#", ...), ...)
end

-- Runs inside the call: copying the results out counts against the limits
-- (the script chose them). The arguments are the host's, copied before the
-- call (wrap_fn): outside the hook, where the VM runs at full speed.
local function run(box, label, fn, ...)
  return results_out(box, label, fn(...))
end

local function results_or_error(ok, ...)
  if ok then return ... end
  return nil, ...
end

function wrap_fn(box, label, fn)
  local limits = box._limits
  return function(...)
    return results_or_error(finish(box, label, sandbox_call(limits, run, box, label, fn,
      map(copy_in, nil, nil, select("#", ...), ...))))
  end
end

----------------------------------------------------------- environments
local Box = {}
Box.__index = Box
Box.__name = "eidkit.Sandbox"

local function check_bytecode(src)
  return type(src) == "string" and byte(src, 1) == 27
end

-- The script's load: text only, in the script's environment by default.
local function load_for(env)
  return function(chunk, chunkname, mode, ...)
    if check_bytecode(chunk) or (mode ~= nil and not (type(mode) == "string" and find(mode, "t", 1, true))) then
      return nil, BYTECODE
    end
    local e = env
    if select("#", ...) > 0 then e = ... end
    return load(chunk, chunkname, "t", e)
  end
end

local function read_file(path)
  local f, err = io_open(path, "rb")
  if not f then return nil, err end
  local src = f:read("a")
  f:close()
  if sub(src, 1, 1) == "#" then src = "--" .. src end  -- a shebang line, as luaL_loadfile skips it
  return src
end

local new_env

-- The script's require: modules next to the script (box:loadfile), each in
-- its own environment, loaded once per script tree; nothing of the host.
local function require_for(box, dir, loaded)
  return function(name)
    if type(name) ~= "string" or not match(name, "^[%w_]+[%w_.]*$") or find(name, "..", 1, true)
      or sub(name, -1) == "." then
      error(format("require: bad module name %s (letters, digits, _ and . only)", tostring(name)), 2)
    end
    local v = loaded[name]
    if v ~= nil then return v end
    v = box._modules[name]
    if v ~= nil then return v end
    if not dir then
      error(format("require '%s': only scripts loaded with box:loadfile may require their sibling files", name), 2)
    end
    local path = dir .. "/" .. gsub(name, "%.", "/") .. ".lua"
    local src, err = read_file(path)
    if not src then error(format("require '%s': %s", name, err), 2) end
    if check_bytecode(src) then error(format("require '%s': %s", name, BYTECODE), 2) end
    local fn, msg = load(src, "@" .. path, "t", new_env(box, dir, loaded))
    if not fn then error(msg, 0) end
    v = fn(name, path)
    if v == nil then v = true end
    loaded[name] = v
    return v
  end
end

function new_env(box, dir, loaded)
  local env = shallow(box._base)
  for name, lib in pairs(box._libs) do env[name] = shallow(lib) end
  for k, v in pairs(box._globals) do env[k] = v end
  env._G = env
  env.load = load_for(env)
  env.require = require_for(box, dir, loaded or {})
  return env
end

-- The base functions every script sees.
local function base_functions(box)
  local owned = setmetatable({}, { __mode = "k" })  -- metatables the box's scripts set
  local base = {
    assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs, pcall = pcall,
    select = select, tonumber = tonumber, tostring = tostring, type = type,
    rawequal = rawequal, rawlen = rawlen, rawget = rawget, rawset = rawset, _VERSION = _VERSION,
  }
  -- When the count hook raises, Lua runs xpcall's handler with hooks off: a
  -- looping handler would never be stopped, so it is skipped once tripped.
  function base.xpcall(f, msgh, ...)
    if type(msgh) ~= "function" then
      error(format("bad argument #2 to 'xpcall' (function expected, got %s)", type(msgh)), 2)
    end
    return xpcall(f, function(e)
      if sandbox_tripped() then return e end
      return msgh(e)
    end, ...)
  end
  -- Only metatables a script of this box set: never the strings' (shared
  -- with the host) nor a host object's.
  function base.getmetatable(v)
    local mt = raw_getmetatable(v)
    if mt == nil or not owned[mt] then return nil end
    return getmetatable(v)
  end
  function base.setmetatable(t, mt)
    if type(t) ~= "table" then
      error(format("bad argument #1 to 'setmetatable' (table expected, got %s)", type(t)), 2)
    end
    local cur = raw_getmetatable(t)
    if cur ~= nil and not owned[cur] then error("cannot change a protected metatable", 2) end
    if mt ~= nil then
      if type(mt) ~= "table" then
        error(format("bad argument #2 to 'setmetatable' (nil or table expected, got %s)", type(mt)), 2)
      end
      -- A finaliser runs with hooks off, at any later allocation, even outside the call.
      if rawget(mt, "__gc") ~= nil then error("setmetatable: __gc metamethods are not allowed in the sandbox", 2) end
      owned[mt] = true
    end
    return setmetatable(t, mt)
  end
  function base.collectgarbage(opt)
    if opt == "count" or opt == "isrunning" then return collectgarbage(opt) end
    error(format("collectgarbage: only \"count\" and \"isrunning\" are allowed in the sandbox, not %s",
      tostring(opt == nil and "\"collect\"" or opt)), 2)
  end
  if box._print then
    local out = box._print
    function base.print(...)
      local n = select("#", ...)
      local parts = {}
      for i = 1, n do parts[i] = tostring((select(i, ...))) end
      out(concat(parts, "\t"))
    end
  end
  return base
end

------------------------------------------------------------------ options
local KNOWN = { instructions = true, memory = true, time = true, libs = true, globals = true, name = true,
  modules = true,
  print = true, pattern_subject = true }

local function bad(field, what)
  error(format("bad argument #1 to 'new' (%s: %s)", field, what), 3)
end

local function limit_option(opts, field, integer)
  local v = opts[field]
  if v == nil then return _M.defaults[field] end
  if v == false then return false end
  if type(v) ~= "number" or v ~= v or v <= 0 or v == huge or (integer and floor(v) ~= v) then
    bad(field, format("expected a positive %s or false, got %s", integer and "integer" or "number",
      type(v) == "number" and tostring(v) or type(v)))
  end
  if integer then return floor(v) end
  return v
end

-- sandbox.new(opts) -> box. Misuse raises, naming the option.
function _M.new(opts)
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then error("bad argument #1 to 'new' (table of options expected)", 2) end
  for k in pairs(opts) do
    if not KNOWN[k] then bad(tostring(k), "unknown option") end
  end
  local box = setmetatable({}, Box)
  box.instructions = limit_option(opts, "instructions", true)
  box.memory = limit_option(opts, "memory", true)
  box.time = limit_option(opts, "time", false)
  box.pattern_subject = opts.pattern_subject == nil and _M.defaults.pattern_subject or opts.pattern_subject
  if box.pattern_subject ~= false and (mtype(box.pattern_subject) ~= "integer" or box.pattern_subject < 0) then
    bad("pattern_subject", "expected an integer >= 0 or false")
  end
  box.name = opts.name == nil and "sandbox" or opts.name
  if type(box.name) ~= "string" then bad("name", "expected a string") end
  local globals = opts.globals == nil and {} or opts.globals
  if type(globals) ~= "table" then bad("globals", "expected a table") end
  box._globals = shallow(globals)
  -- Host modules a script may require by name (a host's view of them: the
  -- values are shared by reference, as globals are).
  local modules = opts.modules == nil and {} or opts.modules
  if type(modules) ~= "table" then bad("modules", "expected a table {name = value}") end
  for k, v in pairs(modules) do
    if type(k) ~= "string" or v == nil then bad("modules", "expected a table {name = value}") end
  end
  box._modules = shallow(modules)
  local out = opts.print
  if out == nil then
    local prefix = box.name .. ": "
    out = function(line) stderr:write(prefix, line, "\n") end
  elseif out ~= false and type(out) ~= "function" then
    bad("print", "expected a function or false")
  end
  box._print = out

  local libs = opts.libs == nil and _M.defaults.libs or opts.libs
  if type(libs) ~= "table" then bad("libs", "expected a list of library names") end
  box._libs = {}
  box.libs = {}
  local methods = {}
  for i, name in ipairs(libs) do
    if type(name) ~= "string" then bad("libs", format("entry %d is not a string", i)) end
    if REFUSED[name] then bad("libs", format("'%s' cannot be allowed (%s)", name, REFUSED[name])) end
    if name == "string" then
      box._libs.string = string_lib(box.pattern_subject)
      methods = string_lib(box.pattern_subject)  -- what ("s"):method() reaches during a call
    elseif name == "table" then
      box._libs.table = table_lib()
    elseif name == "coroutine" then
      box._libs.coroutine = coroutine_lib()
    elseif LIB[name] then
      box._libs[name] = LIB[name]
    else
      bad("libs", format("unknown library '%s'", name))
    end
    box.libs[#box.libs + 1] = name
  end
  box._base = base_functions(box)
  box._limits = sandbox_limits(box.instructions or 0, box.memory or 0, box.time or 0, methods)
  return box
end

------------------------------------------------------------------- methods
local function chunk_label(chunkname)
  local c = byte(chunkname, 1)
  if c == 64 or c == 61 then return sub(chunkname, 2) end  -- "@file", "=name"
  return chunkname
end

local function run_chunk(fn)
  local v = fn()
  if v == nil then v = true end
  return v
end

local function load_in(box, source, chunkname, dir)
  local label = chunk_label(chunkname)
  if check_bytecode(source) then
    return sandbox_error(box, label, "bytecode", "precompiled bytecode is refused (text chunks only)")
  end
  local env = new_env(box, dir)
  local ok, fn, msg = finish(box, label, sandbox_call(box._limits, load, source, chunkname, "t", env))
  if not ok then return nil, fn end
  if not fn then return sandbox_error(box, label, "load", msg) end
  local ok2, v = finish(box, label, sandbox_call(box._limits, run_chunk, fn))
  if not ok2 then return nil, v end
  return v
end

-- box:load(source [, chunkname]) -> the chunk's value (true when it returns
-- nothing) | nil, err. Text only; the chunk runs under the limits.
function Box:load(source, chunkname)
  if type(source) ~= "string" then
    error(format("bad argument #1 to 'load' (string expected, got %s)", type(source)), 2)
  end
  if chunkname == nil then chunkname = "=" .. self.name end
  if type(chunkname) ~= "string" then
    error(format("bad argument #2 to 'load' (string expected, got %s)", type(chunkname)), 2)
  end
  return load_in(self, source, chunkname)
end

-- box:loadfile(path) -> as box:load; the script may require files next to it.
function Box:loadfile(path)
  if type(path) ~= "string" then
    error(format("bad argument #1 to 'loadfile' (string expected, got %s)", type(path)), 2)
  end
  local src, err = read_file(path)
  if not src then return sandbox_error(self, path, "load", "cannot open " .. err) end
  return load_in(self, src, "@" .. path, match(path, "^(.*)/[^/]*$") or ".")
end

-- box:call(fn, ...) -> true, results... | nil, err. Values pass as they are.
function Box:call(fn, ...)
  if type(fn) ~= "function" then
    error(format("bad argument #1 to 'call' (function expected, got %s)", type(fn)), 2)
  end
  return finish(self, fn, sandbox_call(self._limits, fn, ...))
end

-- box:wrap(mod) -> a copy of mod whose functions run through the box and
-- return their results or nil, err; arguments and results are copied as
-- plain data (tables without metatables, functions wrapped again).
function Box:wrap(mod)
  local t = type(mod)
  if t ~= "table" and t ~= "function" then
    error(format("bad argument #1 to 'wrap' (table or function expected, got %s)", t), 2)
  end
  if t == "function" then return wrap_fn(self, label_of(mod), mod) end
  return results_or_error(finish(self, "wrap", sandbox_call(self._limits, copy_out, self, nil, mod)))
end

function Box:__tostring()
  return format("eidkit.Sandbox (%s)", self.name)
end

core.sandbox_skip(shallow)  -- stops are reported at the script's line, not this file's

_M.Box = Box
return _M
