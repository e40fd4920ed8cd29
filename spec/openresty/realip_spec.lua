-- The client's address behind trusted proxies, from both hosts on one table
-- of X-Forwarded-For headers: `eidkit serve --real-ip-from` (eidkit.realip,
-- which claims nginx's rule) and nginx's own realip module, as
-- `examples/openresty/run --real-ip-from` configures it (set_real_ip_from,
-- real_ip_header X-Forwarded-For, real_ip_recursive on). Each request is a
-- GET /healthz from the spec's curl (127.0.0.1, a trusted proxy here); the
-- address each host's gateway was given is read from its access log. Real
-- nginx, real `eidkit serve`.
local cjson = require "cjson"
local sp = require "support.serveproc"
local orrun = require "support.orrun"
local client = require "fixtures.httpd_client"
local proc = require "support.proc"
local scratch = require "support.scratch"

local TRUSTED = "127.0.0.1, 10.0.0.0/8, 2001:db8:ffff::/48"
local SELF = "127.0.0.1" -- the connection's own address: nothing taken from the header

-- { X-Forwarded-For header values (one request), the client both must name }
local CASES = {
  { { "203.0.113.7" }, "203.0.113.7" },
  -- the leftmost hop is the client's own word: never taken past an untrusted one
  { { "198.51.100.66, 203.0.113.7, 10.0.0.9" }, "203.0.113.7" },
  -- every hop trusted: the first
  { { "10.9.9.9, 10.0.0.9" }, "10.9.9.9" },
  -- a space separates as a comma does; a tab does not
  { { "203.0.113.7 10.0.0.9" }, "203.0.113.7" },
  { { "203.0.113.7,\t10.0.0.9" }, SELF },
  { { "203.0.113.7, , 10.0.0.9" }, "203.0.113.7" },
  -- an element that cannot be read stops the walk; the last one read stands
  { { "203.0.113.7, x" }, SELF },
  { { "x, 10.0.0.9" }, "10.0.0.9" },
  { { "x, 203.0.113.7, 10.0.0.9" }, "203.0.113.7" },
  -- a leading comma sticks to the first element
  { { ",203.0.113.7" }, SELF },
  { { ",203.0.113.7, 10.0.0.9" }, "10.0.0.9" },
  -- ports, brackets, canonical IPv6
  { { "203.0.113.7:4431" }, "203.0.113.7" },
  { { "203.0.113.7:65536" }, SELF },
  { { "[2001:db8::5]:4431" }, "2001:db8::5" },
  { { "[2001:db8::5]" }, SELF },
  { { "2001:DB8:0:0::5" }, "2001:db8::5" },
  { { "2001:db8::5, 2001:db8:ffff::1" }, "2001:db8::5" },
  { { "::ffff:203.0.113.7" }, "::ffff:203.0.113.7" },
  -- IPv4 as nginx reads it (ngx_inet_addr): leading zeros and empty parts
  { { "203.0.113.07" }, "203.0.113.7" },
  { { "203..113.7" }, "203.0.113.7" },
  { { "203.0.113.256" }, SELF },
  { { "203.0.113" }, SELF },
  -- two headers: read as one list, the later header's hops nearer
  { { "203.0.113.7", "10.0.0.9" }, "203.0.113.7" },
  { { "198.51.100.66", "203.0.113.7, 10.0.0.9" }, "203.0.113.7" },
}

-- The addresses the gateway's access log lines name, in order; the
-- connection's own "ADDR:PORT" (eidkit serve) without its port.
local function addrs_of(lines)
  local out = {}
  for json in lines do
    local a = cjson.decode(json).remote_addr
    out[#out + 1] = a:match("^(%d+%.%d+%.%d+%.%d+):%d+$") or a:match("^%[(.*)%]:%d+$") or a
  end
  return out
end

-- Each case through host (its URL, and a function returning its log's
-- addresses so far): what the gateway was given.
local function run_cases(url, logged)
  local got = {}
  for i, c in ipairs(CASES) do
    local before = #logged()
    local args = { "--max-time", "10" }
    for _, v in ipairs(c[1]) do
      args[#args + 1] = "-H"
      args[#args + 1] = "X-Forwarded-For: " .. v
    end
    args[#args + 1] = url .. "/healthz"
    assert.equals(200, client.run(args).status, "case " .. i)
    sp.wait_for(function() return #logged() > before end, 10, "the access log line of case " .. i)
    got[i] = logged()[before + 1]
  end
  return got
end

describe("X-Forwarded-For through trusted proxies", function()
  it("names the same client in eidkit serve --real-ip-from as in nginx's realip module", function()
    local db, log = scratch.file(), scratch.file() .. ".log"
    local serve = sp.start { "--sim", "--ledger", "sqlite:" .. db .. ".db", "--sweep-interval", "0",
      "--access-log", log, "--real-ip-from", TRUSTED }
    local ok, from_serve = pcall(run_cases, serve.url, function()
      return addrs_of((proc.read(log) or ""):gmatch("[^\n]+"))
    end)
    sp.stop(serve)
    for _, ext in ipairs { "", ".db", ".db-wal", ".db-shm" } do os.remove(db .. ext) end
    os.remove(log)
    assert(ok, from_serve)

    local s = orrun.start { "--sweep-interval", "0", "--access-log", "--real-ip-from", TRUSTED }
    local nok, from_nginx = pcall(run_cases, s.url, function()
      return addrs_of(orrun.error_log(s):gmatch("eidkit access (%b{})"))
    end)
    local nginx_log = orrun.error_log(s)
    orrun.stop(s)
    assert(nok, tostring(from_nginx) .. "\nerror.log:\n" .. nginx_log:sub(-2000))

    for i, c in ipairs(CASES) do
      local what = ("case %d, X-Forwarded-For %s"):format(i, table.concat(c[1], " | "))
      assert.equals(from_nginx[i], from_serve[i], what .. ": eidkit serve and nginx disagree")
      assert.equals(c[2], from_nginx[i], what)
    end
  end)
end)
