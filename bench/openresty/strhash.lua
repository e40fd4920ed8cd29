-- What interning a long string costs in LuaJIT when many others of its
-- length differ from it only in a few bytes, by where those bytes are
-- (docs/internals/openresty.md, "The text of an answer"). OpenResty's
-- LuaJIT hashes a string of 128 bytes or more from pieces of it; strings
-- that differ only where it does not look share one bucket of the string
-- table, and each new one is compared with every other one still there.
--
--   luajit bench/openresty/strhash.lua [LIVE [N]]
--
-- The string is the simulator's pending GetEidResult answer as nginx
-- receives it (266 bytes); LIVE (3000) copies stay alive, then N (20000)
-- more are made, each differing from the others in 6 hex digits at the
-- position given, with the collector running as in a worker (dead copies
-- stay in the table until it sweeps them). Which bytes the hash samples is
-- drawn when the process starts, so the middle rows change from run to
-- run; the last 8 bytes are always read. Prints microseconds per string.
-- Not part of the test suite.
local live, n = tonumber(arg[1]) or 3000, tonumber(arg[2]) or 20000
local answer = '{"Response":{"BestFrame":null,"IdCardData":null,"IsVerifyIntention":null,'
  .. '"IntentionVerifyType":null,"IntentionVerifyData":null,"Text":null,"IntentionActionResult":null,'
  .. '"EidInfo":null,"IntentionQuestionResult":null,"RequestId":"5303aa94-ceed-4156-8dce-abd829b595b1"}}'
local len = #answer

local function run(label, pos)
  local pre, post = answer:sub(1, pos - 1), answer:sub(pos + 6)
  local keep = {}
  for i = 1, live do keep[i] = pre .. string.format("%06x", i) .. post end
  collectgarbage()
  local t = os.clock()
  for i = 1, n do keep[(i % live) + 1] = pre .. string.format("%06x", live + i) .. post end
  local dt = os.clock() - t
  assert(#keep == live)
  collectgarbage()
  print(string.format("%-26s bytes %3d-%3d of %d: %10.3f us a string", label, pos, pos + 5, len, dt / n * 1e6))
end

run("near the start", 20)
run("a quarter in", math.floor(len / 4))
run("the middle", math.floor(len / 2))
run("40 from the end", len - 40)
run("in the last 16", len - 12)
run("in the last 8 (RequestId)", len - 9)
