-- eidkit.openresty.credentials inside a real nginx (Debian's nginx, its Lua
-- module, OpenResty's LuaJIT), against a real `eidkit sim` that verifies
-- every signed call and a real local metadata service
-- (spec/support/metadata_server.lua), all on loopback: each provider of the
-- chain in a worker (env with and without nginx's `env` directives, a
-- profile file re-read when it changes, the CVM role), the chain's order,
-- a rotation of the role's keys seen by the next signed call, one metadata
-- GET for 100 concurrent requests due for a refresh, a failed refresh
-- keeping unexpired keys and a clear error once they expired, and no secret
-- key or session token in error.log or in any answer.
local scratch = require "support.scratch"
local cjson = require "cjson"
local child = require "support.child"
local nginx = require "support.nginx"
local proc = require "support.proc"
local simproc = require "support.simproc"

local MERCHANT = "0NSJ000000000000000000ORCRED"
local ROLE = "eidkit-or-role"
-- Distinctive values: every key and token below is looked for in every
-- answer and in error.log at the end.
local ENV_ID, ENV_KEY = "AKIDorCredsEnv000000000000000000000", "orCredsEnvSecretKeyQ7x1"
local PROFILE_ID, PROFILE_KEY = "AKIDorCredsProfile00000000000000000", "orCredsProfileSecretKeyW2y8"
local ROLES = {
  { "AKIDorCredsRole1000000000000000000", "orCredsRole1SecretKeyE3z9", "orCredsRole1SessionTokenR4a0" },
  { "AKIDorCredsRole2000000000000000000", "orCredsRole2SecretKeyT5b1", "orCredsRole2SessionTokenY6c2" },
  { "AKIDorCredsRole3000000000000000000", "orCredsRole3SecretKeyU7d3", "orCredsRole3SessionTokenI8e4" },
}
local SECRETS = { ENV_KEY, PROFILE_KEY }
for _, r in ipairs(ROLES) do
  SECRETS[#SECRETS + 1], SECRETS[#SECRETS + 2] = r[2], r[3]
end

local ENV_VARS = { "TENCENTCLOUD_SECRET_ID", "TENCENTCLOUD_SECRET_KEY", "TENCENTCLOUD_CREDENTIALS_FILE" }

-- The handlers: providers made once per worker (S), a signed GetEidToken
-- with the provider named by ?p= (or a fresh default chain), reporting which
-- credentials the client signed with; the clock the role provider reads is
-- ngx.time() shifted by /t/shift.
local HTTP = [[
  include %s/nginx/eidkit.conf;
  init_worker_by_lua_block {
    local C = require "eidkit.openresty.credentials"
    local S = { shift = 0, md = "%s", sim = "%s" }
    S.clock = function() return ngx.time() + S.shift end
    S.env, S.profile = C.env(), C.profile()
    S.role = C.cvm_role { url = S.md, clock = S.clock }
    S.cold = C.cvm_role { url = S.md, clock = S.clock, timeout = 3 } -- never asked before its spec
    S.ashift = 0
    S.abandoned = C.cvm_role { url = S.md, timeout = 0.6, clock = function() return ngx.time() + S.ashift end }
    package.loaded["spec.creds"] = S
  }
]]

local SERVER = [[
    include %s/nginx/eidkit_location.conf;
    location = /t/call {
      content_by_lua_block {
        local cjson = require "cjson"
        local C = require "eidkit.openresty.credentials"
        local S = package.loaded["spec.creds"]
        local arg = ngx.req.get_uri_args()
        local p = S[arg.p]
        if arg.p == "default" then
          local vars = { TENCENTCLOUD_CREDENTIALS_FILE = arg.file }
          p = C.default { getenv = arg.env == "real" and os.getenv or function(k) return vars[k] end,
            metadata_url = arg.md or S.md, metadata_timeout = 0.5, clock = S.clock }
        end
        if arg.p == "direct" then -- as a merchant writes it: the module called, default{} itself
          local client = require("eidkit.openresty.client") { endpoint = S.sim, credentials = C.default {} }
          local res, err = client:get_eid_token { MerchantId = "%s" }
          ngx.say(cjson.encode { ok = res ~= nil and type(res.EidToken) == "string", code = not res and err.code or nil })
          return
        end
        local out = {}
        local seen = { get = function()
          local c, e = p:get()
          out.source, out.id = c and c.source, c and c.secret_id
          return c, e
        end }
        ngx.update_time()
        out.t0 = ngx.now()
        local client = require("eidkit.openresty.client").new { endpoint = S.sim, credentials = seen }
        local res, err = client:get_eid_token { MerchantId = "%s" }
        ngx.update_time()
        out.t1 = ngx.now()
        out.ok = res ~= nil and type(res.EidToken) == "string"
        if not res then out.code, out.message, out.text = err.code, err.message, tostring(err) end
        ngx.say(cjson.encode(out))
      }
    }
    location = /t/shift {
      content_by_lua_block {
        package.loaded["spec.creds"].shift = tonumber(ngx.var.arg_by)
        ngx.say("ok")
      }
    }
    location = /t/ashift {
      content_by_lua_block {
        package.loaded["spec.creds"].ashift = tonumber(ngx.var.arg_by)
        ngx.say("ok")
      }
    }
    location = /t/abandon {
      # A client that hangs up ends the request, and its coroutine with it,
      # in the middle of the refresh it started.
      lua_check_client_abort on;
      content_by_lua_block {
        local c, err = package.loaded["spec.creds"].abandoned:get()
        ngx.say(c and c.secret_id or err)
      }
    }
    location = /t/get {
      content_by_lua_block {
        local S = package.loaded["spec.creds"]
        local c, err = S[ngx.var.arg_p]:get()
        ngx.say(c and (c.source .. " " .. c.secret_id .. " " .. tostring(c)) or err)
      }
    }
    location = /t/misc {
      content_by_lua_block {
        local C = require "eidkit.openresty.credentials"
        local function try(f, ...)
          local ok, a, b = pcall(f, ...)
          if not ok then return a end
          return b or tostring(a)
        end
        ngx.say(tostring(require("eidkit").credentials == C))
        ngx.say(try(C.cvm_role, { url = "https://metadata.example/x/" }))
        ngx.say(try(C.cvm_role, { url = "http://127.0.0.1/x/", peer = "host" }))
        ngx.say(try(C.static, "AKIDx"))
        -- A host name while serving: resolving would block, so get() says so.
        ngx.say(try(function() return C.cvm_role { url = "http://metadata.invalid/x/" }:get() end))
        -- A host name with peer: the name is the Host header, peer the address.
        local named = package.loaded["spec.creds"].md:gsub("127%%.0%%.0%%.1", "metadata.invalid")
        local c = assert(C.cvm_role { url = named, peer = "127.0.0.1" }:get())
        ngx.say(c.source, " ", c.secret_id)
        c = assert(C.default { getenv = function() end, metadata_url = named, metadata_peer = "127.0.0.1" }:get())
        ngx.say(c.source, " ", c.secret_id)
        -- A timer may not make subrequests: the refresh fails there, clearly.
        local p = C.cvm_role { url = package.loaded["spec.creds"].md }
        local sema = require("ngx.semaphore").new()
        local msg
        ngx.timer.at(0, function()
          local _, e = p:get()
          msg = e
          sema:post(1)
        end)
        sema:wait(5)
        ngx.say(tostring(msg))
      }
    }
]]

local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

local function escape(v)
  return (v:gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

local function get(url)
  local r = proc.run { "curl", "-s", "--max-time", "30", url }
  assert(r.code == 0, "curl failed: " .. tostring(r.stderr))
  return r.stdout
end

describe("eidkit.openresty.credentials in nginx", function()
  local s, md, mdbase, srv, bare, profile_path
  local answers = {} -- everything nginx answered, for the secrets check

  local function call(server, query)
    local text = get(server.url .. "/t/call?" .. query)
    answers[#answers + 1] = text
    local ok, out = pcall(cjson.decode, text)
    assert(ok, "not JSON: " .. text)
    return out
  end

  local function attempts() return tonumber(get(mdbase .. "/attempts")) end
  local function control(what) get(mdbase .. "/control/" .. what) end
  local function shift(by) assert.equal("ok\n", get(srv.url .. "/t/shift?by=" .. by)) end

  lazy_setup(function()
    local args = { "--merchant", MERCHANT, "--credential", ENV_ID .. ":" .. ENV_KEY,
      "--credential", PROFILE_ID .. ":" .. PROFILE_KEY }
    for _, r in ipairs(ROLES) do
      args[#args + 1], args[#args + 2] = "--credential", table.concat(r, ":")
    end
    s = simproc.start(args)
    -- Serves ROLES[1]; /control/rotate moves to ROLES[2], then ROLES[3].
    md = child.start({ proc.bin(), nginx.root .. "/spec/support/metadata_server.lua", ROLE, ROLES[1][1], ROLES[1][2],
      ROLES[1][3], "3600", table.concat(ROLES[2], ":"), table.concat(ROLES[3], ":") }, { ready = "port (%d+)" })
    mdbase = "http://127.0.0.1:" .. md.ready
    local mdurl = mdbase .. "/latest/meta-data/cam/security-credentials/"
    profile_path = scratch.file()
    write(profile_path, "[default]\nsecret_id = " .. PROFILE_ID .. "\nsecret_key = " .. PROFILE_KEY .. "\n")
    local env = { TENCENTCLOUD_SECRET_ID = ENV_ID, TENCENTCLOUD_SECRET_KEY = ENV_KEY,
      TENCENTCLOUD_CREDENTIALS_FILE = profile_path }
    local opts = {
      http = HTTP:format(nginx.root, mdurl, s.url),
      server = SERVER:format(nginx.root, MERCHANT, MERCHANT),
      env = env,
      worker_connections = 1024,
    }
    -- The same variables in nginx's environment both times; only `env`
    -- passes them on to the workers.
    bare = nginx.start(opts)
    opts.main = "env " .. table.concat(ENV_VARS, ";\nenv ") .. ";"
    srv = nginx.start(opts)
  end)
  lazy_teardown(function()
    if srv then srv:stop() end
    if bare then bare:stop() end
    if md then child.stop(md) end
    if s then simproc.stop(s) end
    if profile_path then os.remove(profile_path) end
  end)

  it("is require('eidkit').credentials in a worker; misuse and unusable setups say what is wrong", function()
    local lines = {}
    for l in get(srv.url .. "/t/misc"):gmatch("[^\n]+") do lines[#lines + 1] = l end
    answers[#answers + 1] = table.concat(lines, "\n")
    assert.equal("true", lines[1])
    assert.matches("credentials.cvm_role: url must be http://host[:port]/path", lines[2], 1, true)
    assert.matches("credentials.cvm_role: peer must be an IPv4 address", lines[3], 1, true)
    assert.matches("credentials.static: secret_id and secret_key must be non-empty strings", lines[4], 1, true)
    assert.equal("metadata: the metadata host metadata.invalid was not resolved: make the provider in"
      .. " init_worker_by_lua*, or give peer = \"IP\"", lines[5])
    assert.equal("cvm_role " .. ROLES[1][1], lines[6])
    assert.equal("cvm_role " .. ROLES[1][1], lines[7])
    assert.matches("^metadata: .*API disabled in the context of ngx.timer", lines[8])
  end)

  describe("env", function()
    it("signs with the variables nginx.conf passes with `env`", function()
      local out = call(srv, "p=env")
      assert.same({ true, "env", ENV_ID }, { out.ok, out.source, out.id })
      assert.is_true(call(srv, "p=direct").ok)
      assert.same({ false, "credentials" }, { call(bare, "p=direct").ok, call(bare, "p=direct").code })
    end)

    it("without `env` directives says the workers do not have them", function()
      local out = call(bare, "p=env")
      assert.same({ false, "credentials" }, { out.ok, out.code })
      assert.equal("TENCENTCLOUD_SECRET_ID and TENCENTCLOUD_SECRET_KEY are not set in this nginx worker (nginx"
        .. " passes a variable to its workers only when nginx.conf has `env TENCENTCLOUD_SECRET_ID;`,"
        .. " `env TENCENTCLOUD_SECRET_KEY;` and, for a token, `env TENCENTCLOUD_SESSION_TOKEN;`)", out.message)
      out = call(bare, "p=profile")
      assert.equal("no credentials file (HOME is not set) in this nginx worker (add `env HOME;` or"
        .. " `env TENCENTCLOUD_CREDENTIALS_FILE;` to nginx.conf, or give path)", out.message)
    end)
  end)

  describe("profile", function()
    it("signs with the file's [default] keys and reads the file again when it changes", function()
      local out = call(srv, "p=profile")
      assert.same({ true, "profile", PROFILE_ID }, { out.ok, out.source, out.id })
      write(profile_path, "[default]\nsecret_id = " .. PROFILE_ID .. "\nsecret_key = notTheKey\n")
      out = call(srv, "p=profile")
      assert.same({ false, "AuthFailure.SignatureFailure" }, { out.ok, out.code })
      write(profile_path, "[default]\nsecret_id = " .. PROFILE_ID .. "\nsecret_key = " .. PROFILE_KEY .. "\n")
      assert.is_true(call(srv, "p=profile").ok)
    end)
  end)

  describe("the default chain", function()
    it("takes env, then the profile, then the CVM role, and says why each failed", function()
      local out = call(srv, "p=default&env=real")
      assert.same({ true, "env", ENV_ID }, { out.ok, out.source, out.id })
      out = call(srv, "p=default&file=" .. escape(profile_path))
      assert.same({ true, "profile", PROFILE_ID }, { out.ok, out.source, out.id })
      out = call(srv, "p=default")
      assert.same({ true, "cvm_role", ROLES[1][1] }, { out.ok, out.source, out.id })
      out = call(srv, "p=default&md=" .. escape("http://127.0.0.1:" .. child.free_port() .. "/"))
      assert.same({ false, "credentials" }, { out.ok, out.code })
      assert.equal("no credentials: TENCENTCLOUD_SECRET_ID and TENCENTCLOUD_SECRET_KEY are not set in this nginx"
        .. " worker (nginx passes a variable to its workers only when nginx.conf has `env TENCENTCLOUD_SECRET_ID;`,"
        .. " `env TENCENTCLOUD_SECRET_KEY;` and, for a token, `env TENCENTCLOUD_SESSION_TOKEN;`); no credentials"
        .. " file (HOME is not set) in this nginx worker (add `env HOME;` or `env TENCENTCLOUD_CREDENTIALS_FILE;`"
        .. " to nginx.conf, or give path); metadata: could not connect (see error.log)", out.message)
    end)
  end)

  describe("cvm_role", function()
    it("signs with the role's keys and token, and the next call after a rotation with the new ones", function()
      local before = attempts()
      local out = call(srv, "p=role")
      assert.same({ true, "cvm_role", ROLES[1][1] }, { out.ok, out.source, out.id })
      out = call(srv, "p=role")
      assert.same({ true, ROLES[1][1] }, { out.ok, out.id })
      assert.equal(before + 1, attempts()) -- kept until the refresh window
      control("rotate")
      control("ttl/7200")
      shift(3400) -- 200 s before ExpiredTime: inside the 300 s window
      out = call(srv, "p=role")
      -- The simulator accepted a signature under ROLES[2]'s SecretId: made
      -- with its key, carrying its token.
      assert.same({ true, "cvm_role", ROLES[2][1] }, { out.ok, out.source, out.id })
      assert.equal(before + 2, attempts())
      assert.equal("cvm_role " .. ROLES[2][1] .. " eidkit credentials (cvm_role, SecretId " .. ROLES[2][1] .. ")\n",
        get(srv.url .. "/t/get?p=role"))
    end)

    it("refreshes once for 100 concurrent requests due for it; all wait and sign with the new keys", function()
      control("rotate")
      control("ttl/14400")
      control("delay/500")
      shift(7000) -- ROLES[2] expires at +7200: due, not expired
      local before = attempts()
      local argv = { "curl", "-s", "--parallel", "--parallel-immediate", "--parallel-max", "100", "--max-time", "20" }
      for _ = 1, 100 do
        argv[#argv + 1] = srv.url .. "/t/call?p=role"
        argv[#argv + 1] = "-w"
        argv[#argv + 1] = "\n"
      end
      local r = proc.run(argv)
      control("delay/0")
      answers[#answers + 1] = r.stdout
      local n, first_end, started = 0, math.huge, {}
      for line in r.stdout:gmatch("[^\n]+") do
        local out = cjson.decode(line)
        n = n + 1
        assert.same({ true, "cvm_role", ROLES[3][1] }, { out.ok, out.source, out.id }, line)
        first_end = math.min(first_end, out.t1)
        started[#started + 1] = out.t0
      end
      assert.equal(100, n)
      assert.equal(before + 1, attempts())
      -- They were concurrent: many had started before any had finished, so
      -- they found the refresh running and waited for it.
      local early = 0
      for _, t0 in ipairs(started) do
        if t0 < first_end then early = early + 1 end
      end
      assert.is_true(early >= 10, early .. " requests started before the first answer")
    end)

    it("keeps unexpired keys when a refresh fails, and fails clearly once they expired", function()
      control("fail/on")
      local before = attempts()
      shift(14200) -- ROLES[3] expires at +14400: due
      local out = call(srv, "p=role")
      assert.same({ true, ROLES[3][1] }, { out.ok, out.id })
      assert.is_true(attempts() > before)
      shift(14500) -- expired
      out = call(srv, "p=role")
      assert.same({ false, "credentials", "metadata: HTTP 500 for role " .. ROLE },
        { out.ok, out.code, out.message })
      assert.equal("credentials: metadata: HTTP 500 for role " .. ROLE, out.text)
      control("fail/off")
      out = call(srv, "p=role")
      assert.same({ true, ROLES[3][1] }, { out.ok, out.id })
    end)

    it("shares a failed first fetch with the requests that waited for it", function()
      control("fail/on")
      control("delay/1500") -- long enough for all 20 to arrive while it runs
      local before = attempts()
      local argv = { "curl", "-s", "--parallel", "--parallel-immediate", "--parallel-max", "20", "--max-time", "20" }
      for _ = 1, 20 do
        argv[#argv + 1] = srv.url .. "/t/get?p=cold"
      end
      local r = proc.run(argv)
      control("delay/0")
      control("fail/off")
      answers[#answers + 1] = r.stdout
      local n = 0
      for line in r.stdout:gmatch("[^\n]+") do
        n = n + 1
        assert.equal("metadata: HTTP 500 for role " .. ROLE, line)
      end
      assert.equal(20, n)
      assert.equal(before + 1, attempts())
      assert.matches("^cvm_role " .. ROLES[3][1], get(srv.url .. "/t/get?p=cold"))
    end)
  end)

  it("starts a new refresh when the request running one was ended mid-GET", function()
    control("delay/2500")
    local before = attempts()
    local r = proc.run { "curl", "-s", "--max-time", "0.3", srv.url .. "/t/abandon" }
    assert.equal(28, r.code) -- curl gave up: nginx ends that request
    control("delay/0")
    -- Until the abandoned refresh is older than its limit (4 x 0.6 s + 1 s),
    -- requests wait for it and then find none finished.
    assert.equal("metadata: a refresh is already in progress\n", get(srv.url .. "/t/abandon"))
    assert.equal("ok\n", get(srv.url .. "/t/ashift?by=6"))
    assert.equal(ROLES[3][1] .. "\n", get(srv.url .. "/t/abandon"))
    assert.equal(before + 2, attempts())
  end)

  it("keeps every secret key and session token out of error.log and out of every answer", function()
    assert.is_true(#answers >= 15)
    local texts = { srv:error_log(), bare:error_log(), table.unpack(answers) }
    for _, text in ipairs(texts) do
      for _, secret in ipairs(SECRETS) do
        assert.is_nil(text:find(secret, 1, true), "a secret in: " .. text:sub(1, 300))
      end
    end
    -- What the failures above wrote there: nginx's own upstream lines, not ours.
    assert.matches("connect() failed", srv:error_log(), 1, true)
  end)
end)
