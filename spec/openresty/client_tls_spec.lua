-- eidkit.openresty.client over HTTPS inside a real nginx: `eidkit sim` with a
-- certificate for "localhost" from a test CA; nginx verifies it
-- (proxy_ssl_verify, the server's proxy_ssl_trusted_certificate) against the
-- endpoint's name sent as SNI, while connecting to the `peer` address. A
-- server trusting another CA gets no answer, and nothing was sent.
local cjson = require "cjson"
local nginx = require "support.nginx"
local proc = require "support.proc"
local simproc = require "support.simproc"
local testca = require "support.testca"

local SECRET_ID = "AKIDopenrestyTls00000000000000000000"
local SECRET_KEY = "openrestyTlsSecretKey0123456789ab"
local MERCHANT = "0NSJ000000000000000000ORTLS0"


local SERVER = [[
    proxy_ssl_trusted_certificate %s;
    include %s/nginx/eidkit_location.conf;
    location = /t/token {
      content_by_lua_block {
        local c = require("eidkit.openresty.client").new {
          endpoint = "https://localhost:%d", peer = "127.0.0.1", secret_id = "%s", secret_key = "%s",
          retry = { base = 0.01 } }
        local res, err = c:get_eid_token { MerchantId = "%s" }
        ngx.say(require("cjson").encode(res and { token = res.EidToken }
          or { code = err.code, attempts = err.attempts, sent = err.sent }))
      }
    }
]]

describe("eidkit.openresty.client over TLS", function()
  local ca, s, good, wrong
  lazy_setup(function()
    ca = testca.make { san = "DNS:localhost" }
    s = simproc.start { "--tls-cert", ca.cert, "--tls-key", ca.key,
      "--credential", SECRET_ID .. ":" .. SECRET_KEY, "--merchant", MERCHANT }
    local http = ("  include %s/nginx/eidkit.conf;"):format(nginx.root)
    good = nginx.start { http = http,
      server = SERVER:format(ca.ca, nginx.root, s.port, SECRET_ID, SECRET_KEY, MERCHANT) }
    wrong = nginx.start { http = http,
      server = SERVER:format(ca.other, nginx.root, s.port, SECRET_ID, SECRET_KEY, MERCHANT) }
  end)
  lazy_teardown(function()
    if good then good:stop() end
    if wrong then wrong:stop() end
    if s then simproc.stop(s) end
    if ca then ca.remove() end
  end)

  local function token(srv)
    local r = proc.run { "curl", "-s", "--max-time", "20", srv.url .. "/t/token" }
    local ok, out = pcall(cjson.decode, r.stdout)
    assert(ok, "nginx answered: " .. r.stdout .. "\n" .. srv:error_log():sub(-2000))
    return out
  end

  it("calls the API with the test CA, the endpoint's name verified and sent as SNI", function()
    assert.matches("^https://", s.url)
    local out = token(good)
    assert.is_string(out.token)
  end)

  it("gets no answer from a server its CA does not vouch for: nothing sent, error.log says why", function()
    local out = token(wrong)
    -- nginx reports a failed certificate check like a refused connection
    -- (docs/internals/openresty.md): never sent, so retried, and final.
    assert.same({ code = "connect", attempts = 4, sent = false }, out)
    assert.truthy(wrong:error_log():find("certificate verify", 1, true))
  end)
end)
