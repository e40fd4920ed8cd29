-- The simulator's unsigned control API (JSON under /sim/) and its H5 page:
-- how tests and developers play the user, move the clock and set faults.
-- Loopback only by design: nothing here is authenticated.
local util = require "eidkit.sim.util"
local faults = require "eidkit.sim.faults"
local results = require "eidkit.sim.results"

local format, type, ipairs = string.format, type, ipairs
local json_encode, json_decode, null = util.json_encode, util.json_decode, util.null

local _M = {}

local function json(status, value)
  return { status = status, headers = { ["Content-Type"] = "application/json" },
    body = type(value) == "string" and value or json_encode(value) }
end

local function problem(status, code, fmt, ...)
  return json(status, { Error = { Code = code, Message = format(fmt, ...) } })
end

local function body_object(req)
  if req.body == "" then return {} end
  local v = json_decode(req.body)
  if type(v) ~= "table" then return nil end
  return v
end

local function summary_json(sim, tok)
  local s = sim:summary(tok)
  if #s.Attempts == 0 then s.Attempts = null end -- lua-cjson cannot spell []
  return s
end

-- The attempt as the --attempt-log line: what Tencent would bill, on the
-- Beijing day of its ReqTime (Tencent bills by Beijing time, UTC+8).
local function attempt_line(tok, a)
  return json_encode {
    EidToken = tok.EidToken, MerchantId = tok.merchant, Seq = a.seq, ReqTime = results.req_time(a),
    BeijingDate = os.date("!%Y-%m-%d", a.time + results.BEIJING_OFFSET), ErrCode = a.ErrCode,
    IsNeedCharge = results.charged(a), UseIntentionVerify = tok.intention,
  }
end

-- Record one attempt by the simulated user (or, for the flow-state codes
-- 14-17, a flow state: no liveness attempt, no LivenessDetail, no charge).
-- extra: WarnInfos and BackWarnInfos of the ID card seen in this attempt.
-- Returns the token or nil, status, code, message.
function _M.finish(sim, tok, err_code, intention_code, extra)
  local now = sim:now()
  if now >= tok.expires then
    return nil, 409, "TokenExpired", "the token's lifetime is over; the user can no longer finish"
  end
  local last = tok.attempts[#tok.attempts]
  if last and last.ErrCode == 0 then
    return nil, 409, "AlreadyPassed", "the user already passed with this token"
  end
  local a = {
    ErrCode = err_code, IntentionErrCode = intention_code, time = now,
    seq_id = util.uuid(sim.rng):sub(1, 8), flow_state = results.FLOW_STATES[err_code],
    warn = extra and extra.WarnInfos, back_warn = extra and extra.BackWarnInfos,
  }
  if not a.flow_state then
    tok.liveness = (tok.liveness or 0) + 1
    a.seq = format("%s-%d", a.seq_id, tok.liveness)
  end
  tok.attempts[#tok.attempts + 1] = a
  tok.state = "finished"
  if sim.attempt_log and not a.flow_state then sim.attempt_log(attempt_line(tok, a)) end
  return tok
end

-- An optional list of ID-card warning codes (integers).
local function warn_arg(v, name)
  if v == nil then return nil end
  if type(v) ~= "table" then return false, name .. " must be an array of integers" end
  local out = {}
  for i, w in ipairs(v) do
    if not util.is_integer(w) then return false, name .. " must be an array of integers" end
    out[i] = math.tointeger(w)
  end
  if #out == 0 then return nil end -- none: null, as JSON cannot tell {} from []
  return out
end

function _M.start(sim, tok)
  local now = sim:now()
  if now >= tok.expires then
    return nil, 409, "TokenExpired", "the token's lifetime is over"
  end
  if tok.state == "init" then tok.state = "doing" end
  return tok
end

local function code_arg(v, name)
  if v == nil then return nil end
  if not util.is_integer(v) then return false, name .. " must be an integer" end
  return math.tointeger(v)
end

local function tokens_route(sim, req, id, verb)
  if not id then
    if req.method ~= "GET" then return problem(405, "MethodNotAllowed", "use GET") end
    local list = {}
    for i = sim.head, #sim.order do
      local tok = sim.tokens[sim.order[i]]
      if tok then list[#list + 1] = summary_json(sim, tok) end
    end
    if #list == 0 then return json(200, '{"Tokens":[]}') end
    return json(200, { Tokens = list })
  end
  local tok = sim:token(id)
  if not tok then return problem(404, "NotFound", "unknown EidToken") end
  if verb == nil then
    if req.method ~= "GET" then return problem(405, "MethodNotAllowed", "use GET") end
    return json(200, summary_json(sim, tok))
  end
  if req.method ~= "POST" then return problem(405, "MethodNotAllowed", "use POST") end
  local ok, status, code, msg
  if verb == "start" then
    ok, status, code, msg = _M.start(sim, tok)
  elseif verb == "finish" then
    local b = body_object(req)
    if not b then return problem(400, "BadRequest", "the body must be a JSON object") end
    local err_code, e1 = code_arg(b.ErrCode, "ErrCode")
    local int_code, e2 = code_arg(b.IntentionErrCode, "IntentionErrCode")
    local warn, e3 = warn_arg(b.WarnInfos, "WarnInfos")
    local back, e4 = warn_arg(b.BackWarnInfos, "BackWarnInfos")
    if err_code == false or int_code == false or warn == false or back == false then
      return problem(400, "BadRequest", "%s", e1 or e2 or e3 or e4)
    end
    ok, status, code, msg = _M.finish(sim, tok, err_code or 0, int_code,
      { WarnInfos = warn, BackWarnInfos = back })
  else
    return problem(404, "NotFound", "no such control endpoint")
  end
  if not ok then return problem(status, code, "%s", msg) end
  return json(200, summary_json(sim, tok))
end

local function clock_route(sim, req)
  if req.method == "POST" then
    local b = body_object(req)
    if not b then return problem(400, "BadRequest", "the body must be a JSON object") end
    if b.Now ~= nil and not util.is_integer(b.Now) then
      return problem(400, "BadRequest", "Now must be an integer")
    end
    if b.Advance ~= nil and not util.is_integer(b.Advance) then
      return problem(400, "BadRequest", "Advance must be an integer")
    end
    if b.Frozen ~= nil and type(b.Frozen) ~= "boolean" then
      return problem(400, "BadRequest", "Frozen must be true or false")
    end
    -- Frozen: the clock reads Now (or where it stood) until the next POST,
    -- so a test that freezes time sees every lifetime exactly; a running
    -- clock ticks at the next second of real time, which may be at once.
    local frozen = b.Frozen
    if frozen == nil then frozen = sim.clock_frozen ~= nil and b.Now == nil end
    -- From Now, else from where the clock stands (a frozen one: its value).
    local t = os.time()
    local now = b.Now ~= nil and math.tointeger(b.Now) or sim.clock_frozen or t + sim.clock_offset
    if b.Advance ~= nil then now = now + math.tointeger(b.Advance) end
    sim.clock_offset = now - t
    sim.clock_frozen = frozen and now or nil
  elseif req.method ~= "GET" then
    return problem(405, "MethodNotAllowed", "use GET or POST")
  end
  return json(200, { Now = sim:now(), Offset = sim.clock_offset, Frozen = sim.clock_frozen ~= nil })
end

local function faults_route(sim, req)
  if req.method == "PUT" then
    local rules = json_decode(req.body)
    if type(rules) ~= "table" then
      return problem(400, "BadRequest", "the body must be a JSON array of fault rules")
    end
    local checked = {}
    for i, r in ipairs(rules) do
      local c, msg = faults.check(r, format("rule %d", i))
      if not c then return problem(400, "BadRequest", "%s", msg) end
      checked[i] = c
    end
    sim.faults:set(checked)
  elseif req.method == "DELETE" then
    sim.faults:set {}
  elseif req.method ~= "GET" then
    return problem(405, "MethodNotAllowed", "use GET, PUT or DELETE")
  end
  local list = sim.faults:list()
  if #list == 0 then return json(200, '{"Faults":[]}') end
  return json(200, { Faults = list })
end

-- ------------------------------------------------------------- H5 page

local function html_escape(s)
  return (tostring(s):gsub("[&<>\"']", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;",
    ['"'] = "&quot;", ["'"] = "&#39;" }))
end

local function url_escape(s)
  return (s:gsub("[^%w%-%._~]", function(c) return format("%%%02X", c:byte()) end))
end

local function page(status, title, body)
  return { status = status, headers = { ["Content-Type"] = "text/html; charset=utf-8" },
    body = format([[<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>%s</title></head><body>
<h1>%s</h1>
%s
</body></html>
]], html_escape(title), html_escape(title), body) }
end

-- Tencent sends the browser to RedirectUrl with token={EidToken} added to
-- the query (doc 1007/58171); keep any fragment after it.
function _M.redirect_url(url, token)
  local base, frag = url:match("^([^#]*)(#.*)$")
  base, frag = base or url, frag or ""
  local sep = base:find("?", 1, true) and (base:sub(-1) == "?" and "" or "&") or "?"
  return base .. sep .. "token=" .. url_escape(token) .. frag
end

local fail_codes = { 2016, 2006, 1001, 1003, 2005, 303 }

local function h5_route(sim, req, sub)
  local id = req.args and req.args.token
  local tok = id and sim:token(id)
  if not tok then return page(404, "Unknown verification", "<p>This EidToken is not known.</p>") end
  if sub == "" then
    if req.method ~= "GET" then return page(405, "Method not allowed", "") end
    local ok = _M.start(sim, tok)
    if not ok then return page(410, "Verification expired", "<p>This link has expired.</p>") end
    local options = {}
    for _, c in ipairs(fail_codes) do
      options[#options + 1] = format('<option value="%d">%d %s</option>', c, c,
        html_escape(results.message(c)))
    end
    return page(200, "E证通 simulator", format([[
<p>EidToken <code id="token">%s</code>, merchant <code>%s</code>.</p>
<form method="post" action="/sim/h5/finish?token=%s&amp;ErrCode=0">
<button id="pass" type="submit">Pass</button></form>
<form method="post" action="/sim/h5/finish?token=%s">
<select id="code" name="ErrCode">%s</select>
<button id="fail" type="submit">Fail</button></form>]], html_escape(tok.EidToken),
      html_escape(tok.merchant), url_escape(tok.EidToken), url_escape(tok.EidToken),
      table.concat(options)))
  elseif sub == "/finish" then
    if req.method ~= "POST" then return page(405, "Method not allowed", "") end
    local code = req.args.ErrCode or (req.body or ""):match("ErrCode=(%-?%d+)")
    code = tonumber(code or "")
    if not code or not math.tointeger(code) then
      return page(400, "Bad request", "<p>ErrCode must be an integer.</p>")
    end
    local ok, _, _, msg = _M.finish(sim, tok, math.tointeger(code))
    if not ok then return page(409, "Cannot finish", "<p>" .. html_escape(msg) .. "</p>") end
    if tok.redirect then
      return { status = 302, headers = { Location = _M.redirect_url(tok.redirect, tok.EidToken),
        ["Content-Type"] = "text/html" }, body = "" }
    end
    return page(200, "Verification done", format("<p id=\"result\">ErrCode %d</p>",
      math.tointeger(code)))
  end
  return page(404, "Not found", "")
end

-- ---------------------------------------------------------------- router

function _M.handle(sim, req)
  local path = req.path
  local rest = path:match("^/sim/tokens(.*)$")
  if rest then
    if rest == "" or rest == "/" then return tokens_route(sim, req) end
    local id, verb = rest:match("^/([^/]+)/?([^/]*)$")
    if not id then return problem(404, "NotFound", "no such control endpoint") end
    return tokens_route(sim, req, id, verb ~= "" and verb or nil)
  end
  if path == "/sim/clock" then return clock_route(sim, req) end
  if path == "/sim/faults" then return faults_route(sim, req) end
  local h5 = path:match("^/sim/h5(.*)$")
  if h5 then return h5_route(sim, req, h5) end
  if path == "/sim/reset" then
    if req.method ~= "POST" then return problem(405, "MethodNotAllowed", "use POST") end
    sim:reset()
    return json(200, { Reset = true })
  end
  if path == "/sim/health" then
    return json(200, { Status = "ok", Tokens = sim.live, Requests = sim.stats.requests,
      Now = sim:now() })
  end
  return problem(404, "NotFound", "no such endpoint: the API is POST /, the control API is /sim/")
end

return _M
