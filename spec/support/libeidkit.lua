-- The build's libeidkit, for specs that load it into another process (luajit,
-- nginx) through eidkit.ffi.
--   local libeidkit = require "support.libeidkit"
--   libeidkit.cpath()        -- "…/build/lua/?.so": the package.cpath entry holding eidkit/core.so
--   libeidkit.lua_dir()      -- "…/build/lua"
--   libeidkit.preload_env()  -- env a host needs to load a sanitizer build's libeidkit, or nil
local proc = require "support.proc"

local _M = {}

-- From this process's package.cpath (the ctest and README commands put
-- build/lua/?.so there), so the child gets the very build under test.
function _M.cpath()
  for template in package.cpath:gmatch("[^;]+") do
    local dir = template:match("^(.*)/%?%.so$")
    if dir and proc.read(dir .. "/eidkit/core.so") then return template end
  end
  error("no package.cpath entry holds eidkit/core.so (set LUA_CPATH to build/lua/?.so)", 2)
end

function _M.lua_dir()
  return (_M.cpath():gsub("/%?%.so$", ""))
end

-- A sanitizer build's libeidkit needs the ASan runtime loaded first, which an
-- uninstrumented host (luajit, nginx) does not do: preload it, so the same
-- specs run the C signer under ASan there too. Leak checking stays off (nginx
-- and LuaJIT keep memory until exit by design).
function _M.preload_env()
  local lib = _M.lua_dir() .. "/../libeidkit.so"
  local asan = proc.output("ldd " .. proc.quote(lib) .. " 2>/dev/null"):match("=>%s*(%S*libasan%.so[%.%d]*)")
  if not asan then return nil end
  return { LD_PRELOAD = asan, ASAN_OPTIONS = "detect_leaks=0:abort_on_error=1" }
end

return _M
