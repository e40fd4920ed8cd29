-- eidkit.realip: which address X-Forwarded-For names as the client, and only
-- through a trusted proxy (nginx's realip with real_ip_recursive on).
local realip = require "eidkit.realip"

describe("eidkit.realip", function()
  local t = assert(realip.new "10.0.0.0/8, 192.168.1.7,fd00::/8")

  it("takes the last untrusted hop, past every trusted one", function()
    local cases = {
      -- remote, X-Forwarded-For, client (nil: the connection's address stands)
      { "10.1.2.3:5100", "203.0.113.7", "203.0.113.7" },
      { "10.1.2.3:5100", "203.0.113.7, 10.0.0.9", "203.0.113.7" },
      -- what the client wrote itself (the leftmost) is never taken
      { "10.1.2.3:5100", "198.51.100.66,203.0.113.7,10.0.0.9", "203.0.113.7" },
      { "10.1.2.3:5100", "  203.0.113.7 ,  192.168.1.7 ", "203.0.113.7" },
      -- spaces separate as commas do; a tab does not (nginx's reading)
      { "10.1.2.3:5100", "203.0.113.7 10.0.0.9", "203.0.113.7" },
      { "10.1.2.3:5100", "203.0.113.7,\t192.168.1.7", nil },
      -- every hop trusted: the first one
      { "10.1.2.3:5100", "10.9.9.9, 10.0.0.9", "10.9.9.9" },
      -- not from a trusted proxy: the header is the client's own
      { "198.51.100.1:5100", "203.0.113.7", nil },
      { "192.168.1.8:5100", "203.0.113.7", nil },
      -- an element that cannot be read stops the walk: the last one read stands
      { "10.1.2.3:5100", "203.0.113.7, not-an-ip", nil },
      { "10.1.2.3:5100", "not-an-ip, 10.0.0.9", "10.0.0.9" },
      { "10.1.2.3:5100", "not-an-ip, 203.0.113.7, 10.0.0.9", "203.0.113.7" },
      -- a leading comma sticks to the first element, as nginx scans
      { "10.1.2.3:5100", ",203.0.113.7", nil },
      { "10.1.2.3:5100", ",203.0.113.7, 10.0.0.9", "10.0.0.9" },
      { "10.1.2.3:5100", "", nil },
      { "10.1.2.3:5100", nil, nil },
      -- ports and brackets some balancers write
      { "10.1.2.3:5100", "203.0.113.7:4431", "203.0.113.7" },
      { "10.1.2.3:5100", "[2001:db8::5]:4431", "2001:db8::5" },
      { "10.1.2.3:5100", "203.0.113.7:65536", nil },
      { "10.1.2.3:5100", "[2001:db8::5]", nil }, -- brackets only with a port
      -- named in canonical form, as nginx's $remote_addr
      { "10.1.2.3:5100", "2001:DB8:0:0::5", "2001:db8::5" },
      -- IPv4 as nginx reads it: leading zeros and empty parts, never past 255
      { "10.1.2.3:5100", "203.0.113.07", "203.0.113.7" },
      { "10.1.2.3:5100", "203..113.7:80", "203.0.113.7" },
      { "10.1.2.3:5100", "203.0.113.256", nil },
      { "10.1.2.3:5100", "203.0.113", nil },
      { "[fd00::1]:5100", "2001:db8::5, fd12::3", "2001:db8::5" },
      { "[fe80::1]:5100", "2001:db8::5", nil },
    }
    for _, c in ipairs(cases) do
      assert.equals(c[3], t:client(c[1], c[2]), tostring(c[1]) .. " / " .. tostring(c[2]))
    end
  end)

  it("matches prefixes to the bit", function()
    local n = assert(realip.new { "172.16.0.0/12", "2001:db8:8000::/33", "0.0.0.0/0" })
    local v6 = assert(realip.new "2001:db8:8000::/33")
    assert.equals("2001:db8::1", v6:client("[2001:db8:8000::1]:1", "2001:db8::1"))
    assert.is_nil(v6:client("[2001:db8:7fff::1]:1", "2001:db8::1"))
    local v4 = assert(realip.new "172.16.0.0/12")
    assert.equals("1.2.3.4", v4:client("172.31.255.255:1", "1.2.3.4"))
    assert.is_nil(v4:client("172.32.0.0:1", "1.2.3.4"))
    assert.is_nil(v4:client("172.15.255.255:1", "1.2.3.4"))
    -- /0 trusts every IPv4 address, no IPv6 one
    assert.equals("10.9.9.9", n:client("8.8.8.8:1", "10.9.9.9, 8.8.4.4"))
    assert.is_nil(n:client("[::1]:1", "10.9.9.9"))
  end)

  it("refuses what is not an address or CIDR, naming it", function()
    for _, bad in ipairs { "10.0.0.0/33", "::/129", "example.com", "10.0.0.1/", "" } do
      local v, err = realip.new(bad)
      assert.is_nil(v)
      assert.matches(bad == "" and "expected at least one" or "is not an address or CIDR", err)
    end
    assert.same({ nil, "item 2: expected a string" }, { realip.new { "10.0.0.1", 7 } })
    assert.same({ nil, "expected addresses or CIDRs" }, { realip.new(7) })
  end)
end)
