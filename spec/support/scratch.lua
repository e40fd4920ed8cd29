-- Temporary paths for the specs, all in one directory per loaded copy of
-- this module, removed with it: when the Lua state closes (busted ends with
-- os.exit(code, true)) or when busted's insulation drops the copy a spec
-- file loaded. So a background curl whose answer a spec never read, a child
-- it never stopped or a file it forgot leaves nothing in /tmp (with
-- os.tmpname, about forty files a suite run stayed there), and what such a
-- process writes after the removal finds no directory and is dropped.
--   local scratch = require "support.scratch"
--   scratch.file()   -- a new empty file's path, as os.tmpname gives
--   scratch.name()   -- a new path, nothing created there
--   scratch.dir()    -- the directory: a child's TMPDIR, for a child that
--                       dies by a signal and so removes nothing itself
local _M = {}

local dir, count = nil, 0

function _M.dir()
  if not dir then
    local p = assert(io.popen([[mktemp -d "${TMPDIR:-/tmp}/eidkit-spec.XXXXXX"]]))
    local made = p:read("l")
    p:close()
    assert(made and made:match("^/"), "mktemp -d made no directory")
    dir = made
    -- The finalizer holds the directory's name, not this table.
    _M.sentinel = setmetatable({}, { __gc = function()
      os.execute("rm -rf '" .. made:gsub("'", "'\\''") .. "'")
    end })
  end
  return dir
end

function _M.name()
  _M.dir()
  count = count + 1
  return dir .. "/" .. count
end

function _M.file()
  local path = _M.name()
  assert(io.open(path, "w")):close()
  return path
end

return _M
