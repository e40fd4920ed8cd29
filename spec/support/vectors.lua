-- The shared TC3 vectors, read at test time (never copied into the specs).
local cjson = require "cjson"

local path = os.getenv("EIDKIT_VECTORS") or "spec/vectors/tc3-vectors.json"
local f = assert(io.open(path, "rb"), "cannot open TC3 vectors at " .. path ..
  " (set EIDKIT_VECTORS)")
local doc = cjson.decode(f:read("a"))
f:close()
assert(#doc.vectors >= 5, "expected at least 5 vectors in " .. path)

-- The request table eidkit.sign takes for a vector.
local function request(v)
  return {
    secret_id = v.secret_id, secret_key = v.secret_key, service = v.service, host = v.host,
    action = v.action, version = v.version, region = v.region, timestamp = v.timestamp,
    content_type = v.content_type, body = v.body, signed_headers = v.signed_headers,
  }
end

return { path = path, vectors = doc.vectors, request = request }
