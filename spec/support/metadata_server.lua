-- A stand-in for the CVM metadata service, run as a child process by
-- spec/client/credentials_spec.lua (under lua5.4 or the eidkit program):
--   metadata_server.lua ROLE SECRET_ID SECRET_KEY TOKEN TTL
-- GET /latest/meta-data/cam/security-credentials/ -> ROLE
-- GET /latest/meta-data/cam/security-credentials/ROLE -> temporary
--   credentials expiring TTL seconds from now (the answer's Date clock)
-- GET /hits -> how many credential documents were served.
-- Prints "port N" once listening; stops on SIGTERM.
local core = require "eidkit.core"
local cjson = require "cjson"

local role, id, key, token, ttl = arg[1], arg[2], arg[3], arg[4], tonumber(arg[5])
local PREFIX = "/latest/meta-data/cam/security-credentials/"
local hits = 0

local srv = core.http_server {
  port = 0,
  handler = function(req)
    if req.path == "/hits" then return { body = tostring(hits) } end
    if req.path == PREFIX then return { body = role } end
    if req.path == PREFIX .. role then
      hits = hits + 1
      local now = os.time()
      return { headers = { ["Content-Type"] = "application/json" }, body = cjson.encode {
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
