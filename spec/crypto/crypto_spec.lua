-- eidkit.crypto's Lua API on its own: key loading, decrypt_eidinfo's
-- failures, field-encryption sessions both ways and decrypt_response, with
-- the error codes of the C core and no plaintext in any error.
local crypto = require "eidkit.crypto"
local core = require "eidkit.core"
local cjson = require "cjson"

local F = "spec/fixtures/crypto/"
local NAME, IDCARD = "欧阳·韦小宝", "11204416541220243X"

local function no_secret(err, ...)
  local text = tostring(err) .. cjson.encode(err)
  for _, s in ipairs { ... } do assert.is_nil(text:find(s, 1, true), "error shows " .. s) end
end

describe("eidkit.crypto.load_key", function()
  it("takes a path, PEM text or a Key; failures are nil, err; misuse raises", function()
    local k = assert(crypto.load_key(F .. "sm2_sec1.pem"))
    assert.equal(k, crypto.load_key(k))
    local pem = assert(io.open(F .. "sm2_pub.pem")):read("a")
    assert.equal(k:public_pem(), assert(crypto.load_key(pem)):public_pem())
    assert.same({ nil, "key" }, { (function(a, b) return a, b and b.code end)(crypto.load_key(F .. "p256.pem")) })
    assert.same({ nil, "key" }, { (function(a, b) return a, b and b.code end)(crypto.load_key("-----BEGIN nonsense")) })
    assert.has_error(function() crypto.load_key(5) end,
      "bad argument #1 to 'load_key' (expected an eidkit.Key, PEM text or a file path)")
    k:close()
    assert.has_error(function() k:type() end, "attempt to use a closed eidkit.Key")
  end)
end)

describe("eidkit.crypto.decrypt_eidinfo", function()
  local info = assert(crypto.encrypt_eidinfo({ name = NAME, idnum = IDCARD }, F .. "sm2_pub.pem"))

  it("names the failure: no EidInfo, public key, bad base64, truncated, wrong key", function()
    local cases = {
      { {}, F .. "sm2_sec1.pem", "format" },
      { info, F .. "sm2_pub.pem", "key" },
      { info, F .. "rsa1024.pem", "key" },
      { { DesKey = "%%%%", UserInfo = info.UserInfo }, F .. "sm2_sec1.pem", "format" },
      { { DesKey = info.DesKey, UserInfo = info.UserInfo:sub(1, -5) }, F .. "sm2_sec1.pem", "format" },
      { info, F .. "sm2_other.pem", "decrypt" },
    }
    for i, c in ipairs(cases) do
      local id, err = crypto.decrypt_eidinfo(c[1], c[2])
      assert.is_nil(id, "case " .. i)
      assert.equal(c[3], err.code, "case " .. i)
      no_secret(err, NAME, IDCARD)
    end
  end)

  it("raises on misuse", function()
    assert.has_error(function() crypto.decrypt_eidinfo("x", F .. "sm2_sec1.pem") end,
      "bad argument #1 to 'decrypt_eidinfo' (expected the EidInfo table)")
    assert.has_error(function() crypto.decrypt_eidinfo(info) end,
      "bad argument #2 to 'decrypt_eidinfo' (expected the SM2 private key)")
  end)
end)

describe("field encryption sessions", function()
  for _, c in ipairs { { "SM4-GCM", "sm2_pub.pem", "sm2_pkcs8.pem", 16, 12 },
    { "AES-256-CBC", "rsa1024_pkcs1_pub.pem", "rsa1024.pem", 32, 16 } } do
    it(c[1] .. ": the server side opens what the client side made; responses decrypt by path", function()
      local s = assert(crypto.session { algorithm = c[1], public_key = F .. c[2] })
      assert.equal(c[4], #s.key)
      assert.equal(c[5], #s.iv)
      local p = crypto.encrypt_fields(s, { MerchantId = "m", Name = NAME, IdCard = "", Extra = "e" },
        { "Name", "IdCard", "Missing" })
      assert.same({ "Name", "IdCard" }, p.Encryption.EncryptList)
      assert.equal("e", p.Extra)
      local srv = assert(crypto.open_session(p.Encryption, F .. c[3]))
      local tags = p.Encryption.TagList or {}
      assert.equal(NAME, srv:decrypt(p.Name, tags[1]))
      assert.equal("", srv:decrypt(p.IdCard, tags[2]))
      -- The server answers with Response.Text.Name under the same key.
      local ct, tag = srv:encrypt(IDCARD)
      local res = { Text = { IdCard = ct }, Encryption = { EncryptList = { "Response.Text.IdCard" },
        Iv = srv.Iv, TagList = tag and { tag } or nil } }
      local out = assert(crypto.decrypt_response(s, res))
      assert.equal(IDCARD, out.Text.IdCard)
      assert.is_nil(out.Encryption)
      -- A tampered field: nil, err naming the path, with no plaintext.
      local bad = srv:encrypt(IDCARD)
      local raw = core.base64_decode(bad)
      raw = raw:sub(1, -2) .. string.char(raw:byte(-1) ~ 0x40)
      res = { Text = { IdCard = core.base64_encode(raw) }, Encryption = {
        EncryptList = { "Response.Text.IdCard" }, Iv = srv.Iv, TagList = tag and { tag } or nil } }
      local none, err = crypto.decrypt_response(s, res)
      if c[1] == "AES-256-CBC" and none then
        -- CBC is not authenticated: 1 time in ~256 the tampered block
        -- still ends in valid padding. Garbage then, never the original.
        assert.not_equal(IDCARD, none.Text.IdCard)
      else
        assert.is_nil(none)
        assert.equal("decrypt", err.code)
        assert.matches("Response.Text.IdCard", err.message, 1, true)
        no_secret(err, IDCARD, core.base64_encode(s.key))
      end
    end)
  end

  it("open_session refuses bad blocks with format/decrypt/key codes", function()
    local s = assert(crypto.session { algorithm = "SM4-GCM", public_key = F .. "sm2_pub.pem" })
    local block = s:block({ "Name" }, { "x" })
    local function code(b, k) local _, e = crypto.open_session(b, k) return e and e.code end
    assert.equal("key", code(block, F .. "rsa1024.pem"))
    assert.equal("decrypt", code(block, F .. "sm2_other.pem"))
    local b2 = s:block({ "Name" }, {})
    b2.Iv = "AAAA"
    assert.equal("format", code(b2, F .. "sm2_sec1.pem"))
    b2 = s:block({ "Name" }, {})
    b2.CiphertextBlob = "not base64!"
    assert.equal("format", code(b2, F .. "sm2_sec1.pem"))
    b2 = s:block({ "Name" }, {})
    b2.Algorithm = "DES"
    assert.equal("format", code(b2, F .. "sm2_sec1.pem"))
  end)

  it("session raises on misuse and returns nil, err for a key of the wrong type", function()
    assert.has_error(function() crypto.session { algorithm = "DES", public_key = "x" } end)
    assert.has_error(function() crypto.session { algorithm = "SM4-GCM" } end)
    local s, err = crypto.session { algorithm = "SM4-GCM", public_key = F .. "rsa1024_pub.pem" }
    assert.is_nil(s)
    assert.equal("key", err.code)
  end)
end)
