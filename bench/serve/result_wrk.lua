-- wrk script for bench/serve/run: POST /eid/result on pending tokens, each
-- request with its token's own subject (X-Eidkit-Demo-User) and body
-- {"EidToken":"..."}, so every request is one GetEidResult upstream.
--
-- $SERVE_BENCH_TOKENS names a file of "EidToken<TAB>subject" lines (written
-- by bench/serve/tokens.js); $SERVE_BENCH_THREADS is wrk's -t. Thread k of T
-- takes lines k, k+T, k+2T, ... and cycles through them, so no two threads
-- share a token, and a thread reuses one only after its whole slice (the
-- run makes the slices at least twice the thread's connections). Requests
-- are formatted once, in init. Keep-alive throughout.
--
-- done() prints "sent: N", the requests written (wrk's own count leaves out
-- those still in flight when the run ends, which the server still serves):
-- bench/serve/run divides the server's CPU time by it. With
-- $SERVE_BENCH_VERIFY non-empty (the untimed check run) every answer is read
-- too, and done() prints "verify: GOOD good, BAD bad" (good: HTTP 200 with
-- "status":"pending"), then the first bad answer. Timed runs skip that:
-- reading bodies slows wrk.
-- luacheck: globals wrk setup init request response done thread_index sent good bad first_bad
local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
  thread:set("thread_index", #threads)
end

local requests, n, i = {}, 0, 0
-- $SERVE_BENCH_PATH: another path for the same requests (bench/openresty/parts).
local path_of_requests = os.getenv("SERVE_BENCH_PATH") or "/eid/result"

function init()
  local path = os.getenv("SERVE_BENCH_TOKENS")
  local f = assert(io.open(path or "", "rb"), "set SERVE_BENCH_TOKENS to the tokens file")
  local count = assert(tonumber(os.getenv("SERVE_BENCH_THREADS") or ""), "set SERVE_BENCH_THREADS to wrk's -t")
  local k, line_no = thread_index, 0
  for line in f:lines() do
    line_no = line_no + 1
    if (line_no - 1) % count == k - 1 then
      local tok, subject = line:match("^([^\t]+)\t(.+)$")
      assert(tok, "tokens file: bad line " .. line_no)
      n = n + 1
      requests[n] = wrk.format("POST", path_of_requests,
        { ["Content-Type"] = "application/json", ["X-Eidkit-Demo-User"] = subject },
        '{"EidToken":"' .. tok .. '"}')
    end
  end
  f:close()
  assert(n > 0, "tokens file: no line for thread " .. k)
  i = (k * 7919) % n -- threads start at different points of their slices
end

sent, good, bad, first_bad = 0, 0, 0, "" -- per-thread globals, read back in done()

function request()
  sent = sent + 1
  i = i % n + 1
  return requests[i]
end

local verify = (os.getenv("SERVE_BENCH_VERIFY") or "") ~= ""
if verify then
  function response(status, _, body)
    if status == 200 and body:find('"status":"pending"', 1, true) then
      good = good + 1
    else
      bad = bad + 1
      if first_bad == "" then first_bad = status .. " " .. body:sub(1, 200) end
    end
  end
end

function done()
  local s, g, b, first = 0, 0, 0, ""
  for _, t in ipairs(threads) do
    s, g, b = s + t:get("sent"), g + t:get("good"), b + t:get("bad")
    if first == "" then first = t:get("first_bad") end
  end
  io.write(string.format("sent: %d\n", s))
  if verify then
    io.write(string.format("verify: %d good, %d bad\n", g, b))
    if first ~= "" then io.write("first bad answer: " .. first .. "\n") end
  end
end
