-- eidkit sign: compute TC3-HMAC-SHA256 headers for a request, and with
-- --explain show every intermediate, so a merchant facing
-- AuthFailure.SignatureFailure can compare with what their code sent.
local eidkit = require "eidkit"
local args = require "eidkit.cli.args"

local stdout, stderr = io.stdout, io.stderr
local format, concat, insert = string.format, table.concat, table.insert
local getenv = os.getenv

local read_file = args.read_file

local _M = {}

local spec = {
  { name = "secret-id", arg = "ID", help = "SecretId (default: $TENCENTCLOUD_SECRET_ID)" },
  { name = "secret-key-file", arg = "FILE",
    help = "read the SecretKey from FILE's first line (default: $TENCENTCLOUD_SECRET_KEY)" },
  { name = "secret-key", arg = "KEY",
    help = "the SecretKey itself; visible to other users in ps, prefer the file or env" },
  { name = "token", arg = "TOKEN", help = "STS session token (default: $TENCENTCLOUD_SESSION_TOKEN)" },
  { name = "host", arg = "HOST", help = "default faceid.tencentcloudapi.com" },
  { name = "service", arg = "NAME", help = "default: the host's first label" },
  { name = "action", arg = "ACTION", help = "required, e.g. GetEidToken" },
  { name = "version", arg = "VERSION", help = "API version; default 2018-03-01 for faceid" },
  { name = "region", arg = "REGION", help = "X-TC-Region (not needed by the E证通 APIs)" },
  { name = "language", arg = "LANG", help = "X-TC-Language: zh-CN or en-US" },
  { name = "timestamp", arg = "SECONDS", help = "Unix time to sign at (default: now)" },
  { name = "content-type", arg = "TYPE", help = "default application/json" },
  { name = "body", arg = "TEXT", help = "the request body, exactly as sent" },
  { name = "body-file", arg = "FILE",
    help = "read the body from FILE ('-': stdin); without --body or --body-file, stdin is read" },
  { name = "signed-header", arg = "NAME", list = true,
    help = "sign this header too (repeatable; content-type and host are always signed)" },
  { name = "explain", help = "also print the canonical request and the string to sign" },
  { name = "json", help = "print one JSON object instead of text" },
  { name = "reveal-token", help = "print the session token instead of redacting it" },
  { name = "help", help = "show this help" },
}

function _M.help()
  return "usage: eidkit sign [options]\n\n" .. [[
Signs one POST request to a Tencent Cloud API with TC3-HMAC-SHA256 and
prints the headers to send. With --explain it also prints the canonical
request and the string to sign: compare them with your own code's when
Tencent answers AuthFailure.SignatureFailure. The body must be the exact
bytes you send (mind a trailing newline in a file).

options:
]] .. args.help(spec) .. "\n"
end

-- The message on stderr; the exit status (2: the command line or its input is wrong).
local function exit_error(msg)
  stderr:write("eidkit sign: ", msg, "\n")
  return 2
end


local header_order = {
  "Authorization", "Content-Type", "Host", "X-TC-Action", "X-TC-Version",
  "X-TC-Timestamp", "X-TC-Region", "X-TC-Token", "X-TC-Language",
}

local function redacted(token)
  return format("<redacted: %d bytes; --reveal-token prints it>", #token)
end

-- Build the eidkit.sign request from flags and the environment.
local function request(opts)
  local req = {
    secret_id = opts.secret_id or getenv("TENCENTCLOUD_SECRET_ID"),
    token = opts.token or getenv("TENCENTCLOUD_SESSION_TOKEN"),
    host = opts.host, service = opts.service, action = opts.action,
    version = opts.version, region = opts.region, language = opts.language,
    content_type = opts.content_type, signed_headers = nil,
  }
  if req.token == "" then req.token = nil end
  if opts.secret_key and opts.secret_key_file then
    return nil, "give --secret-key or --secret-key-file, not both"
  end
  if opts.secret_key_file then
    local data, err = read_file(opts.secret_key_file)
    if not data then return nil, "--secret-key-file: " .. tostring(err) end
    req.secret_key = data:match("^[^\r\n]*")
  else
    req.secret_key = opts.secret_key or getenv("TENCENTCLOUD_SECRET_KEY")
  end
  if not req.secret_id or req.secret_id == "" then
    return nil, "no SecretId: pass --secret-id or set TENCENTCLOUD_SECRET_ID"
  end
  if not req.secret_key or req.secret_key == "" then
    return nil, "no SecretKey: pass --secret-key-file or set TENCENTCLOUD_SECRET_KEY"
  end
  if not req.action then return nil, "--action is required (e.g. --action GetEidToken)" end
  if opts.timestamp then
    local ts = math.tointeger(tonumber(opts.timestamp))
    if not ts or not opts.timestamp:match("^%d+$") then
      return nil, format("--timestamp: expected Unix seconds, got '%s'", opts.timestamp)
    end
    req.timestamp = ts
  end
  if opts.body and opts.body_file then return nil, "give --body or --body-file, not both" end
  if opts.body then
    req.body = opts.body
  else
    local data, err = read_file(opts.body_file or "-")
    if not data then return nil, "--body-file: " .. tostring(err) end
    req.body = data
  end
  if opts.signed_header then
    local names = { "content-type", "host" }
    for _, list in ipairs(opts.signed_header) do
      for name in list:gmatch("[^,%s]+") do
        local lc = name:lower()
        if lc ~= "content-type" and lc ~= "host" then insert(names, name) end
      end
    end
    req.signed_headers = names
  end
  return req
end

-- What may be printed: the headers and canonical request with the session
-- token replaced, unless --reveal-token. The signature is never affected.
local function shown(req, info, reveal)
  local headers, cr = {}, info.canonical_request
  for k, v in pairs(info.headers) do headers[k] = v end
  if req.token and not reveal then
    headers["X-TC-Token"] = redacted(req.token)
    cr = cr:gsub("\nx%-tc%-token:[^\n]*", function() return "\nx-tc-token:" .. redacted(req.token) end)
  end
  return headers, cr
end

local function json_out(req, info, explain, reveal)
  local cjson = require "cjson"
  local headers, cr = shown(req, info, reveal)
  local out = { headers = headers }
  if explain then
    out.canonical_request = cr
    out.string_to_sign = info.string_to_sign
    out.hashed_payload = info.hashed_payload
    out.hashed_canonical_request = info.hashed_canonical_request
    out.signature = info.signature
    out.date = info.date
    out.timestamp = info.timestamp
    out.body_bytes = #req.body
  end
  stdout:write(cjson.encode(out), "\n")
end

function _M.main(argv)
  local opts, positional = args.parse(spec, argv)
  if not opts then return exit_error(positional .. " (see eidkit help sign)") end
  if opts.help then stdout:write(_M.help()) return 0 end
  if #positional > 0 then return exit_error(format("unexpected argument '%s'", positional[1])) end
  local req, err = request(opts)
  if not req then return exit_error(err) end

  local ok, info, ferr = pcall(eidkit.sign_explain, req)
  if not ok then
    -- Misuse raises "bad argument #1 to '...' (field: problem)"; show the inside.
    local msg = tostring(info)
    return exit_error(msg:match("%((.*)%)$") or msg)
  end
  if not info then return exit_error(tostring(ferr)) end
  if opts.json then
    json_out(req, info, opts.explain, opts.reveal_token)
    return 0
  end

  local headers, cr = shown(req, info, opts.reveal_token)
  local lines = {}
  if opts.explain then
    insert(lines, format("# Body: %d bytes, SHA-256 %s", #req.body, info.hashed_payload))
    insert(lines, "# Canonical request (between the lines):")
    insert(lines, "# ----")
    insert(lines, cr)
    insert(lines, "# ----")
    insert(lines, "# SHA-256 of the canonical request: " .. info.hashed_canonical_request)
    insert(lines, "# String to sign:")
    insert(lines, "# ----")
    insert(lines, info.string_to_sign)
    insert(lines, "# ----")
    insert(lines, format("# Signature: %s (UTC date %s, service %s)", info.signature, info.date,
      info.string_to_sign:match("\n%d%d%d%d%-%d%d%-%d%d/([^/]+)/") or "?"))
    insert(lines, "# Headers to send:")
  end
  for _, name in ipairs(header_order) do
    if headers[name] then insert(lines, name .. ": " .. headers[name]) end
  end
  stdout:write(concat(lines, "\n"), "\n")
  return 0
end

return _M
