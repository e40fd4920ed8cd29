-- eidkit.crypto: E证通's identity crypto for merchants, on the C core
-- (core/include/eidkit/crypto.h; docs/internals/crypto.md).
--
--   local crypto = require "eidkit.crypto"
--   local id, err = crypto.decrypt_eidinfo(res.EidInfo, "/etc/eid/sm2.key")
--   -- id = { name =, idtype =, idnum =, EidCode =, EidSign = }
--
--   local s = crypto.session{ algorithm = "SM4-GCM", public_key = pem }
--   local body = crypto.encrypt_fields(s, { Name = "...", IdCard = "..." }, { "Name", "IdCard" })
--   local res2, err = crypto.decrypt_response(s, res)   -- Response.Encryption, if any
--
-- Keys are given as an eidkit.Key, PEM text, or a path to a PEM file.
-- Runtime failures return nil, err (err.code "key", "decrypt", "format");
-- misuse raises. Error messages never carry a key, a plaintext or a
-- ciphertext. Plaintext handed back is a Lua string, which Lua cannot wipe:
-- drop references to it once used.
local core = require "eidkit.core"
local errors = require "eidkit.errors"

local type, error, ipairs, pairs, tostring = type, error, ipairs, pairs, tostring
local setmetatable, getmetatable = setmetatable, getmetatable
local format, find, gmatch = string.format, string.find, string.gmatch
local b64encode, b64decode, random_bytes = core.base64_encode, core.base64_decode,
  core.random_bytes

local _M = {}

_M.ALGORITHMS = { ["AES-256-CBC"] = { key = 32, iv = 16, wrap = "rsa" },
  ["SM4-GCM"] = { key = 16, iv = 12, wrap = "sm2" } }

local function is_key(v)
  local mt = type(v) == "userdata" and getmetatable(v)
  return mt and mt.__name == "eidkit.Key" or false
end

-- load_key(Key | PEM text | path) -> Key | nil, err. PEM text is told from a
-- path by its "-----BEGIN" line.
function _M.load_key(k)
  if is_key(k) then return k end
  if type(k) ~= "string" or k == "" then
    error("bad argument #1 to 'load_key' (expected an eidkit.Key, PEM text or a file path)", 2)
  end
  if find(k, "-----BEGIN", 1, true) then return core.key_load(k) end
  return core.key_load_file(k)
end

local function want_key(fname, k, kind, private)
  local key, err = _M.load_key(k)
  if not key then return nil, err end
  if key:type() ~= kind then
    return errors.result("key", format("%s: an %s key is needed, got %s", fname, kind:upper(),
      key:type():upper()))
  end
  if private and not key:is_private() then
    return errors.result("key", fname .. ": the private key is needed, got a public one")
  end
  return key
end

-- decrypt_eidinfo(EidInfo, private_key) -> {name, idtype, idnum, EidCode,
-- EidSign} | nil, err. EidInfo is GetEidResult's Response.EidInfo table.
function _M.decrypt_eidinfo(info, private_key)
  if type(info) ~= "table" then
    error("bad argument #1 to 'decrypt_eidinfo' (expected the EidInfo table)", 2)
  end
  if private_key == nil then
    error("bad argument #2 to 'decrypt_eidinfo' (expected the SM2 private key)", 2)
  end
  local dk, ui = info.DesKey, info.UserInfo
  if type(dk) ~= "string" or dk == "" or type(ui) ~= "string" or ui == "" then
    return errors.result("format", "EidInfo has no DesKey and UserInfo strings (console "
      .. "approval missing, or the flow not finished)")
  end
  local key, kerr = want_key("decrypt_eidinfo", private_key, "sm2", true)
  if not key then return nil, kerr end
  local id, err = key:decrypt_eidinfo(dk, ui)
  if not id then return nil, err end
  if type(info.EidCode) == "string" then id.EidCode = info.EidCode end
  if type(info.EidSign) == "string" then id.EidSign = info.EidSign end
  return id
end

-- encrypt_eidinfo({name, idnum[, idtype]}, public_key[, layout]) -> EidInfo
-- table (DesKey, UserInfo): what Tencent sends, for the simulator and tests.
function _M.encrypt_eidinfo(id, public_key, layout)
  if type(id) ~= "table" then error("bad argument #1 to 'encrypt_eidinfo' (expected a table)", 2) end
  local key, kerr = want_key("encrypt_eidinfo", public_key, "sm2", false)
  if not key then return nil, kerr end
  local dk, ui = key:encrypt_eidinfo(id, layout)
  return { DesKey = dk, UserInfo = ui }
end

-- ------------------------------------------------------ field encryption

local session_mt = { __index = {} }
session_mt.__tostring = function(s) return "eidkit.crypto session (" .. s.algorithm .. ")" end

-- session{algorithm = "SM4-GCM"|"AES-256-CBC", public_key = Key|PEM|path}
-- -> session | nil, err. A fresh random key and IV, and the key wrapped to
-- Tencent's public key (RSA PKCS#1 v1.5 for AES-256-CBC, SM2 C1C3C2 with
-- 04 for SM4-GCM). The official SDKs use one IV for every field of a call.
function _M.session(opts)
  if type(opts) ~= "table" then error("bad argument #1 to 'session' (expected a table)", 2) end
  local alg = opts.algorithm or "AES-256-CBC"
  local spec = _M.ALGORITHMS[alg]
  if not spec then
    error(format("bad option 'algorithm' (expected \"AES-256-CBC\" or \"SM4-GCM\", got %s)",
      tostring(alg)), 2)
  end
  if opts.public_key == nil then error("bad option 'public_key' (expected PEM text or a path)", 2) end
  local pub, kerr = want_key("session", opts.public_key, spec.wrap, false)
  if not pub then return nil, kerr end
  local key = random_bytes(spec.key)
  local iv = random_bytes(spec.iv)
  local blob, werr = pub:encrypt(key)
  if not blob then return nil, werr end
  return setmetatable({ algorithm = alg, key = key, iv = iv,
    CiphertextBlob = b64encode(blob), Iv = b64encode(iv) }, session_mt)
end

-- A session for a received Encryption block (the server's side): unwrap
-- CiphertextBlob with the private key. -> session | nil, err.
function _M.open_session(enc, private_key)
  if type(enc) ~= "table" then error("bad argument #1 to 'open_session' (expected a table)", 2) end
  local alg = enc.Algorithm or "AES-256-CBC"
  local spec = _M.ALGORITHMS[alg]
  if not spec then return errors.result("format", "unknown Encryption.Algorithm") end
  local key, kerr = want_key("open_session", private_key, spec.wrap, true)
  if not key then return nil, kerr end
  if type(enc.CiphertextBlob) ~= "string" or type(enc.Iv) ~= "string" then
    return errors.result("format", "Encryption needs CiphertextBlob and Iv strings")
  end
  local blob, berr = b64decode(enc.CiphertextBlob)
  if not blob then return nil, errors.new("format", "CiphertextBlob: " .. berr.message) end
  local iv, ierr = b64decode(enc.Iv)
  if not iv then return nil, errors.new("format", "Iv: " .. ierr.message) end
  if #iv ~= spec.iv then
    return errors.result("format", format("Iv: %d bytes (expected %d for %s)", #iv, spec.iv, alg))
  end
  local sk, derr = key:decrypt(blob)
  if not sk then return nil, derr end
  if #sk ~= spec.key then
    return errors.result("decrypt", format("CiphertextBlob: the key is %d bytes (expected %d)",
      #sk, spec.key))
  end
  return setmetatable({ algorithm = alg, key = sk, iv = iv, CiphertextBlob = enc.CiphertextBlob,
    Iv = enc.Iv }, session_mt)
end

-- s:encrypt(plaintext) -> base64 ciphertext, base64 tag (SM4-GCM) | nil
function session_mt.__index.encrypt(s, plain)
  if s.algorithm == "SM4-GCM" then
    local ct, tag = core.sm4_gcm_encrypt(s.key, s.iv, plain)
    return b64encode(ct), b64encode(tag)
  end
  return b64encode(core.aes_cbc_encrypt(s.key, s.iv, plain))
end

-- s:decrypt(base64 ciphertext[, base64 tag][, iv]) -> plaintext | nil, err
function session_mt.__index.decrypt(s, text, tag, iv)
  local ct, err = b64decode(text)
  if not ct then return nil, err end
  iv = iv or s.iv
  if s.algorithm == "SM4-GCM" then
    if type(tag) ~= "string" then return errors.result("format", "no tag for an SM4-GCM field") end
    local t, terr = b64decode(tag)
    if not t then return nil, terr end
    return core.sm4_gcm_decrypt(s.key, iv, ct, t)
  end
  return core.aes_cbc_decrypt(s.key, iv, ct)
end

-- s:block(list, tags) -> the Encryption table for a request.
function session_mt.__index.block(s, list, tags)
  local enc = { EncryptList = list, CiphertextBlob = s.CiphertextBlob, Iv = s.Iv,
    Algorithm = s.algorithm }
  if s.algorithm == "SM4-GCM" then enc.TagList = tags end
  return enc
end

-- encrypt_fields(session, params, fields) -> a copy of params whose listed
-- fields (those present, as strings) are encrypted, with its Encryption
-- block; params itself is untouched. Fields absent from params are skipped.
function _M.encrypt_fields(s, params, fields)
  if getmetatable(s) ~= session_mt then
    error("bad argument #1 to 'encrypt_fields' (expected a session)", 2)
  end
  local out = {}
  for k, v in pairs(params) do out[k] = v end
  local list, tags = {}, {}
  for _, f in ipairs(fields) do
    local v = params[f]
    if v ~= nil then
      if type(v) ~= "string" then
        error(format("bad argument #2 to 'encrypt_fields' (%s: expected a string)", f), 2)
      end
      local ct, tag = s:encrypt(v)
      out[f] = ct
      list[#list + 1] = f
      tags[#tags + 1] = tag
    end
  end
  if #list > 0 then out.Encryption = s:block(list, tags) end
  return out
end

-- The table holding the dotted path's last name, and that name; nil when a
-- part is missing. Paths start at "Response." or at the Response itself.
local function locate(res, path)
  local parts = {}
  for p in gmatch(path, "[^%.]+") do parts[#parts + 1] = p end
  local first = parts[1] == "Response" and 2 or 1
  local t = res
  for i = first, #parts - 1 do
    t = t[parts[i]]
    if type(t) ~= "table" then return nil end
  end
  return t, parts[#parts]
end

-- decrypt_response(session, Response) -> Response | nil, err. When the
-- Response carries Encryption, each dotted path of its EncryptList is
-- decrypted in place (with its Iv, or the session's, and TagList in order)
-- and Encryption is removed. A Response without it is returned as it is.
function _M.decrypt_response(s, res)
  if getmetatable(s) ~= session_mt then
    error("bad argument #1 to 'decrypt_response' (expected a session)", 2)
  end
  local enc = type(res) == "table" and res.Encryption or nil
  if type(enc) ~= "table" then return res end
  local list = enc.EncryptList
  if type(list) ~= "table" then return errors.result("format", "Response.Encryption has no EncryptList") end
  local iv = s.iv
  if type(enc.Iv) == "string" and enc.Iv ~= "" then
    local err
    iv, err = b64decode(enc.Iv)
    if not iv or #iv ~= #s.iv then
      return errors.result("format", "Response.Encryption.Iv is not a valid IV" ..
        (err and (": " .. err.message) or ""))
    end
  end
  local tags = type(enc.TagList) == "table" and enc.TagList or {}
  for i, path in ipairs(list) do
    if type(path) ~= "string" then return errors.result("format", "EncryptList holds a non-string") end
    local t, name = locate(res, path)
    local v = t and t[name]
    if type(v) == "string" then
      local plain, err = s:decrypt(v, tags[i], iv)
      if not plain then
        return errors.result(err.code, format("%s: %s", path, err.message))
      end
      t[name] = plain
    end
  end
  res.Encryption = nil
  return res
end

return _M
