-- Run a command and capture stdout, stderr and the exit code, for specs that
-- drive the eidkit program as a subprocess.
local scratch = require "support.scratch"

local _M = {}

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
_M.quote = quote

-- The whole file, or nil when it does not exist (yet).
local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local data = f:read("a")
  f:close()
  return data
end
_M.read = read

local LISTENING = (debug.getinfo(1, "S").source:match("^@(.*)/spec/support/[^/]*$") or ".")
  .. "/scripts/lib/listening.sh"

local function slurp(path) return assert(read(path), path) end

-- argv: list of words (quoted for the shell); opts.stdin: text fed to stdin;
-- opts.env: {NAME = value} set for this command only; opts.cwd: the
-- directory it runs in.
function _M.run(argv, opts)
  opts = opts or {}
  local out, err, inp = scratch.name(), scratch.name(), scratch.name()
  local f = assert(io.open(inp, "wb"))
  f:write(opts.stdin or "")
  f:close()
  local words = {}
  for name, value in pairs(opts.env or {}) do
    words[#words + 1] = name .. "=" .. quote(value)
  end
  if #words > 0 then table.insert(words, 1, "env") end
  for _, a in ipairs(argv) do words[#words + 1] = quote(a) end
  local cmd = (opts.cwd and "cd " .. quote(opts.cwd) .. " && " or "") .. table.concat(words, " ") .. " <" .. inp .. " >" .. out .. " 2>" .. err
  local _, _, code = os.execute(cmd)
  local res = { stdout = slurp(out), stderr = slurp(err), code = code }
  os.remove(out); os.remove(err); os.remove(inp)
  return res
end

-- A shell command's success (true/false), and its whole standard output.
function _M.sh(cmd)
  local ok = os.execute(cmd)
  return ok == true or ok == 0
end

function _M.output(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  p:close()
  return out
end

-- Whether process pid holds a TCP socket listening on port: the
-- started server's own, not another process's answering in its place
-- (scripts/lib/listening.sh says why a connect, a PING or a request cannot
-- tell).
function _M.listening(pid, port)
  return _M.sh(("bash %s %d %d"):format(quote(LISTENING), pid, port))
end

function _M.bin()
  return os.getenv("EIDKIT_BIN") or "build/eidkit"
end

return _M
