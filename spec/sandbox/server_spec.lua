-- The host keeps serving (issue 6): an HTTP server run by the eidkit program
-- calls a sandboxed hook per request; every runaway hook gets a clear error
-- response and the same process answers the next normal request.
local proc = require "support.proc"
local child = require "support.child"
local client = require "fixtures.httpd_client"

describe("sandboxed hooks behind core.http_server", function()
  local s
  lazy_setup(function()
    s = child.start({ proc.bin(), "spec/sandbox/server.lua" }, { ready = "port (%d+)" })
    s.port = tonumber(s.ready)
  end)
  lazy_teardown(function()
    client.run { "http://127.0.0.1:" .. s.port .. "/stop" }
    assert.equals(0, (child.wait(s)))
  end)

  local function get(path)
    return client.run { "--max-time", "20", "http://127.0.0.1:" .. s.port .. path }
  end

  local cases = {
    { "/loop", "instructions|policy 'loop': instruction budget of 2000000 exceeded at policy.lua:3" },
    { "/pcall_loop", "instructions|policy 'pcall_loop': instruction budget of 2000000 exceeded at policy.lua:4" },
    { "/memory", "memory|policy 'memory': memory limit of 16 MiB exceeded" },
    { "/rep", "memory|policy 'rep': memory limit of 16 MiB exceeded" },
    { "/bytecode", "error|policy 'bytecode': policy.lua:7: precompiled bytecode is refused in the sandbox (text chunks only)" },
    { "/os", "error|policy 'os': policy.lua:8: attempt to index a nil value (global 'os')" },
  }
  for _, case in ipairs(cases) do
    local path, expected = case[1], case[2]
    it("answers " .. path .. " with the sandbox's error, then serves a normal request", function()
      local r = get(path)
      assert.same({ 0, 500 }, { r.code, r.status })
      local body = r.body
      if not expected:find(" at ", 1, true) then body = body:gsub(" at policy%.lua:%d+$", "") end
      assert.equals(expected, body)
      assert.is_true(tonumber(r.headers["x-grown-kib"]) < 1024, "memory kept: " .. r.headers["x-grown-kib"])
      r = get("/ok")
      assert.same({ 0, 200, "ok /ok" }, { r.code, r.status, r.body })
    end)
  end
end)
