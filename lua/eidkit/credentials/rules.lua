-- eidkit.credentials.rules: the credential chain's rules, for both hosts.
-- eidkit.credentials (Lua 5.4, the eidkit program) and
-- eidkit.openresty.credentials (LuaJIT in an nginx worker) build their
-- providers here and supply only their I/O: how to read an environment
-- variable, how to GET a metadata URL, which clock, and (nginx) how to wait
-- for a refresh another request started. So the variable names, the profile
-- file's format and search, the metadata URL and role discovery, the JSON
-- fields, the refresh window, "a failed refresh keeps unexpired
-- credentials", the chain and its order, and every message live here once.
--
-- A provider is a table with :get() -> creds | nil, message, where creds is
-- { secret_id, secret_key, token, expiration, source } (expiration: Unix
-- seconds or nil). Secrets never appear in a message, and creds print
-- without them.
--
-- Lua 5.4 and LuaJIT both load this file: nothing here may use integer
-- division, bitwise operators, utf8 or <close> (eidkit.compat for numbers).
local compat = require "eidkit.compat"

local type, pairs, ipairs, tostring, setmetatable, pcall, error = type, pairs, ipairs, tostring, setmetatable,
  pcall, error
local format, concat, open = string.format, table.concat, io.open

local _M = {}

-- The variables the env provider reads, and the profile's override.
_M.ENV_ID, _M.ENV_KEY, _M.ENV_TOKEN = "TENCENTCLOUD_SECRET_ID", "TENCENTCLOUD_SECRET_KEY",
  "TENCENTCLOUD_SESSION_TOKEN"
_M.ENV_FILE = "TENCENTCLOUD_CREDENTIALS_FILE"
-- The profile file under HOME when ENV_FILE is not set, and its section.
_M.PROFILE_PATH, _M.PROFILE_SECTION = "/.tencentcloud/credentials", "default"
-- The CVM metadata service: GET it for the bound role's name, GET it plus
-- the name for the role's temporary credentials.
_M.METADATA_URL = "http://metadata.tencentyun.com/latest/meta-data/cam/security-credentials/"
-- Refresh this many seconds before ExpiredTime; each GET's timeout; the
-- largest answers read (the role list, the credential document).
_M.WINDOW, _M.TIMEOUT, _M.LIST_MAX, _M.DOC_MAX = 300, 1, 4096, 65536
_M.IN_PROGRESS = "metadata: a refresh is already in progress"

local creds_mt = {
  __tostring = function(c)
    return format("eidkit credentials (%s, SecretId %s)", c.source or "?", c.secret_id or "?")
  end,
}

local function make(source, id, key, token, expiration)
  return setmetatable({ source = source, secret_id = id, secret_key = key,
    token = token ~= "" and token or nil, expiration = expiration }, creds_mt)
end
_M.make = make

local function provider(get)
  return { get = get }
end

-- static(secret_id, secret_key [, token]); misuse raises at the caller.
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

-- env(getenv [, hint]): read at each get(), the table kept while the values
-- do not change. hint: what the host adds when the variables are missing.
function _M.env(getenv, hint)
  local cur
  return provider(function()
    local id, key = getenv(_M.ENV_ID), getenv(_M.ENV_KEY)
    if not id or id == "" or not key or key == "" then
      return nil, _M.ENV_ID .. " and " .. _M.ENV_KEY .. " are not set" .. (hint or "")
    end
    local token = getenv(_M.ENV_TOKEN)
    if not (cur and cur.secret_id == id and cur.secret_key == key and cur.token == token) then
      cur = make("env", id, key, token)
    end
    return cur
  end)
end

-- Parse the INI text of a credentials file; returns section -> {k = v}.
function _M.parse_ini(text)
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

-- profile(opts, getenv [, hint]): opts.path, else ENV_FILE, else
-- HOME .. PROFILE_PATH; section opts.profile or PROFILE_SECTION. The file is
-- read at each get() (a small local read) and parsed again when its text
-- changed, so an edited file is picked up by the next call.
function _M.profile(opts, getenv, hint)
  local section = opts.profile or _M.PROFILE_SECTION
  local cur, cur_text
  return provider(function()
    local path = opts.path or getenv(_M.ENV_FILE)
    if not path then
      local home = getenv("HOME")
      if not home then return nil, "no credentials file (HOME is not set)" .. (hint or "") end
      path = home .. _M.PROFILE_PATH
    end
    local f = open(path, "rb")
    if not f then return nil, "no credentials file at " .. path end
    local text = f:read("*a")
    f:close()
    if cur and text == cur_text then return cur end
    local s = _M.parse_ini(text or "")[section]
    if not s then return nil, format("%s has no [%s] section", path, section) end
    if not s.secret_id or s.secret_id == "" or not s.secret_key or s.secret_key == "" then
      return nil, format("%s [%s] lacks secret_id or secret_key", path, section)
    end
    cur, cur_text = make("profile", s.secret_id, s.secret_key, s.token), text
    return cur
  end)
end

-- The metadata URL as the providers use it: ending in "/".
function _M.metadata_url(url)
  url = url or _M.METADATA_URL
  if type(url) ~= "string" then error("credentials.cvm_role: url must be a string", 3) end
  if url:sub(-1) ~= "/" then url = url .. "/" end
  return url
end

-- The role's credentials from the metadata service, through
-- http_get(url, timeout, max) -> status, body | nil, why.
local function fetch_role(http_get, url, role, timeout, decode)
  if not role then
    local status, body = http_get(url, timeout, _M.LIST_MAX)
    if not status then return nil, "metadata: " .. tostring(body) end
    if status ~= 200 then return nil, format("metadata: HTTP %d listing roles", status) end
    role = body:match("^%s*([^%s]+)")
    if not role then return nil, "metadata: no CAM role is bound to this instance" end
  end
  local status, body = http_get(url .. role, timeout, _M.DOC_MAX)
  if not status then return nil, "metadata: " .. tostring(body) end
  if status ~= 200 then return nil, format("metadata: HTTP %d for role %s", status, role) end
  local ok, doc = pcall(decode, body)
  if not ok or type(doc) ~= "table" then return nil, "metadata: the answer is not JSON" end
  if doc.Code ~= nil and doc.Code ~= "Success" then
    return nil, "metadata: Code " .. tostring(doc.Code)
  end
  -- lua-cjson decodes every number as a float: take integral values back.
  local id, key, tok = doc.TmpSecretId, doc.TmpSecretKey, doc.Token
  local exp = type(doc.ExpiredTime) == "number" and compat.tointeger(doc.ExpiredTime)
  if type(id) ~= "string" or type(key) ~= "string" or not exp then
    return nil, "metadata: TmpSecretId, TmpSecretKey or ExpiredTime missing"
  end
  return make("cvm_role", id, key, type(tok) == "string" and tok or nil, exp)
end

-- cvm_role(opts, hostio): opts.url, opts.role, opts.timeout, opts.window,
-- opts.clock; hostio.http_get (above), hostio.decode (JSON), hostio.clock (the
-- default clock), optionally hostio.wait(seconds) / hostio.wake() (see
-- below) and hostio.unusable (a message: the host cannot make the GETs, and
-- every refresh fails with it).
--
-- Fetches the role name (unless given), then the role's temporary
-- credentials; refreshes once `window` seconds before they expire. A failed
-- refresh keeps credentials that have not expired yet. Only one refresh runs
-- at a time. A get() during a refresh: with hostio.wait (nginx: the other
-- requests of the worker) it waits for that refresh, at most `limit` (the
-- longest two GETs can take: each a connect and a read of `timeout`, plus
-- a second), then takes its result; without (Lua 5.4: a callback or
-- coroutine inside the refresh) it gets the current credentials, or
-- IN_PROGRESS if there are none yet. A refresh older than `limit` is
-- taken as abandoned (nginx ended its request mid-GET, and its coroutine
-- will never clear the flag): the next get() starts another.
function _M.cvm_role(opts, hostio)
  local url = _M.metadata_url(opts.url)
  local timeout = opts.timeout or _M.TIMEOUT
  local window = opts.window or _M.WINDOW
  local clock = opts.clock or hostio.clock
  local wait, wake = hostio.wait, hostio.wake
  local limit = 4 * timeout + 1
  local self = { fetches = 0 }
  -- flight: the refresh running ({started = clock()}), or nil.
  local cur, flight, last_err = nil, nil, nil

  local function fetch()
    self.fetches = self.fetches + 1
    if hostio.unusable then return nil, hostio.unusable end
    return fetch_role(hostio.http_get, url, opts.role, timeout, hostio.decode)
  end

  function self.get()
    local now = clock()
    if cur and now < cur.expiration - window then return cur end
    if flight and now - flight.started > limit then flight = nil end
    if flight then
      if wait then
        wait(limit)
        now = clock()
        if not flight and last_err == nil and cur then return cur end
      end
      if cur and now < cur.expiration then return cur end
      if not flight and last_err then return nil, last_err end
      return nil, _M.IN_PROGRESS
    end
    local mine = { started = now }
    flight = mine
    local ok, new, err = pcall(fetch)
    if flight == mine then flight = nil end
    if not ok then new, err = nil, "metadata: " .. tostring(new) end
    last_err = err
    if new then cur = new end
    if wake then wake() end
    if new then return cur end
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
    return nil, "no credentials: " .. concat(why, "; ")
  end)
end

-- default(P, opts): env, then profile, then the CVM role, built with the
-- host's constructors P (env, profile, cvm_role, chain). opts: getenv,
-- metadata_url, metadata_timeout, clock, and whatever P.cvm_role also reads
-- from its own options (passed on as opts.cvm_role).
function _M.default(P, opts)
  opts = opts or {}
  local role = { url = opts.metadata_url, timeout = opts.metadata_timeout or _M.TIMEOUT, clock = opts.clock }
  for k, v in pairs(opts.cvm_role or {}) do role[k] = v end
  return P.chain {
    P.env { getenv = opts.getenv },
    P.profile { getenv = opts.getenv },
    P.cvm_role(role),
  }
end

return _M
