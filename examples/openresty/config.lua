-- examples/openresty/run --config FILE: the file read the way `eidkit serve
-- --config` reads its own (eidkit.gateway.settings.read_config), with run's
-- options. Run under LuaJIT by run:
--   luajit config.lua FILE KEY=KIND ...   (KIND: arg, list, flag or table)
-- prints one KEY<TAB>VALUE line per value (a list's items one per line, a
-- flag as 1, a table as one line of JSON), or says what is wrong on stderr
-- and exits 2. A table is a key only a file can set, as for eidkit serve
-- (token_params, result_fields).
local settings = require "eidkit.gateway.settings"
local encode = require("cjson").new().encode

local path = arg[1]
local kinds, tables = {}, {}
for i = 2, #arg do
  local key, kind = arg[i]:match("^([%w_]+)=(%a+)$")
  if kind == "table" then tables[key] = "table" else kinds[key] = kind end
end
local cfg, err = settings.read_config(path, kinds, tables)
if not cfg then
  io.stderr:write(err, "\n")
  os.exit(2)
end
local lines = {}
for key, v in pairs(cfg) do
  if tables[key] then
    local ok, json = pcall(encode, v)
    if not ok then
      io.stderr:write(("--config %s: %s: %s\n"):format(path, key, tostring(json):gsub("^.-: ", "")))
      os.exit(2)
    end
    v = { json } -- cjson escapes control characters: one line
  end
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
