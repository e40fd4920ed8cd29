-- eidkit crypto: the merchant's SM2 key pair and CSR for the console's
-- "申请返回实名信息" (keygen, made by the openssl program), and EidInfo
-- decryption for support staff (decrypt-eidinfo).
local core = require "eidkit.core"
local args = require "eidkit.cli.args"
local crypto = require "eidkit.crypto"
local cjson = require "cjson.safe"

local stdout, stderr = io.stdout, io.stderr
local format = string.format

local _M = {}

local keygen_spec = {
  { name = "out-dir", arg = "DIR", help = "where to write sm2.key, sm2_pub.pem and sm2.csr (default .)" },
  { name = "subject", arg = "DN", help = "the CSR's subject (default \"/CN=eidkit merchant\")" },
  { name = "openssl", arg = "PROGRAM", help = "the openssl program (default openssl on PATH)" },
  { name = "help", help = "show this help" },
}

local decrypt_spec = {
  { name = "key", arg = "FILE", help = "the merchant's SM2 private key (PEM: SEC1, PKCS#8)" },
  { name = "help", help = "show this help" },
}

function _M.help()
  return "usage: eidkit crypto keygen [options]\n"
    .. "       eidkit crypto decrypt-eidinfo --key FILE < response.json\n\n" .. [[
keygen writes the merchant's SM2 key pair (sm2.key: PKCS#8, mode 0600;
sm2_pub.pem: SPKI) and an SM3-signed certificate request (sm2.csr) for
the console's "申请返回实名信息", with the openssl program (OpenSSL 3.0:
ecparam -name SM2, req -sm3), and checks the request's signature. It never
overwrites a file and never prints the key.

decrypt-eidinfo reads a GetEidResult answer on standard input ({"Response":
{...}} or the Response object itself), decrypts Response.EidInfo with the
key and prints {"name","idtype","idnum","EidCode","EidSign"} as JSON on
standard output. Exit status 1 when it cannot (the reason on stderr, never
any part of the identity), 2 on a usage error.

keygen options:
]] .. args.help(keygen_spec) .. "\n\ndecrypt-eidinfo options:\n" .. args.help(decrypt_spec) .. "\n"
end

local function fail(code, msg)
  stderr:write("eidkit crypto: ", msg, "\n")
  return code
end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

-- Run argv (no shell); true, or nil and what it printed on stderr.
local function run(argv)
  local errfile = os.tmpname()
  local p, err = core.spawn(argv, { stderr = errfile, stdout = "/dev/null" })
  if not p then
    os.remove(errfile)
    return nil, tostring(err and err.message or err)
  end
  local status, how = p:wait()
  local f = io.open(errfile, "rb")
  local text = f and f:read("a") or ""
  if f then f:close() end
  os.remove(errfile)
  if status ~= 0 or how ~= "exit" then
    return nil, format("%s failed (%s %s): %s", argv[1], tostring(how), tostring(status),
      text:gsub("%s+$", ""))
  end
  return true
end

local function keygen(argv)
  local o, pos = args.parse(keygen_spec, argv)
  if not o then return fail(2, pos .. " (see eidkit crypto --help)") end
  if o.help then stdout:write(_M.help()) return 0 end
  if #pos > 0 then return fail(2, "unexpected argument '" .. pos[1] .. "'") end
  local dir = o.out_dir or "."
  local openssl = o.openssl or "openssl"
  local key, pub, csr = dir .. "/sm2.key", dir .. "/sm2_pub.pem", dir .. "/sm2.csr"
  for _, f in ipairs { key, pub, csr } do
    if exists(f) then return fail(1, f .. " exists; not overwriting it") end
  end
  -- The key file is made first, empty and 0600, so openssl writes into it
  -- without it ever being readable by others.
  local f, err = io.open(key, "wb")
  if not f then return fail(1, "cannot create " .. key .. ": " .. tostring(err)) end
  f:close()
  local ok
  ok, err = run { "chmod", "600", key }
  if ok then ok, err = run { openssl, "genpkey", "-algorithm", "SM2", "-out", key } end
  if ok then ok, err = run { openssl, "pkey", "-in", key, "-pubout", "-out", pub } end
  if ok then
    ok, err = run { openssl, "req", "-new", "-key", key, "-sm3", "-subj",
      o.subject or "/CN=eidkit merchant", "-out", csr }
  end
  if ok then ok, err = run { openssl, "req", "-in", csr, "-verify", "-noout" } end
  if not ok then
    for _, p in ipairs { key, pub, csr } do os.remove(p) end
    return fail(1, err)
  end
  -- Check what openssl wrote is an SM2 key eidkit can use.
  local k, kerr = crypto.load_key(key)
  if not k or k:type() ~= "sm2" then
    return fail(1, "the key written is not a usable SM2 key: " .. tostring(kerr and kerr.message))
  end
  stdout:write(format("private key  %s (keep it secret: it decrypts every EidInfo)\n"
    .. "public key   %s\ncertificate request %s (SM2 with SM3: upload it in the console)\n",
    key, pub, csr))
  return 0
end

local function decrypt_eidinfo(argv)
  local o, pos = args.parse(decrypt_spec, argv)
  if not o then return fail(2, pos .. " (see eidkit crypto --help)") end
  if o.help then stdout:write(_M.help()) return 0 end
  if #pos > 0 then return fail(2, "unexpected argument '" .. pos[1] .. "'") end
  if not o.key then return fail(2, "--key FILE is required") end
  local key, kerr = crypto.load_key(o.key)
  if not key then return fail(1, "--key: " .. kerr.message) end
  local text = io.stdin:read("a") or ""
  local doc = cjson.decode(text)
  if type(doc) ~= "table" then return fail(1, "standard input is not a JSON object") end
  local res = type(doc.Response) == "table" and doc.Response or doc
  if type(res.EidInfo) ~= "table" then
    return fail(1, "the answer has no EidInfo (console approval missing, flow not finished, "
      .. "or not a GetEidResult answer)")
  end
  local id, err = crypto.decrypt_eidinfo(res.EidInfo, key)
  if not id then return fail(1, tostring(err)) end
  stdout:write(cjson.encode(id), "\n")
  return 0
end

function _M.main(argv)
  local sub = argv[1]
  local rest = { table.unpack(argv, 2) }
  if sub == "keygen" then return keygen(rest) end
  if sub == "decrypt-eidinfo" then return decrypt_eidinfo(rest) end
  if sub == nil then return fail(2, "expected a subcommand: keygen or decrypt-eidinfo") end
  return fail(2, format("unknown subcommand '%s' (keygen, decrypt-eidinfo)", sub))
end

return _M
