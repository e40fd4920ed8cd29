-- One table of unusable answers, run against both API clients: the C client
-- through eidkit.client on Lua 5.4 (spec/client/client_spec.lua) and
-- eidkit.openresty.client in nginx (spec/openresty/client_spec.lua), each
-- against spec/support/static_server.lua answering with the case's status
-- and body (cut in half with fault "truncate").
--
-- Regression: a 200 body that could not be used went into err.received, and
-- a 200 body can be a GetEidResult with the user's Name and IdCard, so an
-- identity reached error tables that merchants log. Now received is kept only
-- from an answer whose status is not 200 (eid_retry_verdict.keep_received).
--
-- Each case: name, status, body, and
--   fault     "truncate": the server sends half of the body and closes
--   opts      client options (max_response)
--   code      err.code
--   message   { lua54 = fragment, openresty = fragment } of err.message
--   received  the exact err.received, or nil for none
-- The names never contain the identity, so test output cannot show it.
local _M = {}

-- Obviously fake, and only ever searched for, never printed.
_M.NAME, _M.IDCARD = "TESTNAME", "110101199001011234"

local TEXT = '{"Name":"TESTNAME","IdCard":"110101199001011234","ErrCode":0}'
local PAD = ("QUJD"):rep(40) -- a base64 image's worth, so half of the body still holds TEXT
-- A GetEidResult answer as Tencent sends it, identity near the front.
local RESULT = '{"Response":{"Text":' .. TEXT .. ',"EidInfo":{"EidCode":"c","UserInfo":"u"},'
  .. '"BestFrame":{"BestFrame":"' .. PAD .. '"},"RequestId":"r-1"}}'
local PAGE = "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1>"
  .. "<p>" .. ("upstream unavailable "):rep(4) .. "</p></body></html>\n"

local LONG_PAGE = "<html><body><h1>503 Service Unavailable</h1><p>"
  .. ("try again later, "):rep(60) .. "</p></body></html>\n"

local function bytes(n) return n .. " bytes received" end

local CUT = RESULT:sub(1, 120) -- well framed: the server sends all 120 bytes
local BARE = '{"Text":' .. TEXT .. '}'
local LAX = '{"Response":{"Text":' .. TEXT .. ',"RequestId":"r-1",}}' -- the C core passes it on unparsed
local NO_CODE = '{"Response":{"Error":{"Message":"x"},"Text":' .. TEXT .. ',"RequestId":"r-1"}}'
local ENVELOPE = "not Tencent's answer envelope; "

_M.cases = {
  { "200, a GetEidResult cut short", 200, RESULT, fault = "truncate", code = "bad_response",
    message = { lua54 = "truncated body: ", openresty = "truncated body; " }, received = nil },
  { "200, a GetEidResult well framed but not JSON", 200, CUT, code = "bad_response",
    message = { lua54 = "the body is not JSON (invalid at byte 119); " .. bytes(#CUT),
      openresty = ENVELOPE .. bytes(#CUT) } },
  { "200, JSON that is not Tencent's envelope", 200, BARE, code = "bad_response",
    message = { lua54 = "the body has no Response object; " .. bytes(#BARE), openresty = ENVELOPE .. bytes(#BARE) } },
  { "200, a success-shaped Response that lua-cjson refuses", 200, LAX, code = "bad_response",
    message = { lua54 = "the Response is not valid JSON: ", openresty = ENVELOPE .. bytes(#LAX) } },
  { "200, Response.Error without a Code", 200, NO_CODE, code = "bad_response",
    message = { lua54 = "Response.Error has no Code string; " .. bytes(#NO_CODE),
      openresty = ENVELOPE .. bytes(#NO_CODE) } },
  { "200, larger than max_response", 200, RESULT, opts = { max_response = 64 }, code = "bad_response",
    message = { lua54 = "response larger than 64 bytes", openresty = "response larger than 64 bytes" } },
  -- A proxy's or load balancer's page: kept, it says what went wrong.
  { "502, a load balancer's page", 502, PAGE, code = "http_502",
    message = { lua54 = "HTTP 502; " .. bytes(#PAGE), openresty = "HTTP 502; " .. bytes(#PAGE) },
    received = PAGE },
  { "502, a load balancer's page cut short", 502, PAGE, fault = "truncate", code = "bad_response",
    message = { lua54 = "truncated body: ", openresty = "truncated body; " },
    received = PAGE:sub(1, #PAGE // 2) },
  -- Both clients keep the same first bytes of a long page (EID_RECEIVED_MAX,
  -- eidkit/client.h; the nginx client's RECEIVED_MAX): the two limits cannot drift.
  { "503, a page longer than what is kept", 503, LONG_PAGE, code = "http_503",
    message = { lua54 = "HTTP 503; " .. bytes(#LONG_PAGE), openresty = "HTTP 503; " .. bytes(#LONG_PAGE) },
    received = LONG_PAGE:sub(1, 512) },
}

-- The whole error table as text: every key and value, nested tables, and
-- its tostring, so nothing in it escapes the search.
function _M.dump(v, seen)
  seen = seen or {}
  if type(v) ~= "table" then return tostring(v) end
  if seen[v] then return "<cycle>" end
  seen[v] = true
  local out = { tostring(v) }
  for k, x in pairs(v) do out[#out + 1] = _M.dump(k, seen) .. "=" .. _M.dump(x, seen) end
  local mt = getmetatable(v)
  if type(mt) == "table" then out[#out + 1] = "meta:" .. _M.dump(mt, seen) end
  return table.concat(out, "\n")
end

-- true when text holds neither fake identity value.
function _M.clean(text)
  return text:find(_M.NAME, 1, true) == nil and text:find(_M.IDCARD, 1, true) == nil
end

return _M
