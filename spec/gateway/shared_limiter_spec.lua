-- eidkit.gateway with limiter = eidkit.limiter.ledger(ledger), against a real
-- `eidkit sim`: two gateways (two nodes, each with its own flow, client and
-- ledger handle) share the buckets of one store, an SQLite file or a
-- redis-server. Their clock is frozen, so the limits are exact.
local testing = require "eidkit.testing"
local gateway = require "eidkit.gateway"
local limiter = require "eidkit.limiter"
local ledger_mod = require "eidkit.ledger"
local redis = require "support.redis"
local proc = require "support.proc"
local cjson = require "cjson"

local T = 1700000000

-- The subject is the X-User header.
local policy = { authorize = function(req) return req.headers["x-user"] or false, "no X-User header" end }

local tmp = proc.output("mktemp -d /tmp/eidkit-gw-limit-XXXXXX"):gsub("%s+$", "")
local srv = redis.available and redis.start() or nil
local serial = 0
teardown(function()
  if srv then srv:destroy() end
  proc.sh("rm -rf " .. proc.quote(tmp))
end)

-- A new store for each test, so no bucket carries over.
local stores = {
  sqlite = function()
    serial = serial + 1
    return ("sqlite:%s/limits-%d.db"):format(tmp, serial)
  end,
}
if srv then
  stores.redis = function()
    serial = serial + 1
    return srv:url(4, ("gw%d-%d:"):format(os.time(), serial))
  end
end

describe("eidkit.gateway with limiter.ledger", function()
  local sim
  local now = T -- every node's clock
  local handles, errors = {}, {}

  lazy_setup(function() sim = testing.sim { now = T, seed = 7 } end)
  lazy_teardown(function() if sim then sim:stop() end end)
  before_each(function()
    now = T
    errors = {}
  end)
  after_each(function()
    for _, l in ipairs(handles) do l:close() end
    handles = {}
  end)

  -- One node: a gateway on its own flow, its limiter on its own handle of url.
  local function node(url, opts)
    local l = assert(ledger_mod.open(url, { timeout_ms = 500 }))
    handles[#handles + 1] = l
    local o = { flow = sim:flow { policy = policy }, limiter = limiter.ledger(l),
      clock = function() return now end, on_error = function(m) errors[#errors + 1] = m end }
    for k, v in pairs(opts) do o[k] = v end
    return gateway(o)
  end

  local function token(gw, user)
    local resp = gw:handle { method = "POST", path = "/eid/token", headers = { ["X-User"] = user },
      body = "{}", remote_addr = "192.0.2.7" }
    local ok, body = pcall(cjson.decode, resp.body)
    return resp, ok and body or nil
  end

  local function assert_limited(resp, body, retry_after)
    assert.equals(429, resp.status, resp.body)
    assert.equals("rate_limited", body.error.code)
    assert.equals(retry_after, resp.headers["Retry-After"])
  end

  for name, new_store in pairs(stores) do
    describe("on " .. name, function()
      it("answers 429 with Retry-After on one node once the other emptied the upstream bucket", function()
        local url = new_store()
        local opts = { token_limit = false, upstream_limits = { GetEidToken = { rate = 2, burst = 1 } } }
        local a, b = node(url, opts), node(url, opts)
        assert.equals(200, token(a, "user-1").status)
        local resp, body = token(b, "user-2")
        assert_limited(resp, body, "1") -- 0.5 s, rounded up
        now = T + 0.5
        assert.equals(200, token(b, "user-2").status)
        resp, body = token(a, "user-1")
        assert_limited(resp, body, "1")
        assert.same({}, errors)
      end)

      it("counts a subject's tokens on every node", function()
        local url = new_store()
        local opts = { token_limit = { count = 2, per = 60 } }
        local a, b = node(url, opts), node(url, opts)
        assert.equals(200, token(a, "user-1").status)
        assert.equals(200, token(b, "user-1").status)
        local resp, body = token(a, "user-1")
        assert_limited(resp, body, "30")
        assert.equals(200, token(b, "user-2").status) -- another subject, another bucket
        now = T + 29
        resp, body = token(b, "user-1")
        assert_limited(resp, body, "1")
        now = T + 30
        assert.equals(200, token(b, "user-1").status)
        assert.same({}, errors)
      end)
    end)
  end

  it("answers 503 when the shared store does not answer", function()
    if not srv then pending("redis-server is not installed") return end
    local down = redis.start()
    local gw = node(down:url(0, "down:"), { token_limit = false })
    down:destroy()
    local resp, body = token(gw, "user-1")
    assert.equals(503, resp.status, resp.body)
    assert.equals("unavailable", body.error.code)
    assert.equals("the rate limiter is unavailable", body.error.message)
    assert.equals(1, #errors)
    assert.matches("^the rate limiter failed: unavailable: redis: ", errors[1])
  end)
end)
