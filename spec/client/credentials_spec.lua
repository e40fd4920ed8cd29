-- eidkit.credentials: each source of the default chain against real
-- processes: env (in a child eidkit program), a profile file, and a local
-- metadata server handing out expiring role credentials that the simulator
-- accepts as temporary credentials.
local scratch = require "support.scratch"
local credentials = require "eidkit.credentials"
local client_mod = require "eidkit.client"
local core = require "eidkit.core"
local simproc = require "support.simproc"
local child = require "support.child"
local proc = require "support.proc"
local sim_mod = require "eidkit.sim"

local demo = sim_mod.demo
local TMP_ID, TMP_KEY, TMP_TOKEN = "AKIDtmpRoleCredential000000000000000", "tmpRoleSecretKeyValue0000000000",
  "tmpSessionTokenValue000"

local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

local function closed_url() return "http://127.0.0.1:" .. child.free_port() .. "/" end

local function getenv_of(t) return function(k) return t[k] end end

describe("eidkit.credentials", function()
  local s
  lazy_setup(function()
    s = simproc.start { "--credential", demo.SecretId .. ":" .. demo.SecretKey,
      "--credential", TMP_ID .. ":" .. TMP_KEY .. ":" .. TMP_TOKEN }
  end)
  lazy_teardown(function() if s then simproc.stop(s) end end)

  describe("static", function()
    it("raises on missing keys and prints without the secret", function()
      assert.has_error(function() credentials.static("id") end)
      local c = credentials.static("AKIDx", "the-secret"):get()
      assert.equal("eidkit credentials (static, SecretId AKIDx)", tostring(c))
    end)
  end)

  describe("env", function()
    it("reads the three variables and keeps the table while they do not change", function()
      local vars = { TENCENTCLOUD_SECRET_ID = "AKIDa", TENCENTCLOUD_SECRET_KEY = "k1" }
      local p = credentials.env { getenv = getenv_of(vars) }
      local c1 = p:get()
      assert.same({ "AKIDa", "k1", nil, "env" }, { c1.secret_id, c1.secret_key, c1.token, c1.source })
      assert.equal(c1, p:get())
      vars.TENCENTCLOUD_SESSION_TOKEN = "tok"
      assert.equal("tok", p:get().token)
      assert.same({ nil, "TENCENTCLOUD_SECRET_ID and TENCENTCLOUD_SECRET_KEY are not set" },
        { credentials.env { getenv = getenv_of {} }:get() })
    end)

    it("signs a real call from the environment of an eidkit program", function()
      local script = scratch.file() .. ".lua"
      write(script, ([[
        local c = require("eidkit.client").new { endpoint = %q }
        local res, err = c:check_eid_token_status { EidToken = "x" }
        io.write(err and err.code or "ok")
      ]]):format(s.url))
      local env = { TENCENTCLOUD_SECRET_ID = demo.SecretId, TENCENTCLOUD_SECRET_KEY = demo.SecretKey,
        HOME = "/nonexistent", LUA_PATH = os.getenv("LUA_PATH"), LUA_CPATH = os.getenv("LUA_CPATH") }
      local r = proc.run({ proc.bin(), script }, { env = env })
      assert.equal("InvalidParameterValue.BizTokenIllegal", r.stdout, r.stderr)
      env.TENCENTCLOUD_SECRET_KEY = "wrong"
      r = proc.run({ proc.bin(), script }, { env = env })
      assert.equal("AuthFailure.SignatureFailure", r.stdout, r.stderr)
      os.remove(script)
    end)
  end)

  describe("profile", function()
    local path = scratch.file()
    after_each(function() os.remove(path) end)

    it("reads [default] from TENCENTCLOUD_CREDENTIALS_FILE and calls the simulator", function()
      write(path, "# comment\n[other]\nsecret_id = AKIDother\nsecret_key = x\n\n[default]\n"
        .. "secret_id = " .. demo.SecretId .. "\r\nsecret_key = " .. demo.SecretKey .. "\n")
      local p = credentials.profile { getenv = getenv_of { TENCENTCLOUD_CREDENTIALS_FILE = path } }
      assert.equal(demo.SecretId, p:get().secret_id)
      local c = client_mod.new { endpoint = s.url, credentials = p }
      local _, err = c:check_eid_token_status { EidToken = "x" }
      assert.equal("InvalidParameterValue.BizTokenIllegal", err.code)
    end)

    it("falls back to ~/.tencentcloud/credentials and names what is missing", function()
      local p = credentials.profile { getenv = getenv_of { HOME = "/nonexistent" } }
      assert.same({ nil, "no credentials file at /nonexistent/.tencentcloud/credentials" }, { p:get() })
      write(path, "[default]\nsecret_id = AKIDx\n")
      local _, err = credentials.profile { path = path }:get()
      assert.equal(path .. " [default] lacks secret_id or secret_key", err)
      _, err = credentials.profile { path = path, profile = "prod" }:get()
      assert.equal(path .. " has no [prod] section", err)
    end)
  end)

  describe("cvm_role", function()
    local md, url
    lazy_setup(function()
      md = child.start({ proc.bin(), "spec/support/metadata_server.lua", "eidkit-role", TMP_ID,
        TMP_KEY, TMP_TOKEN, "3600" }, { ready = "port (%d+)" })
      url = "http://127.0.0.1:" .. md.ready .. "/latest/meta-data/cam/security-credentials/"
    end)
    lazy_teardown(function() if md then child.stop(md) end end)

    it("fetches the role's credentials and refreshes them before they expire", function()
      local now = os.time()
      local p = credentials.cvm_role { url = url, window = 300, clock = function() return now end }
      local c1 = assert(p.get())
      assert.same({ TMP_ID, TMP_KEY, TMP_TOKEN, "cvm_role" }, { c1.secret_id, c1.secret_key, c1.token, c1.source })
      assert.is_true(c1.expiration >= now + 3598)
      assert.equal(c1, p.get())
      assert.equal(1, p.fetches)
      now = c1.expiration - 301
      assert.equal(c1, p.get())
      now = c1.expiration - 299 -- inside the window: refresh
      local c2 = assert(p.get())
      assert.equal(2, p.fetches)
      assert.are_not.equal(c1, c2)
    end)

    it("keeps unexpired credentials when a refresh fails, and fails after expiry", function()
      local now = os.time()
      local calls = 0
      local p = credentials.cvm_role { url = url, window = 300, clock = function() return now end }
      local c1 = assert(p.get())
      local real = core.http_get
      core.http_get = function()
        calls = calls + 1
        return nil, "connect: refused"
      end
      local ok, e = pcall(function()
        now = c1.expiration - 10
        assert.equal(c1, p.get())
        now = c1.expiration
        local c, err = p.get()
        assert.is_nil(c)
        assert.equal("metadata: connect: refused", err)
      end)
      core.http_get = real
      assert(ok, e)
      assert.equal(2, calls)
    end)

    it("runs one refresh at a time (single-flight)", function()
      local p = credentials.cvm_role { url = url }
      local real = core.http_get
      local inner = {}
      core.http_get = function(...)
        inner[#inner + 1] = { p.get() } -- a second caller while the first refresh runs
        return real(...)
      end
      local ok, c = pcall(p.get)
      core.http_get = real
      assert(ok, c)
      assert.equal(TMP_ID, c.secret_id)
      assert.equal(1, p.fetches)
      assert.same({ nil, "metadata: a refresh is already in progress" }, inner[1])
    end)

    it("signs calls with the temporary credentials and their token; one fetch for a batch", function()
      local p = credentials.cvm_role { url = url }
      local c = client_mod.new { endpoint = s.url, credentials = p }
      local list = {}
      for i = 1, 50 do list[i] = { "CheckEidTokenStatus", { EidToken = "x" } } end
      for _, r in ipairs(c:batch(list)) do
        assert.equal("InvalidParameterValue.BizTokenIllegal", r.err.code)
      end
      assert.equal(1, p.fetches)
      local status, hits = core.http_get("http://127.0.0.1:" .. md.ready .. "/hits", 1)
      assert.equal(200, status)
      assert.is_true(tonumber(hits) >= 1)
    end)

    it("fails with a bounded timeout when no metadata service answers", function()
      local p = credentials.cvm_role { url = closed_url(), timeout = 0.2 }
      local c, err = p.get()
      assert.is_nil(c)
      assert.matches("^metadata: ", err)
    end)
  end)

  describe("default chain", function()
    it("takes env first, then the profile, and says why each source failed", function()
      local path = scratch.file()
      write(path, "[default]\nsecret_id = AKIDprofile\nsecret_key = k\n")
      local vars = { TENCENTCLOUD_CREDENTIALS_FILE = path }
      local p = credentials.default { getenv = getenv_of(vars), metadata_url = closed_url(),
        metadata_timeout = 0.2 }
      assert.equal("profile", p:get().source)
      os.remove(path)
      local p2 = credentials.default { getenv = getenv_of { HOME = "/nonexistent" },
        metadata_url = closed_url(), metadata_timeout = 0.2 }
      local c, err = p2:get()
      assert.is_nil(c)
      assert.matches("^no credentials: TENCENTCLOUD_SECRET_ID and TENCENTCLOUD_SECRET_KEY are not set; "
        .. "no credentials file at /nonexistent/.tencentcloud/credentials; metadata: ", err)
      local p3 = credentials.default { getenv = getenv_of { TENCENTCLOUD_SECRET_ID = "AKIDenv",
        TENCENTCLOUD_SECRET_KEY = "k", TENCENTCLOUD_CREDENTIALS_FILE = path } }
      assert.equal("env", p3:get().source)
    end)

    it("turns a provider failure into err.code 'credentials' without secrets", function()
      local c = client_mod.new { endpoint = s.url, credentials = { get = function()
        return nil, "nothing here"
      end } }
      local res, err = c:check_eid_token_status { EidToken = "x" }
      assert.is_nil(res)
      assert.same({ "credentials", "nothing here", false }, { err.code, err.message, err.retryable })
      local b = c:batch { { "GetEidResult", { EidToken = "x" } } }
      assert.equal("credentials", b[1].err.code)
    end)
  end)
end)
