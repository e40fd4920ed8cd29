-- `require "eidkit"` in production loads none of the tools (issue 15, "What
-- ships"): no simulator, no testing kit, no CLI, no test framework, and it
-- starts no process and installs no SIGCHLD handler. Each case runs a real
-- lua5.4 and a real luajit (OpenResty's) on this tree, with nothing else
-- loaded first.
--
-- eidkit.core (Lua 5.4) does register core.spawn, used by eidkit.testing and
-- the CLI. It is not counted as a tool loaded: it is one C function in the
-- module table that does nothing until called (no child, no signal handler,
-- no thread; the last case checks that), and the facade never calls it.
-- docs/PACKAGING.md gives the argument.
local scratch = require "support.scratch"
local libeidkit = require "support.libeidkit"
local proc = require "support.proc"

local root = debug.getinfo(1, "S").source:match("^@(.*)/spec/install/[^/]*$") or "."

-- Prints, one per line: the modules require "eidkit" added to
-- package.loaded, then "sigchld=<0|1>" (SIGCHLD caught) and
-- "children=<pids>" (this process's children, from /proc). arg[1], when
-- given, is required too (to show that the check sees a tool).
local SCRIPT = [[
local before = {}
for k in pairs(package.loaded) do before[k] = true end
local eidkit = require "eidkit"
assert(type(eidkit.sign) == "function")
if arg[1] then require(arg[1]) end
for k in pairs(package.loaded) do
  if not before[k] then io.write(k, "\n") end
end
local status = io.open("/proc/self/status"):read("*a")
local caught = tonumber(status:match("SigCgt:%s*%x*(%x%x%x%x%x%x%x%x)\n"), 16)
-- SIGCHLD is 17: bit 16 of the mask.
io.write("sigchld=", math.floor(caught / 65536) % 2, "\n")
local pid = io.open("/proc/self/stat"):read("*l"):match("^%d+")
local f = assert(io.open("/proc/self/task/" .. pid .. "/children"))
io.write("children=", (f:read("*a"):gsub("%s+$", "")), "\n")
]]

-- Tools: what must never be loaded by require "eidkit" (module name patterns).
local TOOLS = { "^eidkit%.sim", "^eidkit%.testing", "^eidkit%.cli$", "^eidkit%.cli%.", "^eidkit%.serve$", "^busted", "^luassert",
  "^say$", "^support%.", "^fixtures%." }

local function run(lua, extra)
  local file = scratch.file()
  local f = assert(io.open(file, "wb"))
  f:write(SCRIPT)
  f:close()
  local bin = proc.output("command -v " .. lua):gsub("%s+$", "")
  assert(bin ~= "", lua .. " is not installed (run scripts/setup-deps)")
  local env = { LUA_PATH = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;;",
    LUA_CPATH = libeidkit.cpath() .. ";;", EIDKIT_LIB = "", EIDKIT_SIGN_LIB = "" }
  for k, v in pairs(libeidkit.preload_env() or {}) do env[k] = v end
  local res = proc.run({ bin, file, extra }, { env = env })
  os.remove(file)
  assert.equals(0, res.code, res.stderr)
  local loaded, facts = {}, {}
  for line in res.stdout:gmatch("[^\n]+") do
    local k, v = line:match("^(%a+)=(.*)$")
    if k then facts[k] = v else loaded[#loaded + 1] = line end
  end
  table.sort(loaded)
  return loaded, facts
end

local function tools_in(loaded)
  local found = {}
  for _, name in ipairs(loaded) do
    for _, pattern in ipairs(TOOLS) do
      if name:find(pattern) then found[#found + 1] = name end
    end
  end
  return found
end

for _, lua in ipairs { "lua5.4", "luajit" } do
  describe("require \"eidkit\" under " .. lua, function()
    it("loads none of the tools", function()
      local loaded = run(lua)
      assert.is_true(#loaded > 3, "the list is real: " .. table.concat(loaded, " "))
      assert.same({}, tools_in(loaded))
    end)

    it("starts no process and catches no SIGCHLD", function()
      local _, facts = run(lua)
      assert.equals("0", facts.sigchld)
      assert.equals("", facts.children)
    end)
  end)
end

describe("the tools check", function()
  it("sees a tool when one is loaded", function()
    local loaded = run("lua5.4", "eidkit.testing")
    assert.same({ "eidkit.testing" }, tools_in(loaded))
  end)
end)
