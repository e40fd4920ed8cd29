-- eidkit.sandbox: limits, escapes and the host carrying on (issue 6).
local scratch = require "support.scratch"
local core = require "eidkit.core"
local sandbox = require "eidkit.sandbox"

local SMALL = { name = "policy", instructions = 100000, memory = 4 * 2 ^ 20, time = 5 }

-- Load src as "hooks.lua" in a new box (opts merged over SMALL) and wrap it.
local function hooks_of(src, opts)
  local o = {}
  for k, v in pairs(SMALL) do o[k] = v end
  for k, v in pairs(opts or {}) do o[k] = v end
  local box = sandbox.new(o)
  local mod = assert(box:load(src, "@hooks.lua"))
  return box:wrap(mod), box, mod
end

-- The state is as it was before any call: no hook of ours, no cap, no frame.
local function assert_host_clean()
  local info = core.sandbox_info()
  assert.same({ false, 0, nil }, { info.hooked, info.depth, info.limit })
  assert.equals("string", type(("x"):rep(3)))
  assert.equals("function", type(string.dump))
  assert.equals(string, getmetatable("").__index)
  local t = {}
  for i = 1, 100000 do t[i] = i end  -- the host allocates freely
  assert.equals(100000, #t)
end

local function check_fail(code, message, ...)
  local res, err = ...
  assert.is_nil(res)
  assert.equals(code, err.code)
  assert.equals(message, err.message)
  assert.equals(code .. ": " .. message, tostring(err))
  assert_host_clean()
  return err
end

describe("sandbox.new", function()
  it("has the documented defaults", function()
    local box = sandbox.new()
    assert.same({ 10000000, 64 * 2 ^ 20, 1.0, "sandbox", { "string", "table", "math", "utf8" } },
      { box.instructions, box.memory, box.time, box.name, box.libs })
  end)

  it("raises on misuse, naming the option", function()
    local cases = {
      { { instructions = "many" }, "instructions: expected a positive integer or false, got string" },
      { { instructions = 1.5 }, "instructions: expected a positive integer or false, got 1.5" },
      { { memory = -1 }, "memory: expected a positive integer or false, got -1" },
      { { time = 0 }, "time: expected a positive number or false, got 0" },
      { { libs = "string" }, "libs: expected a list of library names" },
      { { libs = { "io" } }, "libs: 'io' cannot be allowed (files and processes)" },
      { { libs = { "debug" } }, "libs: 'debug' cannot be allowed (it reaches every value and hook)" },
      { { libs = { "package" } }, "libs: 'package' cannot be allowed (it loads host modules and C code)" },
      { { libs = { "lfs" } }, "libs: unknown library 'lfs'" },
      { { globals = 1 }, "globals: expected a table" },
      { { name = 1 }, "name: expected a string" },
      { { print = 1 }, "print: expected a function or false" },
      { { pattern_subject = -1 }, "pattern_subject: expected an integer >= 0 or false" },
      { { instruction = 1 }, "instruction: unknown option" },
    }
    for _, c in ipairs(cases) do
      assert.has_error(function() sandbox.new(c[1]) end, "bad argument #1 to 'new' (" .. c[2] .. ")")
    end
    assert.has_error(function() sandbox.new(1) end, "bad argument #1 to 'new' (table of options expected)")
    local box = sandbox.new()
    assert.has_error(function() box:load(1) end, "bad argument #1 to 'load' (string expected, got number)")
    assert.has_error(function() box:call(1) end, "bad argument #1 to 'call' (function expected, got number)")
    assert.has_error(function() box:wrap(1) end, "bad argument #1 to 'wrap' (table or function expected, got number)")
  end)
end)

describe("limits", function()
  it("stops an infinite loop", function()
    local h = hooks_of("return { spin = function() while true do end end }")
    check_fail("instructions", "policy 'spin': instruction budget of 100000 exceeded at hooks.lua:1", h.spin())
  end)

  it("stops a pcall-wrapped infinite loop", function()
    local h = hooks_of([[return { spin = function()
      while true do pcall(function() while true do end end) end
    end }]])
    check_fail("instructions", "policy 'spin': instruction budget of 100000 exceeded at hooks.lua:2", h.spin())
  end)

  it("stops pcall catching the stop, error handlers that loop, and non-string errors", function()
    local h = hooks_of([[return {
      xpcall_loop = function()
        while true do xpcall(function() while true do end end, function() while true do end end) end
      end,
      rethrow = function() while true do local ok, e = pcall(function() while true do end end) error(e) end end,
      table_error = function() while true do pcall(error, setmetatable({}, { __tostring = function() while true do end end })) end end,
      nil_error = function() while true do pcall(error) end end,
      close_loop = function()
        local x <close> = setmetatable({}, { __close = function() while true do end end })
        while true do end
      end,
      coroutine_loop = function()
        local co = coroutine.create(function() while true do pcall(function() while true do end end) end end)
        while true do pcall(coroutine.resume, co) end
      end,
    }]], { libs = { "coroutine" } })
    for name, fn in pairs(h) do
      local res, err = fn()
      assert.is_nil(res, name)
      assert.equals("instructions", err.code, name)
      assert.matches("^policy '" .. name .. "': instruction budget of 100000 exceeded", err.message)
      assert_host_clean()
    end
  end)

  it("reports errors with non-string values clearly", function()
    local h = hooks_of([[return {
      t = function() error({}) end, n = function() error() end, num = function() error(42) end,
      tostr = function() error(setmetatable({}, { __tostring = function() while true do end end })) end,
    }]])
    check_fail("error", "policy 't': (error object is a table value)", h.t())
    check_fail("error", "policy 'n': (error object is a nil value)", h.n())
    check_fail("error", "policy 'num': 42", h.num())
    check_fail("error", "policy 'tostr': (error object is a table value)", h.tostr())
    local _, err = h.t()
    assert.matches("stack traceback", err.traceback)
  end)

  it("stops a loop at the wall-clock limit", function()
    local h = hooks_of("return { spin = function() while true do end end }", { instructions = false, time = 0.2 })
    local t0 = core.monotonic()
    check_fail("time", "policy 'spin': time limit of 0.2 s exceeded at hooks.lua:1", h.spin())
    local took = core.monotonic() - t0
    assert.is_true(took >= 0.19 and took < 1.5, "took " .. took)
  end)

  it("stops a table-growing memory bomb, and the memory is collectable afterwards", function()
    collectgarbage()
    local before = collectgarbage("count")
    local h = hooks_of("return { bomb = function() local t = {} for i = 1, 1e9 do t[i] = { i } end end }",
      { instructions = false })
    local res, err = h.bomb()
    assert.is_nil(res)
    assert.equals("memory", err.code)
    -- where, when known: a memory error is not always seen by the hook afterwards
    assert.equals("policy 'bomb': memory limit of 4 MiB exceeded", (err.message:gsub(" at hooks%.lua:1$", "")))
    assert_host_clean()
    collectgarbage()
    assert.is_true(collectgarbage("count") - before < 512, "kept " .. (collectgarbage("count") - before) .. " KiB")
  end)

  it("stops a memory bomb caught by pcall in a loop", function()
    local h = hooks_of([[return { bomb = function()
      local keep = {}
      while true do pcall(function() local t = {} keep[#keep + 1] = t for i = 1, 1e9 do t[i] = i end end) end
    end }]], { instructions = false })
    local res, err = h.bomb()
    assert.is_nil(res)
    assert.equals("memory", err.code)
    assert.matches("^policy 'bomb': memory limit of 4 MiB exceeded", err.message)
    assert_host_clean()
  end)

  it("stops string concatenation and string.rep bombs", function()
    local h = hooks_of([[return {
      concat = function() local s = "x" while true do s = s .. s end end,
      rep = function() return string.rep("x", 2 ^ 30) end,
      method_rep = function() return ("x"):rep(2 ^ 30) end,
      huge_rep = function() return string.rep("x", 2 ^ 31) end,
    }]], { instructions = false })
    for _, name in ipairs { "concat", "rep", "method_rep" } do
      local res, err = h[name]()
      assert.is_nil(res)
      assert.equals("memory", err.code)
      assert.matches("^policy '" .. name .. "': memory limit of 4 MiB exceeded", err.message)
      assert_host_clean()
    end
    check_fail("error", "policy 'huge_rep': hooks.lua:5: resulting string too large", h.huge_rep())
  end)

  it("gives each call the same budget again", function()
    local h = hooks_of("return { count = function(n) local x = 0 for i = 1, n do x = x + i end return x end }")
    for _ = 1, 5 do assert.equals(500500, h.count(1000)) end
    assert.equals("instructions", select(2, h.count(1e6)).code)
    assert.equals(500500, h.count(1000))
  end)

  it("keeps a hook the host had, and restores it", function()
    local lines = 0
    local function hook() lines = lines + 1 end
    debug.sethook(hook, "l")
    local h = hooks_of("return { f = function()\nlocal x = 1\nreturn x\nend }")
    local r = h.f()
    local got, mask = debug.gethook()
    debug.sethook()
    assert.equals(1, r)
    assert.same({ hook, "l" }, { got, mask })
    assert.is_true(lines > 2)
  end)
end)

describe("escapes", function()
  it("has no os, io, debug, package, dofile, loadfile, string.dump, and a safe collectgarbage", function()
    local h = hooks_of([[return { probe = function()
      return os, io, debug, package, dofile, loadfile, string.dump, ("").dump, rawget(_G, "core"), warn
    end, gc = function(opt) local r = collectgarbage(opt) return r end }]])
    assert.same({ n = 10 }, table.pack(h.probe()))
    assert.equals("number", type(h.gc("count")))
    check_fail("error", "policy 'gc': hooks.lua:3: collectgarbage: only \"count\" and \"isrunning\" are allowed in the sandbox, not stop",
      h.gc("stop"))
    check_fail("error", "policy 'gc': hooks.lua:3: collectgarbage: only \"count\" and \"isrunning\" are allowed in the sandbox, not \"collect\"",
      h.gc())
  end)

  it("cannot require host modules or reach the box's limits", function()
    local h = hooks_of([[return { req = function(name) local r = require(name) return r end }]])
    check_fail("error", "policy 'req': hooks.lua:1: require 'eidkit.core': only scripts loaded with box:loadfile may require their sibling files",
      h.req("eidkit.core"))
    check_fail("error", "policy 'req': hooks.lua:1: require: bad module name ../x (letters, digits, _ and . only)", h.req("../x"))
  end)

  it("refuses bytecode at box:load and in the script's load", function()
    local box = sandbox.new { name = "policy" }
    check_fail("bytecode", "policy 'x.lua': precompiled bytecode is refused (text chunks only)",
      box:load(string.dump(function() end), "@x.lua"))
    local h = hooks_of([[return { ld = function(chunk, mode) return load(chunk, "c", mode) end }]])
    local msg = "precompiled bytecode is refused in the sandbox (text chunks only)"
    assert.same({ nil, msg }, { h.ld(string.dump(function() end)) })
    assert.same({ nil, msg }, { h.ld("return 1", "b") })
    local f = h.ld("return 1 + 1", "bt")
    assert.equals(2, f())
  end)

  it("loads text in the script's environment by default", function()
    local h = hooks_of([[secret = 7
      return { ld = function(src) return load(src)() end }]])
    assert.equals(7, h.ld("return secret"))
    assert.is_nil(h.ld("return os"))
  end)

  it("does not hand out the strings' metatable or a host object's", function()
    local host_mt = { __index = function() return "host" end }
    local host_obj = setmetatable({}, host_mt)
    local h = hooks_of([[return {
      str = function() return getmetatable(""), getmetatable("").__index end,
      obj = function() return getmetatable(obj) end,
      replace = function() setmetatable(obj, {}) end,
      own = function() local mt = { __index = { x = 1 } } local t = setmetatable({}, mt) return getmetatable(t) == mt, t.x end,
      gc = function() setmetatable({}, { __gc = function() while true do end end }) end,
    }]], { globals = { obj = host_obj } })
    check_fail("error", "policy 'str': hooks.lua:2: attempt to index a nil value", h.str())
    assert.same({ n = 1 }, table.pack(h.obj()))
    check_fail("error", "policy 'replace': hooks.lua:4: cannot change a protected metatable", h.replace())
    assert.equals(host_mt, getmetatable(host_obj))
    assert.same({ true, 1 }, { h.own() })
    check_fail("error", "policy 'gc': hooks.lua:6: setmetatable: __gc metamethods are not allowed in the sandbox", h.gc())
  end)

  it("gives each script its own copies of the libraries and _G", function()
    local box = sandbox.new { name = "policy" }
    local a = box:wrap(assert(box:load([[
      string.rep = nil; table.insert = error; math.pi = 3; evil = true
      local keys = {} for k in pairs(_G) do keys[#keys + 1] = k end
      table.sort(keys)
      return { f = function() return _G == _ENV, table.concat(keys, " ") end }
    ]], "=a")))
    local b = box:wrap(assert(box:load("return { f = function() return string.rep('y', 2), math.pi, evil end }", "=b")))
    assert.same({ true, "_G _VERSION assert collectgarbage error evil getmetatable ipairs load math next pairs pcall"
      .. " print rawequal rawget rawlen rawset require select setmetatable string table tonumber tostring type utf8 xpcall" },
      { a.f() })
    assert.same({ "yy", math.pi }, { b.f() })
    assert.equals("xx", string.rep("x", 2))
    assert.equals(table.insert, require("table").insert)
  end)

  it("copies arguments and results, so a script cannot hook the host's tables", function()
    local h = hooks_of([[return {
      poison = function(t) t.x = 2 setmetatable(t, { __index = function() while true do end end }) return t end,
      give = function() return setmetatable({ a = { 1 } }, { __index = function() while true do end end }), function() while true do end end end,
    }]])
    local arg = { x = 1 }
    local r = h.poison(arg)
    assert.same({ 1, nil }, { arg.x, getmetatable(arg) })
    assert.same({ 2, nil, nil }, { r.x, getmetatable(r), r.missing })
    local t, fn = h.give()
    assert.same({ { a = { 1 } }, nil }, { t, t.missing })
    assert.equals("instructions", select(2, fn()).code)
  end)

  it("copies nested, shared and cyclic arguments as they are shaped, and refuses absurd nesting", function()
    local h = hooks_of([[return {
      shape = function(t)
        local k = next(t.keyed)
        return t.a == t.b, t.self == t, t.a[1], t.arr[3], t.arr[5], type(k), k and k.n, t.keyed[k],
          getmetatable(t.meta), t.meta.x, t.fn == nil
      end,
      touch = function(t) t.a[1] = "changed" t.self.new = true end,
      depth = function(t) local n = 0 while t do n, t = n + 1, t.x end return n end,
    }]])
    local shared = { "s" }
    local key = { n = 1 }
    local arg = { a = shared, b = shared, arr = { 1, 2, 3, nil, 5 }, keyed = { [key] = "v" },
      meta = setmetatable({ x = 1 }, { __index = function() return "host" end }), fn = print }
    arg.self = arg
    assert.same({ true, true, "s", 3, 5, "table", 1, "v", nil, 1, false },
      { h.shape(arg) })
    h.touch(arg)
    assert.same({ "s", nil }, { shared[1], arg.new })
    local deep = {}
    local t = deep
    for _ = 1, 1001 do
      t.x = {}
      t = t.x
    end
    assert.has_error(function() h.depth(deep) end, "sandbox: a table nested deeper than 1000 levels")
    t = deep
    for _ = 1, 999 do t = t.x end
    t.x = nil -- 1,000 levels: copied
    assert.equals(1000, h.depth(deep))
  end)

  it("limits coroutines the script creates, across calls", function()
    local h = hooks_of([[
      local co
      return {
        make = function() co = coroutine.wrap(function() coroutine.yield(1) while true do end end) return co() end,
        resume = function() return co() end,
      }]], { libs = { "coroutine" } })
    assert.equals(1, h.make())
    local _, err = h.resume()
    assert.equals("instructions", err.code)
    assert_host_clean()
  end)

  it("refuses pattern subjects over the cap (a match cannot be interrupted)", function()
    local h = hooks_of([[return { f = function(s, plain) return s:find("a*b"), string.find(s, "b", 1, true) end }]],
      { pattern_subject = 100 })
    assert.same({ nil, nil }, { h.f(("a"):rep(100)) })
    check_fail("error", "policy 'f': hooks.lua:1: string.find: a subject of 101 bytes is over the sandbox's pattern limit of 100 bytes",
      h.f(("a"):rep(101)))
  end)
end)

describe("nesting and host functions", function()
  it("runs a box call from inside another and keeps the outer's limits", function()
    local inner = hooks_of("return { spin = function() while true do end end, ok = function() return 'in' end }",
      { name = "inner", instructions = 50000 })
    local outer = hooks_of([[return { f = function()
      local a, ea = inner.spin()
      local b = inner.ok()
      return ea.code, ea.message, b
    end, spin = function() while true do inner.ok() end end }]], { globals = { inner = inner } })
    assert.same({ "instructions", "inner 'spin': instruction budget of 50000 exceeded at hooks.lua:1", "in" },
      { outer.f() })
    check_fail("instructions", "policy 'spin': instruction budget of 100000 exceeded at hooks.lua:5", outer.spin())
  end)

  it("passes on the error of a hook that replaced the box's (the host's SIGINT handler)", function()
    local function interrupt()  -- as lua.c's laction/lstop do
      debug.sethook(function() debug.sethook() error("interrupted!", 0) end, "", 1)
    end
    local h = hooks_of("return { f = function() interrupt() while true do end end }",
      { globals = { interrupt = interrupt } })
    assert.has_error(function() h.f() end, "interrupted!")
    assert_host_clean()
  end)

  it("reports errors raised by host functions", function()
    local function host_fail() error(setmetatable({ code = "x", message = "host says no" }, core.error_mt)) end
    local function host_raise() error("plain host error", 0) end
    local h = hooks_of("return { a = function() host_fail() end, b = function() host_raise() end }",
      { globals = { host_fail = host_fail, host_raise = host_raise } })
    check_fail("error", "policy 'a': host says no", h.a())
    check_fail("error", "policy 'b': plain host error", h.b())
  end)

  it("box:call passes values as they are and reports the function", function()
    local box = sandbox.new { name = "policy", instructions = 10000 }
    local t = {}
    assert.same({ true, t, 2 }, { box:call(function(x, y) return x, y + 1 end, t, 1) })
    local fn = function() while true do end end
    local _, err = box:call(fn)
    assert.matches("^policy 'function at .-sandbox_spec%.lua:%d+': instruction budget of 10000 exceeded", err.message)
  end)
end)

describe("require in scripts", function()
  local dir
  before_each(function()
    dir = scratch.file()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir .. "/lib"))
    local function write(name, text)
      local f = assert(io.open(dir .. "/" .. name, "w"))
      f:write(text)
      f:close()
    end
    write("main.lua", "#!/usr/bin/env eidkit\nlocal h = require 'lib.helper'\nreturn { f = function() return h.twice(21), require('lib.helper') == h, leaked end }")
    write("lib/helper.lua", "leaked = 1\nreturn { twice = function(x) return 2 * x end }")
  end)
  after_each(function() os.execute("rm -rf " .. dir) end)

  it("loads sibling files through the same box, once, each in its own environment", function()
    local box = sandbox.new { name = "policy" }
    local h = box:wrap(assert(box:loadfile(dir .. "/main.lua")))
    assert.same({ 42, true, nil }, { h.f() })
  end)

  it("fails clearly for a missing file", function()
    local box = sandbox.new { name = "policy" }
    local res, err = box:loadfile(dir .. "/nope.lua")
    assert.is_nil(res)
    assert.equals("load", err.code)
    assert.matches("^policy '.*/nope%.lua': cannot open .*No such file", err.message)
  end)
end)

describe("single C calls", function()
  it("keeps a large table.sort under the hook", function()
    local h = hooks_of([[return { sort = function(n)
      local t = {} for i = 1, n do t[i] = (i * 7919) % n end
      table.sort(t) return t[1], t[n]
    end }]], { instructions = 2000000, memory = 64 * 2 ^ 20 })
    assert.same({ 0, 99 }, { h.sort(100) })
    local res, err = h.sort(200000)
    assert.is_nil(res)
    assert.equals("instructions", err.code)
    assert_host_clean()
  end)

  it("stops deep recursion in Lua and through C", function()
    local h = hooks_of([[return {
      lua = function() local function f(n) return 1 + f(n + 1) end return f(1) end,
      c = function() local function f(s) return (string.gsub(s, ".", f)) end return f("ab") end,
    }]], { instructions = false, memory = 64 * 2 ^ 20 })
    for _, name in ipairs { "lua", "c" } do
      local res, err = h[name]()
      assert.is_nil(res)
      assert.is_truthy(err.code == "error" or err.code == "memory", err.message)
      assert.matches("^policy '" .. name .. "': ", err.message)
      assert_host_clean()
    end
  end)
end)

describe("box:wrap", function()
  it("keeps the module's shape: nested tables, plain values, functions wrapped with their path", function()
    local box = sandbox.new { name = "policy", instructions = 10000 }
    local mod = assert(box:load([[return {
      info_type = "1", limits = { n = 3 },
      sub = { spin = function() while true do end end },
      hello = function(who) return "hi " .. who.name end,
    }]], "=m"))
    local h = box:wrap(mod)
    assert.same({ "1", { n = 3 } }, { h.info_type, h.limits })
    assert.is_nil(getmetatable(h.limits))
    assert.equals("hi ann", h.hello { name = "ann" })
    local _, err = h.sub.spin()
    assert.equals("policy 'sub.spin': instruction budget of 10000 exceeded at m:3", err.message)
    local f = box:wrap(mod.hello)
    assert.equals("hi bo", f { name = "bo" })
  end)
end)
