-- examples/openresty/run --config FILE: the file read the way `eidkit serve
-- --config` reads its own (eidkit.gateway.settings.read_config), with run's
-- options. Run under LuaJIT by run:
--   luajit config.lua FILE KEY=KIND ...   (KIND: arg, list or flag)
-- prints one KEY<TAB>VALUE line per value (a list's items one per line, a
-- flag as 1), or says what is wrong on stderr and exits 2.
local settings = require "eidkit.gateway.settings"

local path = arg[1]
local kinds = {}
for i = 2, #arg do
  local key, kind = arg[i]:match("^([%w_]+)=(%a+)$")
  kinds[key] = kind
end
local cfg, err = settings.read_config(path, kinds)
if not cfg then
  io.stderr:write(err, "\n")
  os.exit(2)
end
local lines = {}
for key, v in pairs(cfg) do
  for _, x in ipairs(type(v) == "table" and v or { v == true and "1" or v }) do
    -- One line per value: a value cannot carry a line break or a tab.
    if x:find("%c") then
      io.stderr:write(("--config %s: %s: control characters are not allowed\n"):format(path, key))
      os.exit(2)
    end
    lines[#lines + 1] = key .. "\t" .. x
  end
end
io.write(table.concat(lines, "\n"), #lines > 0 and "\n" or "")
