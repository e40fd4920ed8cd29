-- Interoperability of eidkit's identity crypto with code nobody here wrote:
-- npm sm-crypto and gm-crypto (SM2 C1C3C2, SM4-ECB) and Node's crypto
-- (AES-256-CBC, RSA PKCS#1 v1.5), pinned in node/ and driven by
-- spec/crypto/peer.js; OpenSSL's command line (pkeyutl) for the SM2 DER
-- form. Both directions, random inputs including empty and multi-block
-- UTF-8 values.
local scratch = require "support.scratch"
local core = require "eidkit.core"
local crypto = require "eidkit.crypto"
local cjson = require "cjson"

local fixtures = "spec/fixtures/crypto/"

local function tohex(s) return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end)) end
local function fromhex(h) return (h:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end)) end

local function tmpfile(content)
  local path = scratch.file()
  local f = assert(io.open(path, "wb"))
  f:write(content)
  f:close()
  return path
end

-- Run jobs through peer.js; returns the list of results ({ok=} or {error=}).
local function peer(jobs)
  local input = tmpfile(cjson.encode(jobs))
  -- The specs run from the repository root (ctest's WORKING_DIRECTORY).
  local cmd = string.format("NODE_PATH=node/node_modules node "
    .. "--security-revert=CVE-2023-46809 spec/crypto/peer.js < %q 2>/dev/null", input)
  local p = assert(io.popen(cmd))
  local out = p:read("a")
  p:close()
  os.remove(input)
  -- Node prints its security-revert warning on stdout, before the JSON.
  out = out:sub((out:find("\n[", 1, true) or 0) + 1)
  local ok, res = pcall(cjson.decode, out)
  assert(ok and type(res) == "table", "peer.js gave no JSON: " .. out:sub(1, 200))
  return res
end

-- Random UTF-8: ASCII, 2-, 3- (CJK) and 4-byte characters, 0..n of them.
local function random_utf8(n)
  local t = {}
  for i = 1, math.random(0, n) do
    local kind = math.random(4)
    if kind == 1 then t[i] = string.char(math.random(32, 126))
    elseif kind == 2 then t[i] = utf8.char(math.random(0x80, 0x7ff))
    elseif kind == 3 then t[i] = utf8.char(math.random(0x4e00, 0x9fa5))
    else t[i] = utf8.char(math.random(0x1f300, 0x1f5ff)) end
  end
  return table.concat(t)
end

-- Inputs for the symmetric ciphers: empty, one byte, exact blocks, and
-- random UTF-8 over several blocks.
local function samples()
  local s = { "", "x", string.rep("a", 16), "韦小宝", "11204416541220243X" }
  for _ = 1, 12 do s[#s + 1] = random_utf8(40) end
  return s
end

local keys

setup(function()
  math.randomseed(os.time())
  local r = peer { { op = "sm2_keys", file = fixtures .. "sm2_sec1.pem" } }
  keys = assert(r[1].ok, r[1].error)
end)

describe("SM2 against sm-crypto and gm-crypto", function()
  local priv = assert(crypto.load_key(fixtures .. "sm2_pkcs8.pem"))
  local pub = assert(crypto.load_key(fixtures .. "sm2_pub.pem"))

  it("derives the same key pair from the PEM as Node does", function()
    assert.equal(64, #keys.priv)
    assert.equal("04", keys.pub:sub(1, 2))
  end)

  it("eidkit encrypts, gm-crypto (04 prefix) and sm-crypto (raw) decrypt", function()
    local jobs, want = {}, {}
    for i = 1, 10 do
      local m = i <= 6 and core.random_bytes(16) or core.random_bytes(math.random(1, 200))
      -- gm-crypto 0.1.12 drops the leading zero nibble of what it decrypts
      -- (BigInteger.toString(16) unpadded) and then fails its own hash
      -- check: it cannot decrypt a plaintext whose first byte is below 0x10.
      if m:byte(1) < 0x10 then m = "\x10" .. m:sub(2) end
      want[#want + 1] = m
      jobs[#jobs + 1] = { op = "sm2_decrypt", lib = "gm-crypto", priv = keys.priv,
        data = tohex(assert(pub:encrypt(m, "c1c3c2"))) }
      want[#want + 1] = m
      jobs[#jobs + 1] = { op = "sm2_decrypt", lib = "sm-crypto", priv = keys.priv,
        data = tohex(assert(pub:encrypt(m, "c1c3c2_raw"))) }
    end
    local res = peer(jobs)
    for i, r in ipairs(res) do
      assert.is_nil(r.error)
      assert.equal(tohex(want[i]), r.ok)
    end
  end)

  it("gm-crypto and sm-crypto encrypt, eidkit decrypts and names the layout", function()
    local jobs, want = {}, {}
    for i = 1, 10 do
      local m = i <= 6 and core.random_bytes(16) or core.random_bytes(math.random(1, 200))
      for _, lib in ipairs { "gm-crypto", "sm-crypto" } do
        want[#want + 1] = { m, lib == "gm-crypto" and "c1c3c2" or "c1c3c2_raw" }
        jobs[#jobs + 1] = { op = "sm2_encrypt", lib = lib, pub = keys.pub, data = tohex(m) }
      end
    end
    for i, r in ipairs(peer(jobs)) do
      local plain, layout = priv:decrypt(fromhex(assert(r.ok, r.error)))
      assert.equal(tohex(want[i][1]), tohex(plain))
      assert.equal(want[i][2], layout)
    end
  end)

  it("a flipped byte in sm-crypto's ciphertext is a decrypt error, not plaintext", function()
    local r = peer { { op = "sm2_encrypt", lib = "sm-crypto", pub = keys.pub,
      data = tohex("0123456789abcdef") } }
    local ct = fromhex(r[1].ok)
    ct = ct:sub(1, -2) .. string.char(ct:byte(-1) ~ 1)
    local plain, err = priv:decrypt(ct)
    assert.is_nil(plain)
    assert.equal("decrypt", err.code)
  end)
end)

describe("SM2 DER against openssl pkeyutl", function()
  local priv = assert(crypto.load_key(fixtures .. "sm2_sec1.pem"))
  local pub = assert(crypto.load_key(fixtures .. "sm2_pub.pem"))

  it("eidkit's DER decrypts with openssl pkeyutl", function()
    local m = core.random_bytes(16)
    local ct = tmpfile(assert(pub:encrypt(m, "der")))
    local p = assert(io.popen(string.format("openssl pkeyutl -decrypt -inkey %q -in %q 2>&1",
      fixtures .. "sm2_pkcs8.pem", ct)))
    local out = p:read("a")
    p:close()
    os.remove(ct)
    assert.equal(tohex(m), tohex(out))
  end)

  it("openssl pkeyutl's ciphertext decrypts with eidkit (detected as DER)", function()
    local m = core.random_bytes(16)
    local plainfile = tmpfile(m)
    local p = assert(io.popen(string.format("openssl pkeyutl -encrypt -pubin -inkey %q -in %q",
      fixtures .. "sm2_pub.pem", plainfile)))
    local ct = p:read("a")
    p:close()
    os.remove(plainfile)
    local plain, layout = priv:decrypt(ct)
    assert.equal(tohex(m), tohex(plain))
    assert.equal("der", layout)
  end)
end)

describe("SM4-ECB against sm-crypto and gm-crypto", function()
  local function pkcs7(s) local n = 16 - #s % 16 return s .. string.rep(string.char(n), n) end

  it("both directions, without padding (sm-crypto) and with PKCS#7 (gm-crypto)", function()
    local jobs, want = {}, {}
    for _, s in ipairs(samples()) do
      local key = core.random_bytes(16)
      local padded = pkcs7(s)
      -- eidkit encrypts whole blocks; sm-crypto decrypts without padding.
      jobs[#jobs + 1] = { op = "sm4_ecb_decrypt", lib = "sm-crypto", key = tohex(key),
        data = tohex(core.sm4_ecb_encrypt(key, padded)) }
      want[#want + 1] = { "peer", padded }
      -- eidkit encrypts PKCS#7-padded; gm-crypto decrypts (and unpads).
      jobs[#jobs + 1] = { op = "sm4_ecb_decrypt", lib = "gm-crypto", key = tohex(key),
        data = tohex(core.sm4_ecb_encrypt(key, padded)) }
      want[#want + 1] = { "peer", s }
      -- gm-crypto encrypts with PKCS#7; eidkit decrypts the blocks.
      jobs[#jobs + 1] = { op = "sm4_ecb_encrypt", lib = "gm-crypto", key = tohex(key), data = tohex(s) }
      want[#want + 1] = { "eidkit", padded, key }
      jobs[#jobs + 1] = { op = "sm4_ecb_encrypt", lib = "sm-crypto", key = tohex(key),
        data = tohex(padded) }
      want[#want + 1] = { "eidkit", padded, key }
    end
    for i, r in ipairs(peer(jobs)) do
      local w = want[i]
      assert.is_nil(r.error)
      if w[1] == "peer" then
        assert.equal(tohex(w[2]), r.ok)
      else
        assert.equal(tohex(w[2]), tohex(core.sm4_ecb_decrypt(w[3], fromhex(r.ok))))
      end
    end
  end)
end)

describe("EidInfo made by the npm libraries", function()
  local name, idnum = "欧阳·韦小宝", "11204416541220243X"

  it("decrypt_eidinfo reads gm-crypto's (04, PKCS#7) and sm-crypto's (raw, zero fill)", function()
    local json = cjson.encode { name = name, idtype = "01", idnum = idnum }
    local zero_filled = json .. string.rep("\0", (16 - #json % 16) % 16)
    local session = core.random_bytes(16)
    local res = peer {
      { op = "sm2_encrypt", lib = "gm-crypto", pub = keys.pub, data = tohex(session) },
      { op = "sm4_ecb_encrypt", lib = "gm-crypto", key = tohex(session), data = tohex(json) },
      { op = "sm2_encrypt", lib = "sm-crypto", pub = keys.pub, data = tohex(session) },
      { op = "sm4_ecb_encrypt", lib = "sm-crypto", key = tohex(session), data = tohex(zero_filled) },
    }
    for i = 1, 3, 2 do
      local info = { DesKey = core.base64_encode(fromhex(res[i].ok)),
        UserInfo = core.base64_encode(fromhex(res[i + 1].ok)), EidCode = "code", EidSign = "sign" }
      local id = assert(crypto.decrypt_eidinfo(info, fixtures .. "sm2_gmssl.pem"))
      assert.same({ name = name, idtype = "01", idnum = idnum, EidCode = "code", EidSign = "sign" }, id)
    end
  end)

  it("sm-crypto reads what encrypt_eidinfo makes", function()
    local info = assert(crypto.encrypt_eidinfo({ name = name, idnum = idnum }, fixtures .. "sm2_pub.pem"))
    local res = peer { { op = "sm2_decrypt", lib = "sm-crypto", priv = keys.priv,
      data = tohex(core.base64_decode(info.DesKey)):sub(3) } }
    local session = fromhex(assert(res[1].ok, res[1].error))
    assert.equal(16, #session)
    res = peer { { op = "sm4_ecb_decrypt", lib = "sm-crypto", key = tohex(session),
      data = tohex(core.base64_decode(info.UserInfo)) } }
    local text = fromhex(res[1].ok):gsub("%z+$", "")
    assert.same({ name = name, idtype = "01", idnum = idnum }, cjson.decode(text))
  end)

  it("a wrong key fails with no identity in the error", function()
    local info = assert(crypto.encrypt_eidinfo({ name = name, idnum = idnum }, fixtures .. "sm2_pub.pem"))
    local id, err = crypto.decrypt_eidinfo(info, fixtures .. "sm2_other.pem")
    assert.is_nil(id)
    assert.equal("decrypt", err.code)
    local text = tostring(err) .. cjson.encode(err)
    assert.is_nil(text:find(name, 1, true))
    assert.is_nil(text:find(idnum, 1, true))
    assert.is_nil(text:find(keys.priv, 1, true))
  end)
end)

describe("AES-256-CBC and RSA PKCS#1 v1.5 against Node's crypto", function()
  it("AES-256-CBC with PKCS#7, both directions", function()
    local jobs, want = {}, {}
    for _, s in ipairs(samples()) do
      local key, iv = core.random_bytes(32), core.random_bytes(16)
      jobs[#jobs + 1] = { op = "aes_cbc_decrypt", key = tohex(key), iv = tohex(iv),
        data = tohex(core.aes_cbc_encrypt(key, iv, s)) }
      want[#want + 1] = { s }
      jobs[#jobs + 1] = { op = "aes_cbc_encrypt", key = tohex(key), iv = tohex(iv), data = tohex(s) }
      want[#want + 1] = { s, key, iv }
    end
    for i, r in ipairs(peer(jobs)) do
      local w = want[i]
      assert.is_nil(r.error)
      if #w == 1 then
        assert.equal(tohex(w[1]), r.ok)
      else
        assert.equal(w[1], core.aes_cbc_decrypt(w[2], w[3], fromhex(r.ok)))
      end
    end
  end)

  it("RSA: eidkit wraps a 32-byte key for Node, and unwraps Node's", function()
    local pub1 = assert(crypto.load_key(fixtures .. "rsa1024_pkcs1_pub.pem"))
    local pub2 = assert(crypto.load_key(fixtures .. "rsa2048.pem"))
    local priv1 = assert(crypto.load_key(fixtures .. "rsa1024_pkcs1.pem"))
    local jobs, want = {}, {}
    for _ = 1, 4 do
      local k = core.random_bytes(32)
      jobs[#jobs + 1] = { op = "rsa_decrypt", file = fixtures .. "rsa1024.pem",
        data = tohex(assert(pub1:encrypt(k))) }
      want[#want + 1] = k
      jobs[#jobs + 1] = { op = "rsa_decrypt", file = fixtures .. "rsa2048.pem",
        data = tohex(assert(pub2:encrypt(k))) }
      want[#want + 1] = k
      jobs[#jobs + 1] = { op = "rsa_encrypt", file = fixtures .. "rsa1024_pub.pem", data = tohex(k) }
      want[#want + 1] = k
    end
    for i, r in ipairs(peer(jobs)) do
      assert.is_nil(r.error)
      if jobs[i].op == "rsa_decrypt" then
        assert.equal(tohex(want[i]), r.ok)
      else
        assert.equal(tohex(want[i]), tohex(assert(priv1:decrypt(fromhex(r.ok)))))
      end
    end
  end)
end)
