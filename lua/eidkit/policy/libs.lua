-- eidkit.policy.libs: the standard libraries a merchant's policy script may
-- see, for both hosts: eidkit.sandbox (Lua 5.4) and eidkit.policy.trusted
-- (LuaJIT). One list, so the two cannot drift apart on what a script gets.
-- Loaded by both hosts: keeps to what Lua 5.4 and LuaJIT both run.
local pairs, rawget = pairs, rawget

local _M = {}

-- A copy of t without the keys in skip.
local function snapshot(t, skip)
  local c = {}
  for k, v in pairs(t) do
    if not (skip and skip[k]) then c[k] = v end
  end
  return c
end
_M.snapshot = snapshot

-- The host's libraries as they were when this module loaded: string without
-- dump (bytecode), math without randomseed (the host's generator is shared),
-- os reduced to reading the clock; utf8 where the host has it (Lua 5.4).
local utf8 = rawget(_G, "utf8")
_M.LIB = {
  string = snapshot(string, { dump = true }),
  table = snapshot(table),
  math = snapshot(math, { randomseed = true }),
  utf8 = utf8 and snapshot(utf8) or nil,
  os = { time = os.time, clock = os.clock, date = os.date, difftime = os.difftime },
}

return _M
