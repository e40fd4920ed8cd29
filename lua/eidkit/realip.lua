-- eidkit.realip: the client's address when eidkit serve sits behind a load
-- balancer or proxy (--real-ip-from), read as nginx's realip module reads
-- it with `real_ip_header X-Forwarded-For; real_ip_recursive on;`: only
-- when the connection comes from a trusted address, X-Forwarded-For is
-- walked from the right, past every trusted hop, and the first address that
-- is not trusted is the client. Everything left of it was written by the
-- client or by proxies nobody vouches for, so it is never taken. An
-- element that is not an address stops the walk where it is. The client is
-- named in canonical form, as nginx's $remote_addr names it.
-- (nginx hosts use nginx's own realip module: docs/OPENRESTY.md; the spec
-- spec/openresty/realip_spec.lua runs both on the same table of headers.)
--
--   local realip = require "eidkit.realip"
--   local trusted = assert(realip.new "10.0.0.0/8,192.168.1.7,fd00::/8")
--   trusted:client("10.1.2.3:51000", "203.0.113.7, 10.0.0.9")  --> "203.0.113.7"
--   trusted:client("198.51.100.1:51000", "203.0.113.7")        --> nil (not a trusted peer)
local core = require "eidkit.core"

local type, tonumber, ipairs, setmetatable = type, tonumber, ipairs, setmetatable
local format, byte, char, sub, match, gmatch = string.format, string.byte, string.char, string.sub, string.match,
  string.gmatch
local concat = table.concat

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
  -- items: the list as read, for a host that hands it on (run's nginx config)
  return setmetatable({ nets = nets, items = items }, Trusted)
end

function Trusted:trusts(bytes)
  for _, net in ipairs(self.nets) do
    if contains(net, bytes) then return true end
  end
  return false
end

-- An address as nginx's ngx_parse_addr reads it: IPv4 as ngx_inet_addr
-- does (three dots, each part a decimal number up to 255, leading zeros
-- and empty parts allowed: "203.0.113.07" is 203.0.113.7, which inet_pton
-- refuses), else IPv6 (inet_pton) -> bytes, canonical text | nil.
local function address(text)
  if match(text, "^[%d.]*$") then
    local parts = {}
    for part in gmatch(text .. ".", "(%d*)%.") do
      local n = tonumber(part) or 0
      if n > 255 then return nil end
      parts[#parts + 1] = n
    end
    if #parts ~= 4 then return nil end
    return char(parts[1], parts[2], parts[3], parts[4]), concat(parts, ".")
  end
  return core.ip_address(text)
end

-- One X-Forwarded-For element as nginx's ngx_parse_addr_port reads it:
-- "ADDR" (IPv4 or IPv6), "V4:PORT" or "[V6]:PORT", the port 0..65535 (a
-- bare "[V6]" is not one) -> the address's bytes and canonical text | nil.
local function element(text)
  local b, canon = address(text)
  if b then return b, canon end
  local a, port = match(text, "^%[([^%]]*)%]:(%d+)$")
  if not a then a, port = match(text, "^([^:]*):(%d+)$") end
  if not a or tonumber(port) > 65535 then return nil end
  return address(a)
end

local function separator(c) return c == 32 or c == 44 end -- ' ' or ','

-- trusted:client(remote, xff) -> the client's address (canonical text), or
-- nil when the connection's own address (remote: "ADDR:PORT" or
-- "[V6]:PORT") stands. nginx's ngx_http_get_forwarded_addr_internal with
-- recursion, step for step: elements are read from the right, split at
-- spaces and commas; each one read becomes the candidate, and the walk goes
-- on only while the candidate is trusted. An element that cannot be read
-- ends the walk: the last one read stands, or the connection's address when
-- none was.
function Trusted:client(remote, xff)
  if type(remote) ~= "string" or type(xff) ~= "string" then return nil end
  local peer = core.ip_address(match(remote, "^%[(.*)%]:%d+$") or match(remote, "^(.*):%d+$") or remote)
  if not peer or not self:trusts(peer) then return nil end
  local found
  local last = #xff
  while true do
    while last > 0 and separator(byte(xff, last)) do last = last - 1 end
    if last == 0 then return found end
    -- As nginx scans, the first byte is never taken for a separator: a
    -- leading comma stays on the first element (which then cannot be read).
    local q = last
    while q >= 2 and not separator(byte(xff, q)) do q = q - 1 end
    local first = q >= 2 and q + 1 or 1
    local b, canon = element(sub(xff, first, last))
    if not b then return found end
    found = canon
    if first == 1 or not self:trusts(b) then return found end
    last = first - 2
  end
end

return _M
