-- eidkit.credentials: where the client's SecretId/SecretKey come from.
-- A provider is a table with :get() -> creds | nil, message, where creds is
-- { secret_id, secret_key, token, expiration, source } (expiration: Unix
-- seconds or nil). The client calls get() before each call and batch, and
-- hands new credentials to the C core only when the table changes.
--   env       TENCENTCLOUD_SECRET_ID, TENCENTCLOUD_SECRET_KEY, TENCENTCLOUD_SESSION_TOKEN
--   profile   TENCENTCLOUD_CREDENTIALS_FILE or ~/.tencentcloud/credentials, [default]
--   cvm_role  the CVM metadata service's role credentials, refreshed before
--             they expire, one refresh at a time
-- default() chains the three in that order. Secrets never appear in a
-- message, and creds print without them.
local core = require "eidkit.core"
local cjson = require "cjson"

local type, ipairs, tostring, setmetatable, pcall = type, ipairs, tostring, setmetatable, pcall
local format, open, getenv = string.format, io.open, os.getenv

local _M = {}

local METADATA_URL = "http://metadata.tencentyun.com/latest/meta-data/cam/security-credentials/"
_M.METADATA_URL = METADATA_URL

local creds_mt = {
  __tostring = function(c)
    return format("eidkit credentials (%s, SecretId %s)", c.source or "?", c.secret_id or "?")
  end,
}

local function make(source, id, key, token, expiration)
  return setmetatable({ source = source, secret_id = id, secret_key = key,
    token = token ~= "" and token or nil, expiration = expiration }, creds_mt)
end

local function provider(get)
  return { get = get }
end

-- static(secret_id, secret_key [, token])
function _M.static(id, key, token)
  if type(id) ~= "string" or id == "" or type(key) ~= "string" or key == "" then
    error("credentials.static: secret_id and secret_key must be non-empty strings", 2)
  end
  if token ~= nil and type(token) ~= "string" then
    error("credentials.static: token must be a string", 2)
  end
  local c = make("static", id, key, token)
  return provider(function() return c end)
end

-- env{getenv = os.getenv}: read at each get(), kept while unchanged.
function _M.env(opts)
  local ge = opts and opts.getenv or getenv
  local cur
  return provider(function()
    local id, key = ge("TENCENTCLOUD_SECRET_ID"), ge("TENCENTCLOUD_SECRET_KEY")
    if not id or id == "" or not key or key == "" then
      return nil, "TENCENTCLOUD_SECRET_ID and TENCENTCLOUD_SECRET_KEY are not set"
    end
    local token = ge("TENCENTCLOUD_SESSION_TOKEN")
    if not (cur and cur.secret_id == id and cur.secret_key == key and cur.token == token) then
      cur = make("env", id, key, token)
    end
    return cur
  end)
end

-- Parse the INI text of a credentials file; returns section -> {k = v}.
local function parse_ini(text)
  local sections, cur = {}, nil
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    line = line:gsub("\r$", "")
    local name = line:match("^%s*%[%s*([^%]]-)%s*%]%s*$")
    if name then
      cur = sections[name] or {}
      sections[name] = cur
    elseif cur and not line:match("^%s*[#;]") then
      local k, v = line:match("^%s*([%w_]+)%s*=%s*(.-)%s*$")
      if k then cur[k] = v end
    end
  end
  return sections
end
_M.parse_ini = parse_ini

-- profile{path =, profile = "default", getenv =}
function _M.profile(opts)
  opts = opts or {}
  local ge = opts.getenv or getenv
  local section = opts.profile or "default"
  local cur, cur_text
  return provider(function()
    local path = opts.path or ge("TENCENTCLOUD_CREDENTIALS_FILE")
    if not path then
      local home = ge("HOME")
      if not home then return nil, "no credentials file (HOME is not set)" end
      path = home .. "/.tencentcloud/credentials"
    end
    local f = open(path, "rb")
    if not f then return nil, "no credentials file at " .. path end
    local text = f:read("a")
    f:close()
    if cur and text == cur_text then return cur end
    local s = parse_ini(text)[section]
    if not s then return nil, format("%s has no [%s] section", path, section) end
    if not s.secret_id or s.secret_id == "" or not s.secret_key or s.secret_key == "" then
      return nil, format("%s [%s] lacks secret_id or secret_key", path, section)
    end
    cur, cur_text = make("profile", s.secret_id, s.secret_key, s.token), text
    return cur
  end)
end

-- cvm_role{url =, role =, timeout = 1, window = 300, clock = os.time}
-- Fetches the role name (unless given), then the role's temporary
-- credentials; refreshes once `window` seconds before they expire. A failed
-- refresh keeps credentials that have not expired yet. Only one refresh runs
-- at a time: a get() during a refresh (a callback, a coroutine) gets the
-- current credentials, or an error if there are none yet.
function _M.cvm_role(opts)
  opts = opts or {}
  local url = opts.url or METADATA_URL
  if url:sub(-1) ~= "/" then url = url .. "/" end
  local timeout = opts.timeout or 1
  local window = opts.window or 300
  local clock = opts.clock or os.time
  local self = { fetches = 0 }
  local cur, refreshing = nil, false

  local function fetch()
    self.fetches = self.fetches + 1
    local role = opts.role
    if not role then
      local status, body = core.http_get(url, timeout, 4096)
      if not status then return nil, "metadata: " .. tostring(body) end
      if status ~= 200 then return nil, format("metadata: HTTP %d listing roles", status) end
      role = body:match("^%s*([^%s]+)")
      if not role then return nil, "metadata: no CAM role is bound to this instance" end
    end
    local status, body = core.http_get(url .. role, timeout, 65536)
    if not status then return nil, "metadata: " .. tostring(body) end
    if status ~= 200 then return nil, format("metadata: HTTP %d for role %s", status, role) end
    local ok, doc = pcall(cjson.decode, body)
    if not ok or type(doc) ~= "table" then return nil, "metadata: the answer is not JSON" end
    if doc.Code ~= nil and doc.Code ~= "Success" then
      return nil, "metadata: Code " .. tostring(doc.Code)
    end
    -- lua-cjson decodes every number as a float: take integral values back.
    local id, key, tok = doc.TmpSecretId, doc.TmpSecretKey, doc.Token
    local exp = type(doc.ExpiredTime) == "number" and math.tointeger(doc.ExpiredTime)
    if type(id) ~= "string" or type(key) ~= "string" or not exp then
      return nil, "metadata: TmpSecretId, TmpSecretKey or ExpiredTime missing"
    end
    return make("cvm_role", id, key, type(tok) == "string" and tok or nil, exp)
  end

  function self.get()
    local now = clock()
    if cur and now < cur.expiration - window then return cur end
    if refreshing then
      if cur and now < cur.expiration then return cur end
      return nil, "metadata: a refresh is already in progress"
    end
    refreshing = true
    local ok, new, err = pcall(fetch)
    refreshing = false
    if not ok then new, err = nil, "metadata: " .. tostring(new) end
    if new then
      cur = new
      return cur
    end
    if cur and now < cur.expiration then return cur end
    return nil, err
  end

  return self
end

-- chain{p1, p2, ...}: the first provider that answers; it is remembered and
-- asked first next time. The error lists why each source failed.
function _M.chain(list)
  local last
  return provider(function()
    if last then
      local c = last.get(last)
      if c then return c end
    end
    local why = {}
    for _, p in ipairs(list) do
      local c, err = p.get(p)
      if c then
        last = p
        return c
      end
      why[#why + 1] = tostring(err)
    end
    return nil, "no credentials: " .. table.concat(why, "; ")
  end)
end

-- default{getenv =, metadata_url =, ...}: env, then profile, then CVM role.
function _M.default(opts)
  opts = opts or {}
  return _M.chain {
    _M.env { getenv = opts.getenv },
    _M.profile { getenv = opts.getenv },
    _M.cvm_role { url = opts.metadata_url, timeout = opts.metadata_timeout or 1,
      clock = opts.clock },
  }
end

return _M
