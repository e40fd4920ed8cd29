-- `eidkit crypto` as a subprocess: keygen writes a usable SM2 key, its SPKI
-- public key and an SM2-with-SM3 CSR that openssl verifies; decrypt-eidinfo
-- opens an EidInfo from a GetEidResult answer on stdin, and fails without
-- printing any part of the identity; --help names every flag the parser has.
local scratch = require "support.scratch"
local proc = require "support.proc"
local crypto = require "eidkit.crypto"
local cjson = require "cjson"

local F = "spec/fixtures/crypto/"
local NAME, IDCARD = "欧阳·韦小宝", "11204416541220243X"

local function tmpdir()
  local d = scratch.file()
  os.remove(d)
  assert(proc.sh("mkdir -m 700 " .. d))
  return d
end

describe("eidkit crypto keygen", function()
  it("writes sm2.key (0600), sm2_pub.pem and a verifying SM2-with-SM3 sm2.csr", function()
    local d = tmpdir()
    local r = proc.run { proc.bin(), "crypto", "keygen", "--out-dir", d, "--subject", "/CN=shop/O=测试" }
    assert.equal(0, r.code, r.stderr)
    local key = assert(crypto.load_key(d .. "/sm2.key"))
    assert.equal("sm2", key:type())
    assert.is_true(key:is_private())
    assert.equal(key:public_pem(), assert(crypto.load_key(d .. "/sm2_pub.pem")):public_pem())
    assert.equal("-rw-------", proc.output("stat -c %A " .. d .. "/sm2.key"):match("%S+"))
    local text = proc.output("openssl req -in " .. d .. "/sm2.csr -verify -noout -text 2>&1")
    assert.matches("SM2%-with%-SM3", text)
    assert.matches("verify OK", text)
    assert.is_nil(r.stdout:find("BEGIN", 1, true)) -- the key is never printed
    -- A second run refuses to overwrite.
    local again = proc.run { proc.bin(), "crypto", "keygen", "--out-dir", d }
    assert.equal(1, again.code)
    assert.matches("exists; not overwriting", again.stderr)
    proc.sh("rm -rf " .. d)
  end)

  it("round trip: an EidInfo to the generated public key opens with its private key", function()
    local d = tmpdir()
    assert.equal(0, proc.run({ proc.bin(), "crypto", "keygen", "--out-dir", d }).code)
    local info = assert(crypto.encrypt_eidinfo({ name = NAME, idnum = IDCARD }, d .. "/sm2_pub.pem"))
    local r = proc.run({ proc.bin(), "crypto", "decrypt-eidinfo", "--key", d .. "/sm2.key" },
      { stdin = cjson.encode { Response = { EidInfo = info, RequestId = "x" } } })
    assert.equal(0, r.code, r.stderr)
    assert.same({ name = NAME, idtype = "01", idnum = IDCARD }, cjson.decode(r.stdout))
    proc.sh("rm -rf " .. d)
  end)
end)

describe("eidkit crypto decrypt-eidinfo", function()
  local info = assert(crypto.encrypt_eidinfo({ name = NAME, idnum = IDCARD }, F .. "sm2_pub.pem"))
  info.EidCode, info.EidSign = "code-1", "sign-1"

  it("accepts the Response object itself and keeps EidCode and EidSign", function()
    local r = proc.run({ proc.bin(), "crypto", "decrypt-eidinfo", "--key", F .. "sm2_gmssl.pem" },
      { stdin = cjson.encode { EidInfo = info } })
    assert.equal(0, r.code, r.stderr)
    assert.same({ name = NAME, idtype = "01", idnum = IDCARD, EidCode = "code-1", EidSign = "sign-1" },
      cjson.decode(r.stdout))
  end)

  it("fails with status 1 and no identity on stderr for the wrong key, or no EidInfo", function()
    local r = proc.run({ proc.bin(), "crypto", "decrypt-eidinfo", "--key", F .. "sm2_other.pem" },
      { stdin = cjson.encode { Response = { EidInfo = info } } })
    assert.equal(1, r.code)
    assert.matches("decrypt", r.stderr)
    assert.equal("", r.stdout)
    assert.is_nil(r.stderr:find(IDCARD, 1, true))
    assert.is_nil(r.stderr:find(NAME, 1, true))
    r = proc.run({ proc.bin(), "crypto", "decrypt-eidinfo", "--key", F .. "sm2_pkcs8.pem" },
      { stdin = '{"Response":{"EidInfo":null}}' })
    assert.equal(1, r.code)
    assert.matches("no EidInfo", r.stderr)
    r = proc.run { proc.bin(), "crypto", "decrypt-eidinfo" }
    assert.equal(2, r.code)
    assert.matches("%-%-key FILE is required", r.stderr)
  end)

  it("--help describes both subcommands and every flag", function()
    local r = proc.run { proc.bin(), "crypto", "--help" }
    assert.equal(0, r.code)
    for _, flag in ipairs { "--out-dir DIR", "--subject DN", "--openssl PROGRAM", "--key FILE" } do
      assert.truthy(r.stdout:find(flag, 1, true), flag)
    end
    assert.matches("keygen", r.stdout)
    assert.matches("decrypt%-eidinfo", r.stdout)
    assert.equal(2, proc.run({ proc.bin(), "crypto", "nope" }).code)
  end)
end)
