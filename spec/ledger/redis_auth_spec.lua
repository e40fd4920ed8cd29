-- A Redis that wants a password (requirepass, and a Redis 6 ACL user): the
-- ledger logs in with the URL's USER:PASSWORD on every connection it makes,
-- its own reconnects included, and no refusal repeats the password.
local ledger_mod = require "eidkit.ledger"
local redis = require "support.redis"

local PW = "s3cret/pa:ss@word" -- '/', ':' and '@': the URL percent-encodes them
local ACL_PW = "acl-pw-9f2e"

local function url_of(srv, userinfo, db)
  return ("redis://%s@127.0.0.1:%d/%d"):format(userinfo, srv.port, db or 0)
end

local function issue(l, tok)
  return l:issue { EidToken = tok, MerchantId = "0NSJ2023", subject = "user-42" }
end

describe("the Redis ledger with a password", function()
  local srv
  setup(function()
    assert(redis.available, "redis-server is not installed: run scripts/setup-deps")
    srv = redis.start { requirepass = PW }
  end)
  teardown(function() if srv then srv:destroy() end end)

  it("logs in with the URL's password, percent-decoded", function()
    local l = assert(ledger_mod.open(srv:url(3)))
    assert(issue(l, "AUTH-1"))
    assert.equals("issued", l:get("AUTH-1").state)
    l:close()
    -- What redis-cli, logged in, sees: the record is in database 3.
    assert.matches("1", srv:cli("-n", "3", "EXISTS", "eidkit:{AUTH-1}"))
  end)

  it("logs in again after Redis restarts", function()
    local l = assert(ledger_mod.open(srv:url(4)))
    assert(issue(l, "AUTH-2"))
    srv:stop()
    assert(srv:launch(), "redis-server did not restart")
    -- The ledger's connection broke: it reconnects, logs in and goes on.
    assert(issue(l, "AUTH-3"))
    assert.equals("issued", l:get("AUTH-2").state)
    l:close()
  end)

  it("says a wrong password was refused, without repeating it", function()
    local l, err = ledger_mod.open(url_of(srv, ":wrong-hunter2"))
    assert.is_nil(l)
    assert.equals("unavailable", err.code)
    assert.matches("^redis: AUTH at 127%.0%.0%.1:%d+ failed: WRONGPASS", err.message)
    assert.is_nil(err.message:find("hunter2", 1, true))
    assert.is_nil(err.message:find(PW, 1, true))
  end)

  it("says a password is wanted when the URL has none", function()
    local l, err = ledger_mod.open(("redis://127.0.0.1:%d/0"):format(srv.port))
    assert.is_nil(l)
    assert.equals("unavailable", err.code)
    assert.equals("redis: SELECT 0 failed: NOAUTH Authentication required. "
      .. "(give the password in the URL: redis://:PASSWORD@HOST:PORT/DB)", err.message)
  end)

  it("logs in as an ACL user (redis://USER:PASSWORD@...)", function()
    assert.matches("OK", srv:cli("ACL", "SETUSER", "eidkit", "on", ">" .. ACL_PW, "~*", "&*", "+@all"))
    local l = assert(ledger_mod.open(url_of(srv, "eidkit:" .. ACL_PW, 5)))
    assert(issue(l, "AUTH-4"))
    l:close()
    local bad, err = ledger_mod.open(url_of(srv, "nobody:" .. ACL_PW, 5))
    assert.is_nil(bad)
    assert.matches("WRONGPASS", err.message)
    assert.is_nil(err.message:find(ACL_PW, 1, true))
  end)

  it("refuses a URL it cannot read without repeating the secret", function()
    local ok, err = pcall(ledger_mod.open, url_of(srv, "hunter2"))
    assert.is_false(ok)
    assert.matches("url: redis URL names a user without a password", err)
    assert.is_nil(tostring(err):find("hunter2", 1, true))
    ok, err = pcall(ledger_mod.open, url_of(srv, ":hunter2%zz"))
    assert.is_false(ok)
    assert.matches("url: redis password: bad percent%-encoding", err)
    assert.is_nil(tostring(err):find("hunter2", 1, true))
  end)
end)
