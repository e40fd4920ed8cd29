-- Dispatch for the eidkit program's subcommands (the C host handles `run`).
local eidkit = require "eidkit"

local stdout, stderr = io.stdout, io.stderr
local format = string.format

local _M = {}

local commands = {
  run = {
    summary = "run a Lua 5.4 script with eidkit loaded",
    usage = "eidkit run SCRIPT [ARGS...]\n       eidkit SCRIPT [ARGS...]",
    help = [[
Runs SCRIPT (a Lua text chunk; '-' reads standard input) in Lua 5.4 with
eidkit's C module preloaded and its Lua modules on package.path, so
`require "eidkit"` works. The global `arg` is built as lua5.4 builds it
(arg[0] is the script), which lets busted use this program as its
interpreter: busted --lua=build/eidkit spec/
An uncaught error prints its message and a traceback and exits with 1.]],
  },
  sign = {
    summary = "sign a Tencent Cloud API request (TC3-HMAC-SHA256)",
    module = "eidkit.cli.sign",
  },
  ledger = {
    summary = "the EidToken ledger: stats, export, sweep, expire",
    module = "eidkit.cli.ledger",
  },
  sim = {
    summary = "serve a local E证通 simulator (signed API, control API, H5 page)",
    module = "eidkit.cli.sim",
  },
  serve = {
    summary = "serve the merchant backend routes (eidkit.gateway), non-blocking",
    module = "eidkit.cli.serve",
  },
  crypto = {
    summary = "SM2 key pair and CSR for EidInfo (keygen); decrypt an EidInfo (decrypt-eidinfo)",
    module = "eidkit.cli.crypto",
  },
  version = {
    summary = "print eidkit's, Lua's and OpenSSL's versions",
    usage = "eidkit version",
    help = "Prints the versions this program was built with.",
  },
  help = {
    summary = "describe a command",
    usage = "eidkit help [COMMAND]",
    help = "Without COMMAND, lists the commands; with it, describes that command.",
  },
}
local order = { "run", "sign", "serve", "sim", "ledger", "crypto", "version", "help" }

local function usage(out)
  out:write("usage: eidkit <command> [arguments]\n\ncommands:\n")
  for _, name in ipairs(order) do
    out:write(format("  %-9s %s\n", name, commands[name].summary))
  end
  out:write("\nRun 'eidkit help COMMAND' for a command's options.\n")
end

local function command_help(name)
  local c = commands[name]
  if c.module then return require(c.module).help() end
  return format("usage: %s\n\n%s\n", c.usage, c.help)
end

local function help(argv)
  local name = argv[1]
  if not name then usage(stdout) return 0 end
  if not commands[name] then
    stderr:write(format("eidkit help: unknown command '%s'\n", name))
    usage(stderr)
    return 2
  end
  stdout:write(command_help(name))
  return 0
end

-- argv: the arguments after the program name. Returns the exit code.
function _M.main(argv)
  local name = argv[1]
  if name == nil or name == "" then usage(stderr) return 2 end
  local rest = { table.unpack(argv, 2) }
  if name == "help" or name == "-h" or name == "--help" then return help(rest) end
  if name == "version" or name == "--version" then
    stdout:write(format("eidkit %s\n%s\n%s\n", eidkit._VERSION, eidkit.core.lua_release,
      eidkit.core.openssl_version()))
    return 0
  end
  local c = commands[name]
  if c and c.module then
    if rest[1] == "-h" or rest[1] == "--help" then
      stdout:write(command_help(name))
      return 0
    end
    return require(c.module).main(rest)
  end
  stderr:write(format("eidkit: unknown command '%s'\n", name))
  usage(stderr)
  return 2
end

return _M
