-- eidkit.openresty.resolve: a host name's IPv4 addresses, looked up once
-- while nginx starts (init_by_lua / init_worker_by_lua), the way nginx
-- itself resolves the names in `upstream { server name; }`. getaddrinfo
-- blocks, so it is refused in any phase that serves requests: a client made
-- there gives `peer` or an address endpoint instead. The addresses are kept
-- until nginx reloads.
--
-- This file owns its libc FFI declarations (getaddrinfo); libeidkit's are
-- eidkit.ffi's. LuaJIT in nginx only.
local ngx = ngx
local ffi = require "ffi"

local _M = {}

if not pcall(ffi.typeof, "struct eidkit_addrinfo") then
  -- glibc's struct addrinfo on Linux and its functions, under our own names
  -- (__asm__ binds the libc symbols), so no other declaration can clash.
  ffi.cdef [[
struct eidkit_addrinfo {
    int ai_flags;
    int ai_family;
    int ai_socktype;
    int ai_protocol;
    uint32_t ai_addrlen;
    struct eidkit_sockaddr_in *ai_addr;
    char *ai_canonname;
    struct eidkit_addrinfo *ai_next;
};
struct eidkit_sockaddr_in {
    uint16_t sin_family;
    uint16_t sin_port;
    uint8_t sin_addr[4];
    uint8_t sin_zero[8];
};
int eidkit_getaddrinfo(const char *node, const char *service, const struct eidkit_addrinfo *hints,
                struct eidkit_addrinfo **res) __asm__("getaddrinfo");
void eidkit_freeaddrinfo(struct eidkit_addrinfo *res) __asm__("freeaddrinfo");
const char *eidkit_gai_strerror(int errcode) __asm__("gai_strerror");
]]
end

local AF_INET, SOCK_STREAM = 2, 1
local STARTUP = { init = true, init_worker = true }

-- ipv4(host) -> { "a.b.c.d", ... } | nil, why. Raises outside start-up.
function _M.ipv4(host)
  local phase = ngx.get_phase()
  if not STARTUP[phase] then
    error("resolving '" .. host .. "' would block this worker (phase " .. phase .. "): make the client in"
      .. " init_by_lua* or init_worker_by_lua*, or give peer = \"IP\"", 0)
  end
  local hints = ffi.new("struct eidkit_addrinfo")
  hints.ai_family, hints.ai_socktype = AF_INET, SOCK_STREAM
  local out = ffi.new("struct eidkit_addrinfo *[1]")
  local rc = ffi.C.eidkit_getaddrinfo(host, nil, hints, out)
  if rc ~= 0 then return nil, ffi.string(ffi.C.eidkit_gai_strerror(rc)) end
  local list, seen = {}, {}
  local ai = out[0]
  while ai ~= nil do
    if ai.ai_family == AF_INET then
      local a = ai.ai_addr.sin_addr
      local ip = a[0] .. "." .. a[1] .. "." .. a[2] .. "." .. a[3]
      if not seen[ip] then list[#list + 1], seen[ip] = ip, true end
    end
    ai = ai.ai_next
  end
  ffi.C.eidkit_freeaddrinfo(out[0])
  if #list == 0 then return nil, "no IPv4 address" end
  return list
end

return _M
