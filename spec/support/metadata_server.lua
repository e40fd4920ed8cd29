-- A stand-in for the CVM metadata service, run as a child process by
-- spec/client/credentials_spec.lua (under lua5.4 or the eidkit program):
--   metadata_server.lua ROLE SECRET_ID SECRET_KEY TOKEN TTL [ID:KEY:TOKEN ...]
-- GET /latest/meta-data/cam/security-credentials/ -> ROLE
-- GET /latest/meta-data/cam/security-credentials/ROLE -> temporary
--   credentials expiring TTL seconds from now (the answer's Date clock)
-- GET /hits -> how many credential documents were served.
-- For spec/openresty/credentials_spec.lua, also:
-- GET /attempts -> how many times the credential document was asked for
--   (served or failed)
-- GET /control/rotate -> serve the next ID:KEY:TOKEN given after TTL
-- GET /control/fail/on, /control/fail/off -> the document answers 500
-- GET /control/delay/MS -> the document is answered MS milliseconds late
--   (without holding the server: libmicrohttpd's delay)
-- GET /control/ttl/S -> documents from now on expire S seconds after serving
-- Prints "port N" once listening; stops on SIGTERM.
local core = require "eidkit.core"
local cjson = require "cjson"

local role, id, key, token, ttl = arg[1], arg[2], arg[3], arg[4], tonumber(arg[5])
local PREFIX = "/latest/meta-data/cam/security-credentials/"
local hits = 0
local attempts, sets, current, failing, delay_ms = 0, {}, 0, false, 0
for i = 6, #arg do
  local a, b, c = arg[i]:match("^([^:]+):([^:]+):(.*)$")
  sets[#sets + 1] = { a, b, c }
end

local srv = core.http_server {
  port = 0,
  handler = function(req)
    if req.path == "/hits" then return { body = tostring(hits) } end
    if req.path == "/attempts" then return { body = tostring(attempts) } end
    if req.path == "/control/rotate" then
      current = current + 1
      id, key, token = sets[current][1], sets[current][2], sets[current][3]
      return { body = tostring(current) }
    end
    if req.path == "/control/fail/on" or req.path == "/control/fail/off" then
      failing = req.path == "/control/fail/on"
      return { body = "ok" }
    end
    local ms = req.path:match("^/control/delay/(%d+)$")
    if ms then
      delay_ms = tonumber(ms)
      return { body = "ok" }
    end
    local s = req.path:match("^/control/ttl/(%d+)$")
    if s then
      ttl = tonumber(s)
      return { body = "ok" }
    end
    if req.path == PREFIX then return { body = role } end
    if req.path == PREFIX .. role then
      attempts = attempts + 1
      if failing then return { status = 500, body = "metadata unavailable", delay_ms = delay_ms } end
      hits = hits + 1
      local now = os.time()
      return { headers = { ["Content-Type"] = "application/json" }, delay_ms = delay_ms, body = cjson.encode {
        TmpSecretId = id, TmpSecretKey = key, Token = token, ExpiredTime = now + ttl,
        Expiration = os.date("!%Y-%m-%dT%H:%M:%SZ", now + ttl), Code = "Success" } }
    end
    return { status = 404, body = "not found" }
  end,
}
io.stdout:write("port ", srv:port(), "\n")
io.stdout:flush()
srv:run()
srv:close()
