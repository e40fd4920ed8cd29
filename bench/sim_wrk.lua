-- wrk script for bench/sim: send one pre-signed request over and over.
-- The request comes from the file named by $SIM_BENCH_REQUEST, written by
-- bench/sim: "Name: value" header lines, an empty line, then the body
-- (exact bytes, no trailing newline). Every connection is keep-alive.
-- wrk's LuaJIT reads these globals: the request, and the callbacks.
-- luacheck: globals wrk setup response done good bad
local path = os.getenv("SIM_BENCH_REQUEST")
local f = assert(io.open(path or "", "rb"), "set SIM_BENCH_REQUEST to the request file")
local text = f:read("*a")
f:close()

local head, body = text:match("^(.-)\n\n(.*)$")
assert(head, "request file: no empty line between headers and body")
wrk.method = "POST"
wrk.path = "/"
wrk.body = body
for line in head:gmatch("[^\n]+") do
  local name, value = line:match("^([^:]+):%s*(.*)$")
  assert(name, "request file: bad header line " .. line)
  wrk.headers[name] = value
end

-- With $SIM_BENCH_VERIFY set (bench/sim's untimed check run), look at every
-- answer and print "verify: GOOD good, BAD bad": good is HTTP 200 with a
-- passing result and no Error. Reading bodies slows wrk, so timed runs skip it.
if os.getenv("SIM_BENCH_VERIFY") then
  local threads = {}
  function setup(thread) threads[#threads + 1] = thread end
  good, bad = 0, 0 -- per-thread globals, read back in done() with thread:get
  function response(status, _, resp_body)
    if status == 200 and resp_body:find('"ErrCode":0', 1, true) and not resp_body:find('"Error"', 1, true) then
      good = good + 1
    else
      bad = bad + 1
    end
  end
  function done()
    local g, b = 0, 0
    for _, t in ipairs(threads) do g, b = g + t:get("good"), b + t:get("bad") end
    io.write(string.format("verify: %d good, %d bad\n", g, b))
  end
end
