-- Field encryption and EidInfo end to end: eidkit.client{encryption = ...}
-- against a real `eidkit sim` started with --encryption-key (RSA and SM2
-- private keys standing in for Tencent's) and --eidinfo-public-key (the
-- merchant's SM2 key), and the simulator's refusals of bad Encryption.
local client_mod = require "eidkit.client"
local crypto = require "eidkit.crypto"
local sim_mod = require "eidkit.sim"
local simproc = require "support.simproc"
local simctl = require "support.simctl"

local demo = sim_mod.demo
local F = "spec/fixtures/crypto/"
local NAME, IDCARD = "欧阳·韦小宝", "11204416541220243X"

local function new(s, encryption)
  return client_mod.new { endpoint = s.url, secret_id = demo.SecretId,
    secret_key = demo.SecretKey, encryption = encryption }
end

describe("encrypted GetEidToken through the simulator", function()
  local s
  lazy_setup(function()
    s = simproc.start { "--seed", "7", "--encryption-key", F .. "rsa1024.pem",
      "--encryption-key", F .. "sm2_pkcs8.pem", "--eidinfo-public-key", F .. "sm2_pub.pem" }
  end)
  lazy_teardown(function() simproc.stop(s) end)

  for _, case in ipairs { { "AES-256-CBC", F .. "rsa1024_pub.pem" }, { "SM4-GCM", F .. "sm2_pub.pem" } } do
    it(case[1] .. ": the simulator decrypts Name/IdCard and echoes them encrypted; "
      .. "the client decrypts the answer", function()
      local c = new(s, { algorithm = case[1], public_key = case[2] })
      local res = assert(c:get_eid_token { MerchantId = demo.MerchantId, Name = NAME,
        IdCard = IDCARD, Config = { InputType = "4" } })
      assert.is_string(res.EidToken)
      assert.is_nil(res.Encryption)
      assert.equal(NAME, res.Name)
      assert.equal(IDCARD, res.IdCard)
      local _, tok = simctl.request(s, "GET", "/sim/tokens/" .. res.EidToken)
      assert.same({ Name = NAME, IdCard = IDCARD }, tok.Identity)
    end)
  end

  it("validates the decrypted values: an IdCard that is not [A-Za-z0-9] is refused", function()
    local c = new(s, { algorithm = "SM4-GCM", public_key = F .. "sm2_pub.pem" })
    local res, err = c:get_eid_token { MerchantId = demo.MerchantId, Name = NAME,
      IdCard = "1120-4416", Config = { InputType = "4" } }
    assert.is_nil(res)
    assert.equal("InvalidParameterValue", err.code)
  end)

  it("a key wrapped to a key the simulator lacks is FailedOperation.DecryptSystemError", function()
    local c = new(s, { algorithm = "AES-256-CBC", public_key = F .. "rsa2048.pem" })
    local res, err = c:get_eid_token { MerchantId = demo.MerchantId, Name = NAME, IdCard = IDCARD }
    assert.is_nil(res)
    assert.equal("FailedOperation.DecryptSystemError", err.code)
    assert.is_nil(tostring(err.message):find(IDCARD, 1, true))
    assert.is_nil(tostring(err.message):find(NAME, 1, true))
  end)

  it("a bad tag and an unsupported field are refused with Tencent's codes", function()
    local c = new(s)
    local sess = assert(crypto.session { algorithm = "SM4-GCM", public_key = F .. "sm2_pub.pem" })
    local p = crypto.encrypt_fields(sess, { MerchantId = demo.MerchantId, Name = NAME, IdCard = IDCARD },
      { "Name", "IdCard" })
    p.Encryption.TagList[1] = p.Encryption.TagList[2]
    local res, err = c:get_eid_token(p)
    assert.is_nil(res)
    assert.equal("FailedOperation.DecryptSystemError", err.code)
    p = crypto.encrypt_fields(sess, { MerchantId = demo.MerchantId, Name = NAME, IdCard = IDCARD,
      Extra = "x" }, { "Name", "IdCard", "Extra" })
    res, err = c:get_eid_token(p)
    assert.is_nil(res)
    assert.equal("InvalidParameter.UnsupportEncryptField", err.code)
  end)

  it("key_ttl reuses the session key; 0 makes a fresh one per call", function()
    local blobs = {}
    local c = new(s, { algorithm = "SM4-GCM", public_key = F .. "sm2_pub.pem", key_ttl = 3600 })
    local c0 = new(s, { algorithm = "SM4-GCM", public_key = F .. "sm2_pub.pem" })
    for i = 1, 2 do
      assert(c:get_eid_token { MerchantId = demo.MerchantId, Name = NAME, IdCard = IDCARD })
      blobs[i] = c.encryption.session.CiphertextBlob
      assert(c0:get_eid_token { MerchantId = demo.MerchantId, Name = NAME, IdCard = IDCARD })
      blobs[i + 2] = c0.encryption.session.CiphertextBlob
    end
    assert.equal(blobs[1], blobs[2])
    assert.not_equal(blobs[3], blobs[4])
  end)

  it("GetEidResult returns EidInfo after a pass, which decrypt_eidinfo opens", function()
    local c = new(s, { algorithm = "SM4-GCM", public_key = F .. "sm2_pub.pem" })
    local res = assert(c:get_eid_token { MerchantId = demo.MerchantId, Name = NAME, IdCard = IDCARD,
      Config = { InputType = "4" } })
    local before = assert(c:get_eid_result { EidToken = res.EidToken })
    assert.equal(require("cjson").null, before.EidInfo)
    assert.equal(200, simctl.finish(s, res.EidToken, { ErrCode = 0 }))
    local r = assert(c:get_eid_result { EidToken = res.EidToken })
    local id = assert(crypto.decrypt_eidinfo(r.EidInfo, F .. "sm2_sec1.pem"))
    assert.equal(NAME, id.name)
    assert.equal(IDCARD, id.idnum)
    assert.equal("01", id.idtype)
    assert.is_string(id.EidCode)
    -- The ciphertext never holds the identity in the clear.
    local text = require("cjson").encode(r)
    assert.is_nil(text:find(IDCARD, 1, true))
  end)

  it("OCR modes get the configured identity", function()
    local c = new(s)
    local res = assert(c:get_eid_token { MerchantId = demo.MerchantId, Config = { InputType = "1" } })
    simctl.finish(s, res.EidToken, { ErrCode = 0 })
    local r = assert(c:get_eid_result { EidToken = res.EidToken })
    local id = assert(crypto.decrypt_eidinfo(r.EidInfo, F .. "sm2_pkcs8.pem"))
    assert.equal("11204416541220243X", id.idnum)
  end)
end)

describe("eidkit.client encryption option", function()
  it("raises on misuse", function()
    local base = { endpoint = "http://127.0.0.1:1", secret_id = "a", secret_key = "b" }
    local function with(e)
      local o = {}
      for k, v in pairs(base) do o[k] = v end
      o.encryption = e
      return function() client_mod.new(o) end
    end
    assert.has_error(with { algorithm = "DES", public_key = F .. "sm2_pub.pem" })
    assert.has_error(with { algorithm = "SM4-GCM", public_key = F .. "rsa1024_pub.pem" },
      "bad option 'encryption' (SM4-GCM needs an SM2 public key)")
    assert.has_error(with { algorithm = "SM4-GCM" })
    assert.has_error(with { algorithm = "SM4-GCM", public_key = F .. "sm2_pub.pem", key_ttl = -1 })
    assert.has_error(with { algorithm = "SM4-GCM", public_key = F .. "sm2_pub.pem", colour = 1 })
  end)
end)
