-- eidkit's side of bench/crypto/run: decrypt_eidinfo and the extra work an
-- encrypted GetEidToken does (a session key wrapped to Tencent's public key
-- plus Name/IdCard encrypted), on the inputs in $BENCH_INPUT (made by run),
-- timed as REPS runs of ~TARGET_MS each; prints "case<TAB>median_us".
local core = require "eidkit.core"
local crypto = require "eidkit.crypto"
local cjson = require "cjson"

local input = cjson.decode(assert(io.open(os.getenv("BENCH_INPUT"), "rb")):read("a"))
local reps = tonumber(os.getenv("REPS") or "11")
local target = tonumber(os.getenv("TARGET_MS") or "100") / 1000
local F = input.fixtures

local function median(t)
  table.sort(t)
  return t[(#t + 1) // 2]
end

-- Microseconds per call of f: calibrate n to ~target, then reps runs of n.
local function time(f)
  local n, t0 = 1
  repeat
    n = n * 2
    t0 = core.monotonic()
    for _ = 1, n do f() end
  until core.monotonic() - t0 > target / 4 or n > 1e7
  n = math.max(1, math.floor(n * target / math.max(core.monotonic() - t0, 1e-6)))
  local runs = {}
  for i = 1, reps do
    local s = core.monotonic()
    for _ = 1, n do f() end
    runs[i] = (core.monotonic() - s) / n * 1e6
  end
  return median(runs)
end

local priv = assert(crypto.load_key(F .. "sm2_pkcs8.pem"))
local info = input.eidinfo
local want = input.identity

-- Check before timing.
local id = assert(crypto.decrypt_eidinfo(info, priv))
assert(id.name == want.name and id.idnum == want.idnum, "eidkit decrypted something else")

local out = {}
out[#out + 1] = { "decrypt_eidinfo (loaded key)", time(function() crypto.decrypt_eidinfo(info, priv) end) }
out[#out + 1] = { "decrypt_eidinfo (PEM path each call)",
  time(function() crypto.decrypt_eidinfo(info, F .. "sm2_pkcs8.pem") end) }

local params = { MerchantId = "0NSJ000000000000000000EIDKIT", Name = want.name, IdCard = want.idnum }
local fields = { "Name", "IdCard" }
for _, c in ipairs { { "SM4-GCM", F .. "sm2_pub.pem" }, { "AES-256-CBC", F .. "rsa1024_pub.pem" } } do
  local pub = assert(crypto.load_key(c[2]))
  local s = assert(crypto.session { algorithm = c[1], public_key = pub })
  local p = crypto.encrypt_fields(s, params, fields)
  assert(p.Name ~= want.name and p.Encryption.CiphertextBlob)
  out[#out + 1] = { "GetEidToken extra, " .. c[1] .. ", fresh key (key_ttl 0)", time(function()
    crypto.encrypt_fields(crypto.session { algorithm = c[1], public_key = pub }, params, fields)
  end) }
  out[#out + 1] = { "GetEidToken extra, " .. c[1] .. ", cached key (key_ttl > 0)", time(function()
    crypto.encrypt_fields(s, params, fields)
  end) }
end
for _, o in ipairs(out) do io.write(o[1], "\t", string.format("%.2f", o[2]), "\n") end
