-- eidkit.ffi signing inside a real nginx worker (Debian's nginx, its Lua
-- module, OpenResty's LuaJIT), checked against the official TC3 vectors.
-- nginx missing is a failure telling to run scripts/setup-deps, never a skip.
local scratch = require "support.scratch"
local cjson = require "cjson"
local client = require "fixtures.httpd_client"
local nginx = require "support.nginx"
local vectors = require "support.vectors"

-- Each location answers the way a merchant's handler would: the worker reads
-- the request, signs through eidkit.ffi (libeidkit's C signer and its key
-- cache, no C module), and returns what it got.
local SERVER = [[
    location = /sign {
      content_by_lua_block {
        local cjson = require "cjson.safe"
        local eidffi = require "eidkit.ffi"
        ngx.req.read_body()
        local req = cjson.decode(ngx.req.get_body_data() or "")
        local ok, headers, err = pcall(eidffi.sign, req)
        if not ok then ngx.status = 400 ngx.print(headers) return end
        if not headers then ngx.status = 500 ngx.print(tostring(err)) return end
        ngx.header["X-Eidkit-Library"] = eidffi.sign_library_path
        ngx.header["X-Worker-Pid"] = ngx.worker.pid()
        ngx.header["X-Lua"] = jit and jit.version or _VERSION
        ngx.print(headers.Authorization)
      }
    }
    location = /maps {
      content_by_lua_block {
        local eidffi = require "eidkit.ffi"
        assert(eidffi.sign { secret_id = "a", secret_key = "b", action = "X", body = "", timestamp = 0 })
        local f = assert(io.open("/proc/self/maps"))
        ngx.print(f:read("*a"))
        f:close()
      }
    }
    location = /sign-many {
      content_by_lua_block {
        local cjson = require "cjson.safe"
        local eidffi = require "eidkit.ffi"
        ngx.req.read_body()
        local req = cjson.decode(ngx.req.get_body_data() or "")
        local n = tonumber(ngx.var.arg_n)
        local s = assert(eidffi.signer())
        local first = s:sign(req).Authorization
        for _ = 2, n do
          if s:sign(req).Authorization ~= first then ngx.status = 500 ngx.print("differs") return end
        end
        ngx.print(cjson.encode { authorization = first, stats = s:cache_stats() })
        s:close()
      }
    }
]]

local function post(srv, path, body)
  local file = scratch.file()
  local f = assert(io.open(file, "wb"))
  f:write(body)
  f:close()
  local res = client.run { "-X", "POST", "--data-binary", "@" .. file, "--max-time", "10", srv.url .. path }
  os.remove(file)
  return res
end

local function authorization(v)
  return v.authorization or
    ("TC3-HMAC-SHA256 Credential=%s/%s/%s/tc3_request, SignedHeaders=%s, Signature=%s"):format(
      v.secret_id, os.date("!%Y-%m-%d", v.timestamp), v.service,
      table.concat(v.signed_headers, ";"), v.signature)
end

describe("eidkit.ffi in an nginx worker", function()
  local srv, worker_pid

  setup(function()
    srv = nginx.start { server = SERVER }
  end)

  teardown(function()
    if srv then srv:stop() end
    -- Nothing left running: the worker went with its master.
    if worker_pid then
      assert.is_false(os.execute("kill -0 " .. worker_pid .. " 2>/dev/null") == true,
        "nginx worker " .. worker_pid .. " still running")
    end
  end)

  for _, v in ipairs(vectors.vectors) do
    it("signs vector " .. v.name .. " as the official reference does", function()
      local res = post(srv, "/sign", cjson.encode(vectors.request(v)))
      assert.equals(200, res.status, res.body)
      assert.equals(authorization(v), res.body)
      -- Really LuaJIT, really the built libeidkit.
      assert.matches("^LuaJIT", res.headers["x-lua"])
      assert.matches("libeidkit_sign%.so$", res.headers["x-eidkit-library"])
      worker_pid = res.headers["x-worker-pid"]
    end)
  end

  -- docs/PACKAGING.md: a worker that only signs loads libeidkit_sign, which
  -- links only libcrypto.
  it("maps no libcurl, SQLite, hiredis nor libeidkit in a worker that only signs", function()
    local res = client.run { "--max-time", "10", srv.url .. "/maps" }
    assert.equals(200, res.status, res.body)
    assert.matches("/libeidkit_sign%.so[%.%d]*\n", res.body)
    assert.matches("/libluajit", res.body) -- really the worker's maps
    for _, name in ipairs { "libcurl", "libsqlite3", "libhiredis", "libeidkit.so", "libgcrypt" } do
      assert.is_nil(res.body:find("/" .. name, 1, true), name .. " is mapped in the worker")
    end
  end)

  it("reuses derived keys across calls in the worker (the C signer's cache)", function()
    local v = vectors.vectors[1]
    local res = post(srv, "/sign-many?n=500", cjson.encode(vectors.request(v)))
    assert.equals(200, res.status, res.body)
    local got = cjson.decode(res.body)
    assert.equals(authorization(v), got.authorization)
    assert.same({ hits = 499, misses = 1 }, got.stats)
  end)

  it("answers misuse with the field's name, and no secret reaches error.log", function()
    local v = vectors.vectors[1]
    local req = vectors.request(v)
    req.secret_id = nil
    local res = post(srv, "/sign", cjson.encode(req))
    assert.equals(400, res.status)
    assert.matches("secret_id: required", res.body)
    assert.is_nil(res.body:find(v.secret_key, 1, true))
    local log = srv:error_log()
    assert.is_nil(log:find(v.secret_key, 1, true), "the secret key is in error.log")
    assert.is_nil(log:find("%[error%]"), "error.log has errors:\n" .. log)
  end)
end)
