-- eidkit.gateway driven through gw:handle(req) against a real `eidkit sim`
-- (eidkit.testing, clock frozen) and real ledgers: SQLite always, Redis where
-- the ledger going away matters. The gateway's own clock is frozen too, so
-- the rate limits are exact.
local testing = require "eidkit.testing"
local gateway = require "eidkit.gateway"
local metrics = require "eidkit.metrics"
local ledger_mod = require "eidkit.ledger"
local redis = require "support.redis"
local promtext = require "support.promtext"
local cjson = require "cjson"

local T = 1700000000
-- The identity sent where the gateway accepts one: it must never come back.
local NAME, IDCARD = "韦小宝", "11204416541220243X"

-- The spec's authorize policy: the subject is the X-User header; X-Raise
-- makes the hook raise.
local policy = {
  authorize = function(req)
    if req.headers["x-raise"] then error("authorize blew up for " .. tostring(req.headers["x-user"])) end
    return req.headers["x-user"] or false, "no X-User header"
  end,
}

local function decode(body)
  local ok, v = pcall(cjson.decode, body)
  return ok and v or nil
end

local function keys(t)
  local list = {}
  for k in pairs(t) do list[#list + 1] = k end
  table.sort(list)
  return list
end

describe("eidkit.gateway", function()
  local sim
  local now = T -- the gateway's clock
  local seen = {} -- every response body, Location and access log line, for the last check

  lazy_setup(function() sim = testing.sim { now = T, seed = 11 } end)
  lazy_teardown(function() if sim then sim:stop() end end)
  before_each(function() now = T end)
  after_each(function() if sim then sim:clear_faults() end end)

  -- A gateway on a new flow (a new kit client whose logger records into the
  -- gateway's metrics, and a new SQLite ledger, unless given). Returns
  -- {gw, flow, reg, lines (access log), errors (on_error)}.
  local function make(opts, fopts)
    opts, fopts = opts or {}, fopts or {}
    local reg = opts.metrics or metrics.new()
    local f = {}
    for k, v in pairs(fopts) do f[k] = v end
    f.policy = f.policy or policy
    f.client = f.client or sim:client { logger = gateway.client_logger(reg), retry = fopts.retry }
    f.retry = nil
    local flow = sim:flow(f)
    local g = { flow = flow, reg = reg, lines = {}, errors = {} }
    local o = { flow = flow, metrics = reg, clock = function() return now end,
      access_log = function(line) g.lines[#g.lines + 1] = line end,
      on_error = function(m) g.errors[#g.errors + 1] = m end }
    for k, v in pairs(opts) do o[k] = v end
    g.gw = gateway(o)
    seen[#seen + 1] = g.lines
    return g
  end

  local function request(g, method, path, body, user, headers)
    local h = { ["X-User"] = user }
    for k, v in pairs(headers or {}) do h[k] = v end
    if type(body) == "table" then body = cjson.encode(body) end
    local resp = g.gw:handle { method = method, path = path, headers = h, body = body,
      remote_addr = "192.0.2.7" }
    seen[#seen + 1] = resp.body .. " " .. tostring(resp.headers.Location)
    return resp, decode(resp.body)
  end
  local function post(g, path, body, user, headers) return request(g, "POST", path, body, user, headers) end
  local function get(g, path, user, headers) return request(g, "GET", path, nil, user, headers) end

  local function assert_error(resp, status, code, field)
    assert.equals(status, resp.status, resp.body)
    assert.equals("application/json", resp.headers["Content-Type"])
    local e = assert(decode(resp.body), resp.body).error
    assert.same(field and { "code", "field", "message" } or { "code", "message" }, keys(e))
    assert.equals(code, e.code)
    if field then assert.equals(field, e.field) end
    return e
  end

  local function token_for(g, user)
    local resp, body = post(g, "/eid/token", "{}", user)
    assert.equals(200, resp.status, resp.body)
    return body.EidToken
  end

  local function scrape(g)
    local resp = get(g, "/metrics")
    assert.equals(200, resp.status)
    assert.equals("text/plain; version=0.0.4; charset=utf-8", resp.headers["Content-Type"])
    return promtext.parse(resp.body), resp.body
  end

  describe("new", function()
    it("raises on misuse, naming the option", function()
      local flow = sim:flow { policy = policy }
      local function with(k, v)
        return function() gateway { flow = flow, [k] = v } end
      end
      assert.has_error(function() gateway() end, "bad argument #1 to 'gateway' (expected a table of options)")
      assert.has_error(function() gateway {} end, "bad option 'flow' (expected an eidkit.flow)")
      assert.has_error(function() gateway { flow = 5 } end, "bad option 'flow' (expected an eidkit.flow)")
      assert.has_error(with("tokn_fields", {}), "bad option 'tokn_fields' (unknown option)")
      assert.has_error(with("token_fields", { "Name", "Phone" }),
        "bad option 'token_fields' (unknown field 'Phone'; expected some of Config, Extra, IdCard, Name, RedirectUrl)")
      assert.has_error(with("result_fields", { "Text" }),
        "bad option 'result_fields' (unknown field 'Text'; expected some of EidToken, attempts, billable, charges, intention, request_id, result)")
      assert.has_error(with("token_params", { Name = NAME }),
        "bad option 'token_params' (Name: not a field a gateway may fix; Config, Extra, RedirectUrl)")
      assert.has_error(with("token_params", { Config = "4" }), "bad option 'token_params' (Config: expected table)")
      assert.has_error(with("h5_return_url", "javascript:alert(1)"),
        "bad option 'h5_return_url' (expected an http(s) URL or an absolute path, without control characters)")
      assert.has_error(with("h5_return_url", "https://shop.example/\r\nSet-Cookie: x"),
        "bad option 'h5_return_url' (expected an http(s) URL or an absolute path, without control characters)")
      assert.has_error(with("h5_return_url", "//evil.example/"),
        "bad option 'h5_return_url' (expected an http(s) URL or an absolute path, without control characters)")
      assert.has_error(with("token_limit", { count = 0, per = 60 }),
        "bad option 'token_limit' (expected {count = n >= 1, per = seconds > 0} or false)")
      assert.has_error(with("upstream_limits", { CheckEidTokenStatus = { rate = 1, burst = 1 } }),
        "bad option 'upstream_limits' (unknown action 'CheckEidTokenStatus'; GetEidToken, GetEidResult)")
      assert.has_error(with("upstream_limits", { GetEidToken = { rate = 0, burst = 1 } }),
        "bad option 'upstream_limits.GetEidToken' (expected {rate = tokens per second > 0, burst = n >= 1})")
      assert.has_error(with("max_body", 0), "bad option 'max_body' (expected an integer 1..1048576 bytes)")
      assert.has_error(with("metrics", {}), "bad option 'metrics' (expected an eidkit.metrics registry)")
      assert.has_error(with("limiter", {}),
        "bad option 'limiter' (expected an object with take(key, rate, burst, now))")
      assert.has_error(with("access_log", "stderr"), "bad option 'access_log' (expected a function)")
      assert.is_table(require("eidkit").gateway { flow = flow }) -- the facade
    end)
  end)

  describe("POST /eid/token", function()
    it("starts a flow for the authorized subject: 200 EidToken, Url, expires_at", function()
      local g = make { token_params = { Config = { InputType = "1" } } }
      local resp, body = post(g, "/eid/token", "", "user-1")
      assert.equals(200, resp.status, resp.body)
      assert.same({ "EidToken", "Url", "expires_at" }, keys(body))
      assert.equals("no-store", resp.headers["Cache-Control"])
      assert.equals(T + sim.token_ttl, body.expires_at)
      local rec = assert(g.flow.ledger:get(body.EidToken))
      assert.same({ "issued", "user-1" }, { rec.state, rec.subject })
    end)

    it("takes the identity fields only when token_fields lets it, and never echoes them", function()
      local g = make { token_fields = { "Name", "IdCard", "Config", "Extra" } }
      local resp, body = post(g, "/eid/token",
        { Name = NAME, IdCard = IDCARD, Config = { InputType = "4" }, Extra = "order-1" }, "user-1")
      assert.equals(200, resp.status, resp.body)
      assert.equals("order-1", g.flow.ledger:get(body.EidToken).Extra)
      assert.is_nil(resp.body:find(NAME, 1, true))
      assert.is_nil(resp.body:find(IDCARD, 1, true))
      -- The default gateway takes none of them.
      local d = make()
      assert_error(post(d, "/eid/token", { Name = NAME }, "user-1"), 400, "bad_request", "Name")
      local e = assert_error(post(d, "/eid/token", { Config = {} }, "user-1"), 400, "bad_request", "Config")
      assert.equals("Config: not accepted by this gateway", e.message)
    end)

    it("answers 400 naming the field for malformed JSON, wrong types and unknown fields", function()
      local g = make { token_fields = { "Name", "IdCard", "Config", "Extra", "RedirectUrl" } }
      local cases = {
        { "{", "body", "body: expected a JSON object" },
        { "[1,2]", "body", "body: expected a JSON object" },
        { "null", "body", "body: expected a JSON object" },
        { '"text"', "body", "body: expected a JSON object" },
        { '{"Name": NaN}', "body", "body: expected a JSON object" },
        { '{"Phone": "1"}', "Phone", "Phone: unknown field" },
        { '{"<b>x</b>": "1"}', "body", "body: unknown field" },
        { '{"Name": 5}', "Name", "Name: expected a string" },
        { '{"IdCard": ["x"]}', "IdCard", "IdCard: expected a string" },
        { '{"Config": "4"}', "Config", "Config: expected a JSON object" },
        { '{"Config": [1]}', "Config", "Config: expected a JSON object" },
        { '{"Config": {"Speed": 1e999}}', "Config", "Config: numbers must be finite" },
        { '{"RedirectUrl": false}', "RedirectUrl", "RedirectUrl: expected a string" },
        -- eidkit.flow's own rule for Extra, reported as the caller's mistake
        { cjson.encode { Extra = ("x"):rep(1025) }, "Extra",
          "Extra: expected at most 1024 bytes without control characters" },
      }
      for _, c in ipairs(cases) do
        local e = assert_error(post(g, "/eid/token", c[1], "user-1"), 400, "bad_request", c[2])
        assert.equals(c[3], e.message)
      end
      -- JSON null is an absent field.
      local resp = post(g, "/eid/token", '{"Extra": null}', "user-1")
      assert.equals(200, resp.status, resp.body)
    end)

    it("answers 401 when authorize refuses and 500 policy when it raises or returns junk", function()
      local g = make()
      local e = assert_error(post(g, "/eid/token", "{}", nil), 401, "unauthorized")
      assert.equals("the request is not authorized", e.message)
      e = assert_error(post(g, "/eid/token", "{}", "user-1", { ["X-Raise"] = "1" }), 500, "policy")
      assert.equals("the merchant policy failed", e.message) -- not the hook's words
      local junk = make(nil, { policy = { authorize = function() return 42 end } })
      assert_error(post(junk, "/eid/token", "{}", "user-1"), 500, "policy")
    end)

    it("limits tokens per subject: 429 with Retry-After until the bucket refills", function()
      local g = make { token_limit = { count = 2, per = 60 } }
      token_for(g, "user-1")
      token_for(g, "user-1")
      local resp = post(g, "/eid/token", "{}", "user-1")
      assert_error(resp, 429, "rate_limited")
      assert.equals("30", resp.headers["Retry-After"])
      token_for(g, "user-2") -- another subject has its own bucket
      now = T + 29
      assert.equals("1", post(g, "/eid/token", "{}", "user-1").headers["Retry-After"])
      now = T + 30
      token_for(g, "user-1")
      local f = scrape(g)
      assert.equals(2, promtext.value(f, "eidkit_gateway_rate_limited_total", { limit = "subject" }))
    end)

    it("keeps GetEidToken under the upstream bucket: 429 with Retry-After >= 1", function()
      local g = make { token_limit = false, upstream_limits = { GetEidToken = { rate = 2, burst = 1 } } }
      token_for(g, "user-1")
      local resp = post(g, "/eid/token", "{}", "user-2")
      assert_error(resp, 429, "rate_limited")
      assert.equals("1", resp.headers["Retry-After"]) -- 0.5 s, rounded up
      now = T + 0.5
      token_for(g, "user-2")
      local f = scrape(g)
      assert.equals(1, promtext.value(f, "eidkit_gateway_rate_limited_total", { limit = "GetEidToken" }))
    end)

    it("gives the subject's token back when the upstream bucket then refuses", function()
      local g = make { token_limit = { count = 2, per = 60 },
        upstream_limits = { GetEidToken = { rate = 2, burst = 1 } } }
      token_for(g, "user-1") -- the subject has 1 left, the upstream bucket none
      assert_error(post(g, "/eid/token", "{}", "user-1"), 429, "rate_limited")
      now = T + 0.5
      token_for(g, "user-1") -- the refused request cost the subject nothing
      now = T + 1
      local resp = post(g, "/eid/token", "{}", "user-1")
      assert_error(resp, 429, "rate_limited") -- now it is the subject's own limit
      local f = scrape(g)
      assert.equals(1, promtext.value(f, "eidkit_gateway_rate_limited_total", { limit = "GetEidToken" }))
      assert.equals(1, promtext.value(f, "eidkit_gateway_rate_limited_total", { limit = "subject" }))
      assert.same({}, g.errors)
    end)

    it("takes nothing from either bucket for a field flow:start refuses (400)", function()
      local g = make { token_fields = { "Extra" }, token_limit = { count = 1, per = 60 },
        upstream_limits = { GetEidToken = { rate = 1, burst = 1 } } }
      local long = cjson.encode { Extra = ("x"):rep(1025) }
      for _ = 1, 3 do assert_error(post(g, "/eid/token", long, "user-1"), 400, "bad_request", "Extra") end
      token_for(g, "user-1")
      assert_error(post(g, "/eid/token", "{}", "user-2"), 429, "rate_limited") -- upstream: spent now
      now = T + 1
      assert_error(post(g, "/eid/token", "{}", "user-1"), 429, "rate_limited") -- subject: spent now
    end)

    it("keeps the token when the limiter cannot give it back, and says so", function()
      -- A limiter of the merchant's own without give: the answer is the same 429.
      local refusing = { take = function(_, key) return key:match("^subject:") ~= nil, 3 end }
      local g = make { limiter = refusing }
      assert_error(post(g, "/eid/token", "{}", "user-1"), 429, "rate_limited")
      assert.same({}, g.errors)
      -- One whose give fails: reported, and the answer stands.
      local gives = 0
      local failing = { take = refusing.take, give = function()
        gives = gives + 1
        return nil, "limiter store gone"
      end }
      g = make { limiter = failing }
      assert_error(post(g, "/eid/token", "{}", "user-1"), 429, "rate_limited")
      assert.equals(1, gives)
      assert.equals(1, #g.errors)
      assert.matches("failed to give a token back: limiter store gone", g.errors[1])
      failing.give = function() error("limiter blew up") end
      g = make { limiter = failing }
      assert_error(post(g, "/eid/token", "{}", "user-1"), 429, "rate_limited")
      assert.matches("limiter blew up", g.errors[1])
    end)

    it("answers 502 or 504 when Tencent cannot be reached, and passes Tencent's own code through", function()
      local g = make(nil, { retry = { max_attempts = 1 } })
      sim:faults { { Action = "GetEidToken", Kind = "reset" } }
      assert_error(post(g, "/eid/token", "{}", "user-1"), 502, "reset")
      sim:faults { { Action = "GetEidToken", Kind = "http", Status = 503 } }
      assert_error(post(g, "/eid/token", "{}", "user-1"), 502, "http_503")
      sim:faults { { Action = "GetEidToken", Kind = "malformed" } }
      assert_error(post(g, "/eid/token", "{}", "user-1"), 502, "bad_response")
      sim:faults { { Action = "GetEidToken", Kind = "error", Code = "UnauthorizedOperation.Arrears" } }
      local e = assert_error(post(g, "/eid/token", "{}", "user-1"), 502, "UnauthorizedOperation.Arrears")
      assert.equals("the verification service refused the request", e.message)
      sim:faults { { Action = "GetEidToken", Kind = "throttle" } }
      local resp = post(g, "/eid/token", "{}", "user-1")
      assert_error(resp, 429, "RequestLimitExceeded")
      assert.equals("1", resp.headers["Retry-After"])
      local stats = assert(g.flow.ledger:stats())
      assert.equals(0, stats.total) -- nothing was issued
    end)

    it("answers 504 when GetEidToken outlives the client's timeout", function()
      local g = make(nil, { client = sim:client { timeout = 0.3, deadline = 0.3, retry = { max_attempts = 1 } } })
      sim:faults { { Action = "GetEidToken", Kind = "latency", Ms = 1500 } }
      assert_error(post(g, "/eid/token", "{}", "user-1"), 504, "timeout")
    end)
  end)

  describe("POST /eid/result", function()
    it("answers the outcome, only status, code, reason and retry_with_new_token", function()
      local g = make()
      local tok = token_for(g, "user-1")
      sim:pass(tok)
      local resp, body = post(g, "/eid/result", { EidToken = tok }, "user-1")
      assert.equals(200, resp.status, resp.body)
      assert.same({ status = "passed", code = 0, reason = "passed", retry_with_new_token = false }, body)
      assert.equals("consumed", g.flow.ledger:get(tok).state)

      local tok2 = token_for(g, "user-1")
      sim:fail(tok2, 2016)
      resp, body = post(g, "/eid/result", { EidToken = tok2 }, "user-1")
      assert.equals(200, resp.status)
      assert.same({ status = "failed", code = 2016, reason = "identity_rejected", retry_with_new_token = false }, body)

      local tok3 = token_for(g, "user-1")
      resp = post(g, "/eid/result", { EidToken = tok3 }, "user-1")
      assert.equals(200, resp.status)
      assert.matches('"code":null', resp.body, 1, true)
      assert.same({ "pending", "no_result" }, { decode(resp.body).status, decode(resp.body).reason })
    end)

    it("replays a consumed token's outcome, from the same gateway and from a fresh one", function()
      local g = make()
      local tok = token_for(g, "user-1")
      sim:fail(tok, 1001)
      local _, first = post(g, "/eid/result", { EidToken = tok }, "user-1")
      assert.same({ status = "failed", code = 1001, reason = "user_retry", retry_with_new_token = true }, first)
      sim:pass(tok) -- the user tries again on the settled token: the verdict stands
      local resp, again = post(g, "/eid/result", { EidToken = tok }, "user-1")
      assert.equals(200, resp.status)
      assert.same(first, again)
      local other = make(nil, { ledger = g.flow.ledger })
      resp, again = post(other, "/eid/result", { EidToken = tok }, "user-1")
      assert.equals(200, resp.status, resp.body)
      assert.same(first, again)
    end)

    it("answers 403 for another user's token and 404 for an unknown one", function()
      local g = make()
      local tok = token_for(g, "user-1")
      sim:pass(tok)
      assert_error(post(g, "/eid/result", { EidToken = tok }, "user-2"), 403, "wrong_subject")
      assert_error(post(g, "/eid/result", { EidToken = "3F2504E0-4F89-11D3-9A0C-0305E82C3301" }, "user-1"),
        404, "unknown_token")
      assert_error(post(g, "/eid/result", { EidToken = "../../etc/passwd" }, "user-1"), 404, "unknown_token")
      -- The rightful owner still gets the verdict.
      assert.equals("passed", select(2, post(g, "/eid/result", { EidToken = tok }, "user-1")).status)
    end)

    it("answers 400 naming EidToken, and 401 before reading the body", function()
      local g = make()
      for _, body in ipairs { "{}", '{"EidToken": 5}', '{"EidToken": null}', '{"EidToken": ["a"]}' } do
        assert_error(post(g, "/eid/result", body, "user-1"), 400, "bad_request", "EidToken")
      end
      assert_error(post(g, "/eid/result", '{"EidToken": "a", "InfoType": "0"}', "user-1"), 400,
        "bad_request", "InfoType")
      assert_error(post(g, "/eid/result", "{oops", "user-1"), 400, "bad_request", "body")
      assert_error(post(g, "/eid/result", "{oops", nil), 401, "unauthorized")
    end)

    it("adds the outcome fields result_fields names, and no others", function()
      local g = make({ result_fields = { "billable", "attempts" } }, { policy = {
        authorize = policy.authorize, keep_result = true, info_type = "0" } })
      local tok = token_for(g, "user-1")
      sim:pass(tok)
      local resp, body = post(g, "/eid/result", { EidToken = tok }, "user-1")
      assert.equals(200, resp.status)
      assert.same({ "attempts", "billable", "code", "reason", "retry_with_new_token", "status" }, keys(body))
      assert.same({ 1, true }, { body.attempts, body.billable })
    end)

    it("answers 502/504 when GetEidResult fails upstream, 429 when its bucket is empty", function()
      local g = make({ upstream_limits = { GetEidResult = { rate = 1, burst = 1 } } },
        { client = sim:client { timeout = 0.3, deadline = 0.3, retry = { max_attempts = 1 } } })
      local tok = token_for(g, "user-1")
      sim:pass(tok)
      sim:faults { { Action = "GetEidResult", Kind = "latency", Ms = 1500 } }
      assert_error(post(g, "/eid/result", { EidToken = tok }, "user-1"), 504, "timeout")
      now = now + 1
      sim:faults { { Action = "GetEidResult", Kind = "reset" } }
      assert_error(post(g, "/eid/result", { EidToken = tok }, "user-1"), 502, "reset")
      local resp = post(g, "/eid/result", { EidToken = tok }, "user-1")
      assert_error(resp, 429, "rate_limited")
      assert.equals("1", resp.headers["Retry-After"])
      sim:clear_faults()
      now = now + 1
      assert.equals("passed", select(2, post(g, "/eid/result", { EidToken = tok }, "user-1")).status)
    end)
    it("takes the GetEidResult bucket only for calls to Tencent: not for a token the ledger refuses, "
      .. "not for a settled token asked again", function()
      local g = make { upstream_limits = { GetEidResult = { rate = 1, burst = 1 } } }
      local tok, tok2 = token_for(g, "user-1"), token_for(g, "user-1")
      for _ = 1, 3 do
        assert_error(post(g, "/eid/result", { EidToken = "NO-SUCH-TOKEN" }, "user-2"), 404, "unknown_token")
        assert_error(post(g, "/eid/result", { EidToken = tok }, "user-2"), 403, "wrong_subject")
      end
      sim:pass(tok)
      -- the front end asks again and again: the flow's memo answers
      for _ = 1, 4 do assert.equals("passed", select(2, post(g, "/eid/result", { EidToken = tok }, "user-1")).status) end
      assert.equals(1, promtext.value(scrape(g), "eidkit_upstream_duration_seconds_count",
        { action = "GetEidResult" }))
      -- That one pull took the bucket's only token.
      assert_error(post(g, "/eid/result", { EidToken = tok2 }, "user-1"), 429, "rate_limited")
    end)

    it("takes the GetEidResult bucket before every finish of a flow object without gate_pulls", function()
      local real = sim:flow { policy = policy }
      local own = { start = function(_, p) return real:start(p) end, finish = function(_, p) return real:finish(p) end,
        authorize = function(_, r) return real:authorize(r) end }
      local g = make { flow = own, upstream_limits = { GetEidResult = { rate = 1, burst = 1 } } }
      local tok = token_for(g, "user-1")
      for _ = 1, 3 do -- refused by the ledger: given back
        assert_error(post(g, "/eid/result", { EidToken = tok }, "user-2"), 403, "wrong_subject")
      end
      sim:pass(tok)
      assert.equals("passed", select(2, post(g, "/eid/result", { EidToken = tok }, "user-1")).status)
      assert_error(post(g, "/eid/result", { EidToken = tok }, "user-1"), 429, "rate_limited")
    end)
  end)

  describe("GET /eid/h5/return", function()
    local URL = "https://shop.example/verified?from=eid#done"

    it("redirects (303) to h5_return_url with the outcome's status and reason", function()
      local g = make { h5_return_url = URL }
      local tok = token_for(g, "user-1")
      sim:pass(tok)
      local resp = get(g, "/eid/h5/return?token=" .. tok, "user-1")
      assert.equals(303, resp.status)
      assert.equals("https://shop.example/verified?from=eid&status=passed&reason=passed#done",
        resp.headers.Location)
      assert.equals("no-store", resp.headers["Cache-Control"])
      local tok2 = token_for(g, "user-1")
      sim:fail(tok2, 2016)
      -- the query as a separate string, and as a table (as nginx gives it)
      resp = g.gw:handle { method = "GET", path = "/eid/h5/return", query = "token=" .. tok2,
        headers = { ["x-user"] = "user-1" } }
      assert.equals("https://shop.example/verified?from=eid&status=failed&reason=identity_rejected#done",
        resp.headers.Location)
      resp = g.gw:handle { method = "GET", path = "/eid/h5/return", query = { token = { tok2, "junk" } },
        headers = { ["X-USER"] = "user-1" } }
      assert.equals("https://shop.example/verified?from=eid&status=failed&reason=identity_rejected#done",
        resp.headers.Location)
    end)

    it("redirects with status=error and the code for a foreign, unknown or missing token", function()
      local g = make { h5_return_url = URL }
      local tok = token_for(g, "user-1")
      local function location(path, user, headers)
        local resp = get(g, path, user, headers)
        assert.equals(303, resp.status)
        return resp.headers.Location
      end
      local base = "https://shop.example/verified?from=eid&status=error&code="
      assert.equals(base .. "wrong_subject#done", location("/eid/h5/return?token=" .. tok, "user-2"))
      assert.equals(base .. "unknown_token#done", location("/eid/h5/return?token=nope%20x", "user-1"))
      assert.equals(base .. "bad_request#done", location("/eid/h5/return", "user-1"))
      assert.equals(base .. "unauthorized#done", location("/eid/h5/return?token=" .. tok, nil))
      assert.equals(base .. "policy#done", location("/eid/h5/return?token=" .. tok, "user-1", { ["X-Raise"] = "1" }))
    end)

    it("merges with the return URL's own query and encodes the values", function()
      local cases = {
        { "https://shop.example/v", "https://shop.example/v?status=error&code=unauthorized" },
        { "https://shop.example/v?", "https://shop.example/v?status=error&code=unauthorized" },
        { "/v?a=1&", "/v?a=1&status=error&code=unauthorized" },
        { "/v?a=%20b#x?y", "/v?a=%20b&status=error&code=unauthorized#x?y" },
      }
      local flow = sim:flow { policy = policy }
      for _, c in ipairs(cases) do
        local gw = gateway { flow = flow, h5_return_url = c[1] }
        assert.equals(c[2], gw:handle { method = "GET", path = "/eid/h5/return", query = "token=x",
          headers = {} }.headers.Location)
      end
      local g = make({ h5_return_url = "/v" }, { policy = { authorize = policy.authorize,
        classify = function(_, o) o.reason = "odd reason&x=1" return o end } })
      local tok = token_for(g, "user-1")
      sim:pass(tok)
      assert.equals("/v?status=passed&reason=odd%20reason%26x%3D1",
        get(g, "/eid/h5/return?token=" .. tok, "user-1").headers.Location)
    end)

    it("is not a route without h5_return_url", function()
      assert_error(get(make(), "/eid/h5/return?token=x", "user-1"), 404, "not_found")
    end)
  end)

  describe("routing and bodies", function()
    it("answers 404 for an unknown route and 405 with Allow for a wrong method", function()
      local g = make()
      assert_error(get(g, "/eid/nothing", "user-1"), 404, "not_found")
      assert_error(get(g, "/", "user-1"), 404, "not_found")
      local resp = get(g, "/eid/token", "user-1")
      assert_error(resp, 405, "method_not_allowed")
      assert.equals("POST", resp.headers.Allow)
      resp = post(g, "/metrics", "{}")
      assert_error(resp, 405, "method_not_allowed")
      assert.equals("GET, HEAD", resp.headers.Allow)
    end)

    it("answers HEAD as GET where GET is safe, and never on the H5 landing", function()
      local g = make { h5_return_url = "https://shop.example/done" }
      local tok = token_for(g, "user-1")
      for _, path in ipairs { "/healthz", "/metrics" } do
        local head = request(g, "HEAD", path)
        assert.equals(200, head.status, path)
        assert.equals(request(g, "GET", path).headers["Content-Type"], head.headers["Content-Type"])
      end
      -- its GET pulls a result (billed): a HEAD must not
      local resp = request(g, "HEAD", "/eid/h5/return?token=" .. tok, nil, "user-1")
      assert_error(resp, 405, "method_not_allowed")
      assert.equals("GET", resp.headers.Allow)
      local f = scrape(g)
      assert.is_nil(promtext.value(f, "eidkit_upstream_duration_seconds_count", { action = "GetEidResult" }))
    end)

    it("gives a host the same error answers (error_response)", function()
      local resp = gateway.error_response("too_large")
      assert_error(resp, 413, "too_large")
      assert.equals("the request body is too large", decode(resp.body).error.message)
      assert.equals("1", gateway.error_response("rate_limited").headers["Retry-After"])
      assert.has_error(function() gateway.error_response("teapot") end,
        "bad argument #1 to 'error_response' (expected an error code such as 'too_large')")
    end)

    it("answers 413 for a body over 16 KiB before anything else, and takes 16 KiB", function()
      local g = make()
      assert_error(post(g, "/eid/token", ("x"):rep(16385), nil), 413, "too_large")
      assert_error(post(g, "/eid/result", ("x"):rep(100000), "user-1"), 413, "too_large")
      local resp = post(g, "/eid/token", "{}" .. (" "):rep(16382), "user-1")
      assert.equals(200, resp.status, resp.body)
    end)
  end)

  describe("GET /healthz", function()
    it("answers 200 while the ledger answers, 503 once it is closed", function()
      local g = make()
      local resp, body = get(g, "/healthz")
      assert.equals(200, resp.status)
      assert.same({ status = "ok" }, body)
      g.flow.ledger:close()
      assert_error(get(g, "/healthz"), 503, "unavailable")
      local f = scrape(g)
      assert.equals(0, promtext.value(f, "eidkit_ledger_up"))
    end)
  end)

  describe("GET /metrics", function()
    it("counts requests, errors, outcomes, ledger states, upstream attempts, retries and skew", function()
      local g = make()
      local tok = token_for(g, "user-1")
      sim:pass(tok)
      sim:faults { { Action = "GetEidResult", Kind = "throttle", First = 1 } }
      post(g, "/eid/result", { EidToken = tok }, "user-1")
      post(g, "/eid/result", { EidToken = tok }, "user-1")
      post(g, "/eid/result", { EidToken = tok }, "user-2")
      get(g, "/nowhere")
      local f, text = scrape(g)
      local v = function(name, labels) return promtext.value(f, name, labels) end
      assert.equals(1, v("eidkit_gateway_requests_total", { route = "/eid/token", status = "200" }))
      assert.equals(2, v("eidkit_gateway_requests_total", { route = "/eid/result", status = "200" }))
      assert.equals(1, v("eidkit_gateway_requests_total", { route = "/eid/result", status = "403" }))
      assert.equals(1, v("eidkit_gateway_requests_total", { route = "other", status = "404" }))
      assert.equals(1, v("eidkit_gateway_errors_total", { route = "/eid/result", code = "wrong_subject" }))
      assert.equals(2, v("eidkit_gateway_outcomes_total", { status = "passed", reason = "passed" }))
      assert.equals(1, v("eidkit_gateway_in_flight_requests")) -- this scrape
      assert.equals(1, v("eidkit_ledger_up"))
      -- the Lua heap as the scrape saw it (within what this spec allocates since)
      assert.is_true(v("eidkit_lua_memory_bytes") > 0)
      assert.is_true(v("eidkit_lua_memory_bytes") <= collectgarbage("count") * 1024 * 4)
      assert.equals(1, v("eidkit_ledger_tokens", { state = "consumed" }))
      assert.equals(0, v("eidkit_ledger_tokens", { state = "issued" }))
      assert.equals(1, v("eidkit_upstream_duration_seconds_count", { action = "GetEidToken" }))
      -- GetEidResult throttled once and retried; the replay comes from the flow's memo.
      assert.equals(2, v("eidkit_upstream_duration_seconds_count", { action = "GetEidResult" }))
      assert.equals(1, v("eidkit_upstream_retries_total", { action = "GetEidResult" }))
      assert.equals(1, v("eidkit_upstream_errors_total", { action = "GetEidResult", code = "RequestLimitExceeded" }))
      assert.equals(g.flow.client:skew(), v("eidkit_upstream_clock_skew_seconds"))
      assert.equals(0, v("eidkit_flow_log_failures_total"))
      assert.is_nil(text:find(tok, 1, true))
    end)

    it("counts the flow's dropped events", function()
      local g = make(nil, { logger = function() error("log sink down") end, on_log_failure = function() end })
      local tok = token_for(g, "user-1")
      sim:pass(tok)
      post(g, "/eid/result", { EidToken = tok }, "user-1")
      local f = scrape(g)
      local n = g.flow:log_failures()
      assert.is_true(n >= 2)
      assert.equals(n, promtext.value(f, "eidkit_flow_log_failures_total"))
    end)

    it("counts results whose ErrCode eidkit does not know, by code", function()
      local g = make()
      for i = 1, 2 do
        local tok = token_for(g, "user-u" .. i)
        sim:fail(tok, 4242)
        post(g, "/eid/result", { EidToken = tok }, "user-u" .. i)
      end
      local f = scrape(g)
      assert.equals(2, promtext.value(f, "eidkit_flow_unclassified_errcodes_total", { code = "4242" }))
    end)
  end)

  describe("the access log", function()
    it("writes one JSON line per request without identities, queries or whole tokens", function()
      local g = make { token_fields = { "Name", "IdCard", "Config" }, h5_return_url = "/done" }
      local resp, body = post(g, "/eid/token", { Name = NAME, IdCard = IDCARD, Config = { InputType = "4" } }, "user-1")
      assert.equals(200, resp.status, resp.body)
      local tok = body.EidToken
      sim:pass(tok)
      post(g, "/eid/result", { EidToken = tok }, "user-1")
      get(g, "/eid/h5/return?token=" .. tok, "user-1")
      post(g, "/eid/result", { EidToken = tok }, "user-2")
      assert.equals(4, #g.lines)
      local short = tok:sub(1, 8) .. "..."
      for _, line in ipairs(g.lines) do
        assert.is_nil(line:find("\n", 1, true))
        for _, secret in ipairs { NAME, IDCARD, tok, "user-1", "user-2", sim.secret_key, "token=" } do
          assert.is_nil(line:find(secret, 1, true), line)
        end
      end
      local first = decode(g.lines[1])
      assert.same({ time = T, method = "POST", path = "/eid/token", status = 200, duration = 0,
        remote_addr = "192.0.2.7", token = short }, first)
      local second = decode(g.lines[2])
      assert.same({ "passed", "passed", short }, { second.outcome, second.reason, second.token })
      assert.same({ 303, "/eid/h5/return" }, { decode(g.lines[3]).status, decode(g.lines[3]).path })
      assert.same({ 403, "wrong_subject" }, { decode(g.lines[4]).status, decode(g.lines[4]).code })
    end)

    it("never changes a response when the logger raises: counted, said once", function()
      local told = {}
      local g = make { access_log = function() error("disk full") end,
        on_log_failure = function(why) told[#told + 1] = why end }
      local tok = token_for(g, "user-1")
      sim:pass(tok)
      local resp, body = post(g, "/eid/result", { EidToken = tok }, "user-1")
      assert.equals(200, resp.status)
      assert.equals("passed", body.status)
      assert_error(post(g, "/eid/result", "{", "user-1"), 400, "bad_request", "body")
      assert.equals(1, #told)
      assert.matches("the access logger raised: .*disk full", told[1])
      local f = scrape(g) -- the scrape's own line fails after rendering
      assert.equals(3, promtext.value(f, "eidkit_gateway_log_failures_total"))
    end)
  end)

  describe("handle never raises", function()
    it("answers 500 internal for a malformed request from the host", function()
      local g = make()
      for _, req in ipairs { false, {}, { method = "GET" }, { method = "POST", path = "/eid/token", body = 5 } } do
        assert_error(g.gw:handle(req), 500, "internal")
      end
      assert_error(g.gw:handle(nil), 500, "internal")
      assert.equals(5, #g.errors)
    end)

    it("answers 500 internal when a route raises (a closed ledger), and tells on_error", function()
      local g = make(nil, { claim_cache = 0 }) -- the ledger's claim is what raises
      local tok = token_for(g, "user-1")
      g.flow.ledger:close()
      local e = assert_error(post(g, "/eid/result", { EidToken = tok }, "user-1"), 500, "internal")
      assert.equals("internal error", e.message)
      assert.equals(1, #g.errors)
      assert.matches("closed eidkit.Ledger", g.errors[1])
      assert.matches("stack traceback", g.errors[1])
      local f = scrape(g)
      assert.equals(1, promtext.value(f, "eidkit_gateway_errors_total", { route = "/eid/result", code = "internal" }))
      assert.equals(1, promtext.value(f, "eidkit_gateway_in_flight_requests"))
    end)

    it("answers 502 when GetEidToken hands out a token the ledger already holds", function()
      -- Two simulators with one seed issue the same tokens: what a second
      -- service sharing the ledger, or a restarted simulator, looks like.
      local sims = { testing.sim { now = T, seed = 77 }, testing.sim { now = T, seed = 77 } }
      local ok, err = pcall(function()
        local shared = sims[1]:ledger()
        local function on(k)
          local g = { lines = {}, errors = {} }
          g.gw = gateway { flow = sims[k]:flow { policy = policy, ledger = shared }, clock = function() return now end,
            access_log = function(line) g.lines[#g.lines + 1] = line end,
            on_error = function(m) g.errors[#g.errors + 1] = m end }
          return g
        end
        local first, again = on(1), on(2)
        local tok = token_for(first, "user-1")
        local e = assert_error(post(again, "/eid/token", "{}", "user-2"), 502, "bad_response")
        assert.equals("the verification service gave an unusable answer", e.message)
        assert.same({}, again.errors) -- mapped: nothing for the operator to chase
        assert.equals("user-1", shared:get(tok).subject) -- the first issue stands
      end)
      for _, s in ipairs(sims) do s:stop() end
      assert(ok, err)
    end)

    it("answers 500 internal for an error code it does not map, and tells on_error why", function()
      local g = make()
      local real = g.flow
      local odd = setmetatable({ start = function() return nil, { code = "weird_code", message = "odd\nthing" } end },
        { __index = real })
      local gw = gateway { flow = odd, on_error = function(m) g.errors[#g.errors + 1] = m end,
        clock = function() return now end, access_log = function() end }
      local resp = gw:handle { method = "POST", path = "/eid/token", headers = { ["x-user"] = "u" }, body = "{}" }
      local e = assert_error(resp, 500, "internal")
      assert.equals("internal error", e.message)
      assert.same({ "/eid/token answered 500 internal for an error it does not map: weird_code: odd thing" },
        g.errors)
    end)

    it("answers 503 when the limiter fails, whether it raises or returns an error", function()
      local raising = { take = function() error("limiter store gone") end }
      local failing = { take = function() return nil, "limiter store gone" end }
      for _, lim in ipairs { raising, failing } do
        local g = make { limiter = lim }
        local e = assert_error(post(g, "/eid/token", "{}", "user-1"), 503, "unavailable")
        assert.equals("the rate limiter is unavailable", e.message)
        assert.matches("limiter store gone", g.errors[1])
      end
    end)

    it("answers 500 internal when the flow itself raises", function()
      local g = make()
      local real = g.flow
      local broken = setmetatable({ finish = function() error({ "not even a string" }) end },
        { __index = real })
      local gw = gateway { flow = broken, on_error = function() end }
      local resp = gw:handle { method = "POST", path = "/eid/result", headers = { ["x-user"] = "u" },
        body = '{"EidToken":"abc"}' }
      assert_error(resp, 500, "internal")
    end)
  end)

  describe("with a Redis ledger", function()
    local srv
    lazy_setup(function()
      if redis.available then srv = redis.start() end
    end)
    lazy_teardown(function() if srv then srv:destroy() end end)

    local function redis_gateway(prefix)
      local l = assert(ledger_mod.open(srv:url(0, prefix), { token_ttl = sim.token_ttl,
        clock = function() return sim:now() end, timeout_ms = 500 }))
      return make(nil, { ledger = l }), l
    end

    it("serves the routes, answers 503 while redis is down, and loses no record", function()
      if not srv then pending("redis-server is not installed") return end
      local g, l = redis_gateway("gw1:")
      local tok = token_for(g, "user-1")
      sim:pass(tok)
      assert.equals(200, get(g, "/healthz").status)
      srv:stop("KILL") -- a crash: AOF with fsync always keeps what was acknowledged
      assert_error(get(g, "/healthz"), 503, "unavailable")
      assert_error(post(g, "/eid/result", { EidToken = tok }, "user-1"), 503, "unavailable")
      assert_error(post(g, "/eid/token", "{}", "user-1"), 503, "unavailable")
      assert(srv:launch(), "redis-server did not restart")
      local resp, body = post(g, "/eid/result", { EidToken = tok }, "user-1")
      assert.equals(200, resp.status, resp.body)
      assert.equals("passed", body.status)
      assert.equals("consumed", l:get(tok).state)
      local f = scrape(g)
      assert.equals(1, promtext.value(f, "eidkit_ledger_up"))
      assert.equals(3, promtext.value(f, "eidkit_gateway_errors_total", { route = "/eid/result", code = "unavailable" })
        + promtext.value(f, "eidkit_gateway_errors_total", { route = "/eid/token", code = "unavailable" })
        + promtext.value(f, "eidkit_gateway_errors_total", { route = "/healthz", code = "unavailable" }))
    end)
  end)

  it("never put a name, an ID number or a secret in a response, an access log line or a metric", function()
    local n = 0
    for _, s in ipairs(seen) do
      for _, text in ipairs(type(s) == "table" and s or { s }) do
        n = n + 1
        for _, secret in ipairs { NAME, IDCARD, sim.secret_key, sim.secret_id } do
          assert.is_nil(text:find(secret, 1, true), text)
        end
      end
    end
    assert.is_true(n > 100)
  end)
end)
