-- eidkit.realip: the client's address when eidkit serve sits behind a load
-- balancer or proxy (--real-ip-from), read as nginx's realip module reads
-- it with `real_ip_header X-Forwarded-For; real_ip_recursive on;`: only
-- when the connection comes from a trusted address, X-Forwarded-For is
-- walked from the right, past every trusted hop, and the first address that
-- is not trusted is the client. Everything left of it was written by the
-- client or by proxies nobody vouches for, so it is never taken. A list
-- holding anything that is not an address keeps the connection's address.
-- (nginx hosts use nginx's own realip module: docs/OPENRESTY.md.)
--
--   local realip = require "eidkit.realip"
--   local trusted = assert(realip.new "10.0.0.0/8,192.168.1.7,fd00::/8")
--   trusted:client("10.1.2.3:51000", "203.0.113.7, 10.0.0.9")  --> "203.0.113.7"
--   trusted:client("198.51.100.1:51000", "203.0.113.7")        --> nil (not a trusted peer)
local core = require "eidkit.core"

local type, tonumber, ipairs, setmetatable = type, tonumber, ipairs, setmetatable
local format, byte, sub, match, gmatch = string.format, string.byte, string.sub, string.match, string.gmatch

local _M = {}

local Trusted = {}
Trusted.__index = Trusted

-- "ADDR" or "ADDR/BITS" -> { bytes =, bits = } | nil
local function network(text)
  local addr, bits = match(text, "^([^/]+)/(%d+)$")
  addr = addr or text
  local b = core.ip_address(addr)
  if not b then return nil end
  bits = bits and tonumber(bits) or #b * 8
  if bits > #b * 8 then return nil end
  return { bytes = b, bits = bits }
end

local function contains(net, b)
  if #b ~= #net.bytes then return false end
  local whole = net.bits // 8
  if sub(b, 1, whole) ~= sub(net.bytes, 1, whole) then return false end
  local rest = net.bits % 8
  if rest == 0 then return true end
  local mask = (0xff << (8 - rest)) & 0xff
  return (byte(b, whole + 1) & mask) == (byte(net.bytes, whole + 1) & mask)
end

-- realip.new(list) -> trusted | nil, problem. list: "a,b" (commas, spaces
-- allowed) or a table of strings; each an IPv4 or IPv6 address or CIDR.
function _M.new(list)
  local items = {}
  if type(list) == "string" then
    for item in gmatch(list, "[^,%s]+") do items[#items + 1] = item end
  elseif type(list) == "table" then
    for i, item in ipairs(list) do
      if type(item) ~= "string" then return nil, format("item %d: expected a string", i) end
      items[#items + 1] = item
    end
  else
    return nil, "expected addresses or CIDRs"
  end
  if #items == 0 then return nil, "expected at least one address or CIDR" end
  local nets = {}
  for i, item in ipairs(items) do
    nets[i] = network(item)
    if not nets[i] then
      return nil, format("'%s' is not an address or CIDR (e.g. 10.0.0.0/8, 192.168.1.7, fd00::/8)", sub(item, 1, 64))
    end
  end
  return setmetatable({ nets = nets }, Trusted)
end

function Trusted:trusts(bytes)
  for _, net in ipairs(self.nets) do
    if contains(net, bytes) then return true end
  end
  return false
end

-- One X-Forwarded-For element: "ADDR", "[V6]", "[V6]:PORT" or "V4:PORT"
-- (some balancers add the port) -> the address text and bytes | nil.
local function element(text)
  local a = match(text, "^%[([^%]]+)%]") or match(text, "^([%d.]+):%d+$") or text
  local b = core.ip_address(a)
  if b then return a, b end
end

-- trusted:client(remote, xff) -> the client's address, or nil when the
-- connection's own address (remote: "ADDR:PORT" or "[V6]:PORT") stands.
function Trusted:client(remote, xff)
  if type(remote) ~= "string" or type(xff) ~= "string" then return nil end
  local peer = core.ip_address(match(remote, "^%[(.*)%]:%d+$") or match(remote, "^(.*):%d+$") or remote)
  if not peer or not self:trusts(peer) then return nil end
  local hops = {}
  for item in gmatch(xff, "[^,]+") do hops[#hops + 1] = match(item, "^%s*(.-)%s*$") end
  local client
  for i = #hops, 1, -1 do
    local text, b = element(hops[i])
    if not text then return nil end -- a list we cannot read vouches for nothing
    client = text
    if not self:trusts(b) then return client end
  end
  return client -- every hop trusted: the first one is the client
end

return _M
