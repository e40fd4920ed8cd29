-- The gateway's routes through a real `eidkit serve --sim` process: the
-- whole flow against the in-process simulator (played through its control
-- API), replays, the error answers, and what the process writes (stdout,
-- stderr, the access log) checked for secrets, names and ID numbers.
local scratch = require "support.scratch"
local sp = require "support.serveproc"
local sim_mod = require "eidkit.sim"

local NAME, IDCARD = "韦小宝", "11204416541220243X"

describe("eidkit serve --sim", function()
  local s, dir, log_path, config
  lazy_setup(function()
    dir = scratch.file()
    log_path = dir .. ".access"
    config = dir .. ".conf.lua"
    local f = assert(io.open(config, "w"))
    f:write([[
      -- a --config file: Lua, run in an empty environment
      return {
        token_limit = "off",
        sweep_interval = 0,
        h5_return_url = "https://shop.example/verified",
        token_fields = { "Name", "IdCard" },
        token_params = { Config = { InputType = "1" } },
        result_fields = { "billable", "request_id" },
      }
    ]])
    f:close()
    s = sp.start { "--sim", "--config", config, "--ledger", "sqlite:" .. dir .. ".db", "--access-log", log_path }
  end)
  lazy_teardown(function()
    if s then sp.stop(s) end
    for _, p in ipairs { dir, config, log_path, dir .. ".db", dir .. ".db-wal", dir .. ".db-shm" } do os.remove(p) end
  end)

  it("prints where it listens, then where the simulator is, and warns about the demo authorize", function()
    assert.matches("^http://127%.0%.0%.1:%d+$", s.url)
    assert.matches("^http://127%.0%.0%.1:%d+$", s.sim_url)
    local _, err = sp.output(s)
    assert.matches("demo authorize: .* never use in production", err)
    -- The words are eidkit.gateway.settings', which examples/openresty/run prints too.
    assert.truthy(err:find("eidkit serve: " .. require("eidkit.gateway.settings").DEMO_WARNING .. "\n", 1, true))
  end)

  it("runs a verification end to end: token, the user passes, result passed, replayed", function()
    local r = sp.request(s, "POST", "/eid/token", { user = "alice", body = { Name = NAME, IdCard = IDCARD } })
    assert.equals(200, r.status, r.body)
    local tok = r.json.EidToken
    assert.matches("^[%w%-]+$", tok)
    assert.matches("^" .. s.sim_url:gsub("%p", "%%%0") .. "/sim/h5%?token=", (r.json.Url:gsub("\\/", "/")))
    assert.is_true(math.type(r.json.expires_at) == "integer" or r.json.expires_at > 0)
    -- before the user finishes: pending
    r = sp.request(s, "POST", "/eid/result", { user = "alice", body = { EidToken = tok } })
    assert.same({ 200, "pending" }, { r.status, r.json.status })
    sp.sim_finish(s, tok, 0)
    r = sp.request(s, "POST", "/eid/result", { user = "alice", body = { EidToken = tok } })
    assert.same({ 200, "passed", "passed", 0, false }, { r.status, r.json.status, r.json.reason, r.json.code,
      r.json.retry_with_new_token })
    assert.is_string(r.json.request_id)
    -- replay: the same outcome, nothing consumed twice
    local again = sp.request(s, "POST", "/eid/result", { user = "alice", body = { EidToken = tok } })
    assert.same({ 200, "passed", "passed" }, { again.status, again.json.status, again.json.reason })
    -- the H5 landing redirects to the merchant's page with the status
    r = sp.request(s, "GET", "/eid/h5/return?token=" .. tok, { user = "alice" })
    assert.equals(303, r.status)
    assert.equals("https://shop.example/verified?status=passed&reason=passed", r.headers.location)
  end)

  it("fails a user who fails, with the reason", function()
    local tok = sp.token(s, "dave")
    sp.sim_finish(s, tok, 2016)
    local r = sp.request(s, "POST", "/eid/result", { user = "dave", body = { EidToken = tok } })
    assert.same({ 200, "failed", "identity_rejected", 2016 }, { r.status, r.json.status, r.json.reason, r.json.code })
  end)

  it("answers 403, 404, 401, 405, 400 and 413 in the gateway's format", function()
    local tok = sp.token(s, "erin")
    local cases = {
      { 403, "wrong_subject", "POST", "/eid/result", { user = "mallory", body = { EidToken = tok } } },
      { 404, "unknown_token", "POST", "/eid/result", { user = "erin", body = { EidToken = "NOPE-1" } } },
      { 404, "not_found", "GET", "/nope", {} },
      { 401, "unauthorized", "POST", "/eid/token", {} },
      { 405, "method_not_allowed", "GET", "/eid/token", { user = "erin" } },
      { 400, "bad_request", "POST", "/eid/result", { user = "erin", body = "{not json" } },
      { 400, "bad_request", "POST", "/eid/token", { user = "erin", body = { Phone = "1" } } },
      { 413, "too_large", "POST", "/eid/result", { user = "erin", body = ("x"):rep(16385) } },
    }
    for _, c in ipairs(cases) do
      local r = sp.request(s, c[3], c[4], c[5])
      assert.equals(c[1], r.status, c[4] .. ": " .. r.body)
      assert.equals(c[2], r.json and r.json.error.code, r.body)
    end
    -- a body of exactly 16 KiB is read (and then judged: not JSON)
    local r = sp.request(s, "POST", "/eid/result", { user = "erin", body = ("x"):rep(16384) })
    assert.equals(400, r.status)
    -- chunked, without Content-Length: refused once past the limit
    r = sp.request(s, "POST", "/eid/result", { user = "erin", body = ("y"):rep(40000),
      headers = { ["Transfer-Encoding"] = "chunked" } })
    assert.same({ 413, "too_large" }, { r.status, r.json and r.json.error.code })
  end)

  it("serves /healthz and /metrics", function()
    local r = sp.request(s, "GET", "/healthz")
    assert.same({ 200, "ok" }, { r.status, r.json.status })
    r = sp.request(s, "GET", "/metrics")
    assert.equals(200, r.status)
    assert.matches('eidkit_gateway_requests_total{route="/eid/result",status="200"}', r.body, 1, true)
    assert.matches("eidkit_ledger_up 1", r.body, 1, true)
    assert.matches('eidkit_upstream_duration_seconds_count{action="GetEidToken"}', r.body, 1, true)
  end)

  it("writes an access log of JSON lines, and nothing secret anywhere", function()
    local tok = sp.token(s, "frank")
    sp.request(s, "POST", "/eid/result", { user = "frank", body = { EidToken = tok } })
    local cjson = require "cjson"
    local log = sp.wait_for(function()
      local text = require("support.proc").read(log_path) or ""
      for line in text:gmatch("[^\n]+") do
        local e = cjson.decode(line)
        if e.path == "/eid/result" and e.token == tok:sub(1, 8) .. "..." then return text end
      end
    end, 5, "the access log line of the result")
    local n = 0
    for line in log:gmatch("[^\n]+") do
      local entry = cjson.decode(line)
      assert.is_number(entry.status)
      assert.is_string(entry.path)
      n = n + 1
    end
    assert.is_true(n >= 3)
    assert.matches('"token":"' .. tok:sub(1, 8) .. '...', log, 1, true)
    local out, err = sp.output(s)
    for _, text in ipairs { log, out, err } do
      for _, secret in ipairs { NAME, IDCARD, sim_mod.demo.SecretKey, tok, "Authorization", "Signature=" } do
        assert.is_nil(text:find(secret, 1, true), "found " .. secret)
      end
    end
  end)
end)
