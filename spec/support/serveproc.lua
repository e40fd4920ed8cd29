-- `eidkit serve` as a child process for specs (core.spawn, no shell), and
-- HTTP to it with the curl program (the demo user header needs headers,
-- which core.http_request does not send).
--   local sp = require "support.serveproc"
--   local s = sp.start { "--sim", "--token-limit", "off" }   -- s.url, s.sim_url, s.process
--   local r = sp.request(s, "POST", "/eid/token", { user = "alice" })  -- {status, body, json, headers, time}
--   local h = sp.spawn(s, "POST", "/eid/result", { user = "alice", body = {EidToken = tok} }) -- h.done(), h.result()
--   local code, out, err = sp.stop(s)          -- SIGTERM (or the signal given), wait, exit status
local core = require "eidkit.core"
local cjson = require "cjson"
local proc = require "support.proc"
local scratch = require "support.scratch"
local client = require "fixtures.httpd_client"

local _M = {}

_M.START_TIMEOUT = 15

local function read(path) return proc.read(path) or "" end

-- start(args [, opts]) -> s. opts.env: extra environment (core.spawn's env);
-- opts.lines: how many stdout lines to wait for (default: 2 with --sim, else 1).
function _M.start(args, opts)
  opts = opts or {}
  local base = scratch.name()
  local argv = { proc.bin(), "serve", "--listen", "127.0.0.1:0" }
  local sim = false
  for _, a in ipairs(args or {}) do
    argv[#argv + 1] = a
    sim = sim or a == "--sim"
  end
  local p = assert(core.spawn(argv, { env = opts.env, stdin = "/dev/null", stdout = base .. ".out",
    stderr = base .. ".err", die_with_parent = true }))
  local s = { process = p, base = base, pid = p:pid() }
  local want = opts.lines or (sim and 2 or 1)
  local t0 = core.monotonic()
  while true do
    local out = read(base .. ".out")
    local lines = {}
    for line in out:gmatch("([^\n]*)\n") do lines[#lines + 1] = line end
    if #lines >= want then
      s.url = lines[1]:match("^listening on (%S+)$")
      s.sim_url = sim and (lines[2] or ""):match("^simulator on (%S+)$") or nil
      s.lines = lines
      break
    end
    local st = p:wait(0.02)
    if st or core.monotonic() - t0 > _M.START_TIMEOUT then
      p:close(0.5)
      error(("eidkit serve did not start (%s):\n%s%s"):format(st and "exited " .. tostring(st) or "timeout",
        read(base .. ".out"), read(base .. ".err")), 2)
    end
  end
  return s
end

-- What the process wrote so far.
function _M.output(s) return read(s.base .. ".out"), read(s.base .. ".err") end

local function curl_args(s, method, path, o)
  o = o or {}
  local a = { "-X", method, "--max-time", tostring(o.max_time or 30) }
  if o.user then a[#a + 1] = "-H"; a[#a + 1] = "X-Eidkit-Demo-User: " .. o.user end
  if o.cacert then a[#a + 1] = "--cacert"; a[#a + 1] = o.cacert end
  for k, v in pairs(o.headers or {}) do a[#a + 1] = "-H"; a[#a + 1] = k .. ": " .. v end
  if o.body ~= nil then
    a[#a + 1] = "--data-binary"
    a[#a + 1] = type(o.body) == "table" and cjson.encode(o.body) or o.body
    a[#a + 1] = "-H"
    a[#a + 1] = "Content-Type: application/json"
  end
  if o.trace then a[#a + 1] = "--trace-ascii"; a[#a + 1] = o.trace end
  a[#a + 1] = (o.base or s.url) .. path
  return a
end

local function decorate(r)
  local ok, v = pcall(cjson.decode, r.body or "")
  r.json = ok and v or nil
  return r
end

-- request(s, method, path [, {user =, body =, headers =, base =, cacert =}]) -> result
function _M.request(s, method, path, o)
  return decorate(client.run(curl_args(s, method, path, o)))
end

-- spawn: the same in the background; h.done(), h.result()
function _M.spawn(s, method, path, o)
  local h = client.spawn(curl_args(s, method, path, o))
  local result = h.result
  h.result = function() return decorate(result()) end
  return h
end

-- Wait until cond() is true (at most limit seconds); returns its value.
function _M.wait_for(cond, limit, what)
  local t0 = core.monotonic()
  while true do
    local v = cond()
    if v then return v end
    assert(core.monotonic() - t0 < (limit or 10), "timed out waiting for " .. (what or "a condition"))
    core.sleep(0.01)
  end
end

-- Wait for background requests; their results in order.
function _M.wait_all(handles, limit)
  _M.wait_for(function()
    for _, h in ipairs(handles) do if not h.done() then return false end end
    return true
  end, limit or 30, "the requests")
  local out = {}
  for i, h in ipairs(handles) do out[i] = h.result() end
  return out
end

-- stop(s [, signal]) -> exit status, stdout, stderr (files removed)
function _M.stop(s, signal)
  local p = s.process
  if signal ~= false then p:kill(signal or "TERM") end
  local st, kind = p:wait(30)
  if not st then
    p:close(0.5)
    st, kind = "timeout", "timeout"
  end
  local out, err = _M.output(s)
  p:close(0)
  for _, ext in ipairs { "", ".out", ".err" } do os.remove(s.base .. ext) end
  return st, out, err, kind
end

-- A token for user: POST /eid/token -> EidToken (asserts 200).
function _M.token(s, user)
  local r = _M.request(s, "POST", "/eid/token", { user = user })
  assert(r.status == 200, "POST /eid/token answered " .. tostring(r.status) .. ": " .. tostring(r.body))
  return r.json.EidToken
end

-- The simulated user finishes on the simulator at base (s.sim_url by default).
function _M.sim_finish(s, tok, errcode, base)
  local r = client.run { "-X", "POST", "--data-binary", cjson.encode { ErrCode = errcode or 0 },
    (base or s.sim_url) .. "/sim/tokens/" .. tok .. "/finish" }
  assert(r.status == 200, "sim finish answered " .. tostring(r.status))
end

-- The simulator's fault rules (PUT /sim/faults) at base (s.sim_url by default).
function _M.sim_faults(s, rules, base)
  local r = client.run { "-X", "PUT", "--data-binary", cjson.encode(rules), (base or s.sim_url) .. "/sim/faults" }
  assert(r.status == 200, "PUT /sim/faults answered " .. tostring(r.status) .. ": " .. tostring(r.body))
end

return _M
