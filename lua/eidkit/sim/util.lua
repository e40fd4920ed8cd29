-- Small pieces shared by the simulator's modules: a seedable PRNG, UUIDs,
-- UTF-8 length, the JSON envelope helpers.
local cjson = require "cjson.safe"

local format, byte = string.format, string.byte
local floor = math.floor

local _M = {}

-- splitmix64: each simulator (and each fault rule) owns a stream, so one
-- --seed reproduces a run without touching math.random's global state,
-- which merchant code running in the same Lua state may use.
function _M.rng(seed)
  local s = seed
  local function next64()
    s = s + 0x9E3779B97F4A7C15
    local z = s
    z = (z ~ (z >> 30)) * 0xBF58476D1CE4E5B9
    z = (z ~ (z >> 27)) * 0x94D049BB133111EB
    return z ~ (z >> 31)
  end
  return {
    u64 = next64,
    float = function() return (next64() >> 11) * (1.0 / 9007199254740992) end,
  }
end

-- A seed from OpenSSL's generator when the user gave none.
function _M.random_seed(core)
  local b = core.random_bytes(8)
  local v = 0
  for i = 1, 8 do v = (v << 8) | byte(b, i) end
  return v
end

-- String hash for deriving per-rule seeds (FNV-1a, 64-bit).
function _M.hash(s)
  local h = 0xcbf29ce484222325
  for i = 1, #s do h = (h ~ byte(s, i)) * 0x100000001b3 end
  return h
end

-- A version-4 UUID from rng: 122 random bits, the version nibble 4 and the
-- variant bits 10. One format call: this runs once per response.
function _M.uuid(rng)
  local a, b = rng.u64(), rng.u64()
  return format("%08x-%04x-4%03x-%x%03x-%012x", (a >> 32) & 0xffffffff, (a >> 16) & 0xffff,
    a & 0xfff, 8 | ((b >> 62) & 3), (b >> 48) & 0xfff, b & 0xffffffffffff)
end

-- Number of UTF-8 characters, or nil when s is not valid UTF-8.
function _M.utf8_len(s)
  return utf8.len(s)
end

function _M.is_integer(v)
  return math.type(v) == "integer" or (type(v) == "number" and v == floor(v) and v == v
    and v > -2^53 and v < 2^53)
end

_M.json_encode = cjson.encode
_M.json_decode = cjson.decode
_M.null = cjson.null

return _M
