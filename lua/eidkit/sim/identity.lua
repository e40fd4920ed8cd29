-- The simulator's identity crypto, as Tencent does it: GetEidToken's
-- `Encryption` decrypted with private keys standing in for Tencent's
-- (--encryption-key), the listed fields echoed back encrypted under the
-- same key, and GetEidResult's EidInfo encrypted to the merchant's SM2
-- public key (--eidinfo-public-key). docs/SIMULATOR.md says what is
-- imitated and what is not.
local core = require "eidkit.core"
local crypto = require "eidkit.crypto"
local validate = require "eidkit.sim.validate"

local ipairs, type, format, tostring, error = ipairs, type, string.format, tostring, error
local raise = validate.raise_api_error

local _M = {}

-- The identity used for OCR input modes (no Name/IdCard in the request),
-- unless the simulator is given one. Fictional.
_M.OCR_IDENTITY = { name = "韦小宝", idnum = "11204416541220243X" }

-- opts.encryption_keys: list of keys (Key, PEM or path), RSA and/or SM2
-- private; opts.eidinfo_public_key; opts.ocr_identity = {name, idnum}.
-- Raises (at start-up) when a key cannot be used.
function _M.setup(sim, opts)
  sim.decrypt_keys = nil
  for i, k in ipairs(opts.encryption_keys or {}) do
    local key, err = crypto.load_key(k)
    if not key then error(format("encryption_keys[%d]: %s", i, err.message), 3) end
    if not key:is_private() then error(format("encryption_keys[%d]: a private key is needed", i), 3) end
    sim.decrypt_keys = sim.decrypt_keys or {}
    sim.decrypt_keys[key:type()] = key
  end
  if opts.eidinfo_public_key then
    local key, err = crypto.load_key(opts.eidinfo_public_key)
    if not key then error("eidinfo_public_key: " .. err.message, 3) end
    if key:type() ~= "sm2" then error("eidinfo_public_key: an SM2 key is needed", 3) end
    sim.eidinfo_key = key
  end
  local o = opts.ocr_identity or _M.OCR_IDENTITY
  if type(o.name) ~= "string" or type(o.idnum) ~= "string" then
    error("ocr_identity: name and idnum strings are needed", 3)
  end
  sim.ocr_identity = { name = o.name, idnum = o.idnum }
end

local function decrypt_error(what)
  raise("FailedOperation.DecryptSystemError", "Decryption failed: %s.", what)
end

-- Decrypt p's encrypted fields in place (the simulator then validates them
-- as plain values). Returns the session for the response, or nil when the
-- request is not encrypted or the simulator has no keys (then encrypted
-- values pass unread, as before --encryption-key existed).
function _M.decrypt_request(sim, p)
  local enc = p.Encryption
  if type(enc) ~= "table" or not sim.decrypt_keys then return nil end
  local alg = enc.Algorithm or "AES-256-CBC"
  local spec = crypto.ALGORITHMS[alg]
  local key = spec and sim.decrypt_keys[spec.wrap]
  if not key then decrypt_error("no key for " .. tostring(alg)) end
  local s = crypto.open_session(enc, key)
  if not s then decrypt_error("CiphertextBlob or Iv cannot be decrypted") end
  local tags = type(enc.TagList) == "table" and enc.TagList or {}
  for i, f in ipairs(enc.EncryptList) do
    local v = p[f]
    if type(v) == "string" then
      local plain = s:decrypt(v, tags[i])
      if not plain then decrypt_error("field " .. f .. " does not decrypt") end
      p[f] = plain
    end
  end
  p.Encryption = nil
  s.list = enc.EncryptList
  return s
end

-- The fields of an answer to an encrypted GetEidToken: the listed request
-- fields, echoed encrypted under the request's key with a fresh IV, and
-- the Encryption block saying so (EncryptList as dotted paths).
function _M.encrypt_response(s, fields, plain)
  s.iv = core.random_bytes(#s.iv)
  s.Iv = core.base64_encode(s.iv)
  local list, tags = {}, {}
  for _, f in ipairs(s.list) do
    if plain[f] ~= nil then
      local ct, tag = s:encrypt(plain[f])
      fields[f] = ct
      list[#list + 1] = "Response." .. f
      tags[#tags + 1] = tag
    end
  end
  if #list > 0 then fields.Encryption = s:block(list, tags) end
end

-- GetEidResult's EidInfo for a token whose user passed, encrypted once per
-- token; nil when the simulator has no --eidinfo-public-key.
function _M.eidinfo(sim, tok)
  if not sim.eidinfo_key then return nil end
  if not tok.eidinfo then
    local id = tok.identity or sim.ocr_identity
    local info = crypto.encrypt_eidinfo({ name = id.name, idnum = id.idnum, idtype = "01" },
      sim.eidinfo_key)
    info.EidCode = "SIM" .. tok.EidToken:gsub("%-", ""):sub(1, 29)
    info.EidSign = "SIMSIGN" .. tok.EidToken:gsub("%-", ""):sub(1, 25)
    tok.eidinfo = info
  end
  return tok.eidinfo
end

return _M
