-- A throw-away test CA for TLS specs, made with the openssl program: a CA,
-- a server certificate it signs for one name, and an unrelated CA.
--   local testca = require "support.testca"
--   local ca = testca.make { san = "IP:127.0.0.1" }  -- or "DNS:localhost"
--   ca.ca, ca.cert, ca.key, ca.other   -- PEM paths; ca:remove()
local scratch = require "support.scratch"

local _M = {}

local function sh(cmd) assert(os.execute(cmd .. " >/dev/null 2>&1"), cmd) end

function _M.make(opts)
  local dir = scratch.file() .. ".ca"
  local san = assert(opts and opts.san, "testca.make: san required (IP:127.0.0.1, DNS:localhost)")
  local cn = san:match("^%a+:(.*)$")
  local ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
  sh("mkdir " .. dir)
  sh(("openssl req -x509 %s -days 1 -subj /CN=eidkit-test-ca -keyout %s/ca.key -out %s/ca.pem"):format(ec, dir, dir))
  sh(("openssl req %s -subj /CN=%s -keyout %s/key.pem -out %s/csr.pem"):format(ec, cn, dir, dir))
  sh(("printf 'subjectAltName=%s\\n' >%s/ext && openssl x509 -req -in %s/csr.pem -CA %s/ca.pem -CAkey %s/ca.key"
    .. " -CAcreateserial -days 1 -extfile %s/ext -out %s/cert.pem"):format(san, dir, dir, dir, dir, dir, dir))
  sh(("openssl req -x509 %s -days 1 -subj /CN=other-ca -keyout %s/other.key -out %s/other.pem"):format(ec, dir, dir))
  return { dir = dir, ca = dir .. "/ca.pem", cert = dir .. "/cert.pem", key = dir .. "/key.pem",
    other = dir .. "/other.pem", remove = function() os.execute("rm -rf " .. dir) end }
end

return _M
