-- A small declarative flag parser for the eidkit subcommands. The same spec
-- drives parsing and the --help text, so the two cannot drift apart.
local concat, insert = table.concat, table.insert
local format, rep = string.format, string.rep

local _M = {}

-- spec = { {name = "secret-id", arg = "ID", help = "..."}, {name = "explain", help = "..."},
--          {name = "signed-header", arg = "NAME", list = true, help = "..."} }
-- Returns opts (keys with '-' turned into '_'), positional, or nil, message.
function _M.parse(spec, argv)
  local by_name = {}
  for _, f in ipairs(spec) do by_name[f.name] = f end
  local opts, positional = {}, {}
  local i = 1
  while i <= #argv do
    local a = argv[i]
    if a == "--" then
      for j = i + 1, #argv do insert(positional, argv[j]) end
      break
    end
    local name, value = a:match("^%-%-([%w%-]+)=(.*)$")
    if not name then name = a:match("^%-%-([%w%-]+)$") end
    if not name then
      if a:sub(1, 1) == "-" and a ~= "-" then
        return nil, format("unknown option '%s'", a)
      end
      insert(positional, a)
    else
      local f = by_name[name]
      if not f then return nil, format("unknown option '--%s'", name) end
      local key = name:gsub("%-", "_")
      if f.arg then
        if value == nil then
          i = i + 1
          value = argv[i]
          if value == nil then return nil, format("option '--%s' needs a value (%s)", name, f.arg) end
        end
        if f.list then
          opts[key] = opts[key] or {}
          insert(opts[key], value)
        else
          if opts[key] ~= nil then return nil, format("option '--%s' given twice", name) end
          opts[key] = value
        end
      else
        if value ~= nil then return nil, format("option '--%s' takes no value", name) end
        opts[key] = true
      end
    end
    i = i + 1
  end
  return opts, positional
end

-- A whole file ('-' reads stdin), or nil and the reason.
function _M.read_file(path)
  local f, err
  if path == "-" then f = io.stdin else f, err = io.open(path, "rb") end
  if not f then return nil, err end
  local data = f:read("a")
  if f ~= io.stdin then f:close() end
  if data == nil then return nil, "cannot read " .. path end
  return data
end

function _M.help(spec)
  local lines, width = {}, 0
  local left = {}
  for i, f in ipairs(spec) do
    left[i] = "  --" .. f.name .. (f.arg and (" " .. f.arg) or "")
    if #left[i] > width then width = #left[i] end
  end
  for i, f in ipairs(spec) do
    insert(lines, left[i] .. rep(" ", width - #left[i] + 2) .. f.help)
  end
  return concat(lines, "\n")
end

return _M
