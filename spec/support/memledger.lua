-- SPEC-ONLY STAND-IN: an in-memory ledger with the methods eidkit.flow calls
-- (issue, get, claim, record, consume, payload), for the one spec that runs
-- the flow under a bare LuaJIT with no nginx (spec/openresty/flow_luajit_check.lua):
-- there are no cosockets there, so the real Redis ledger for nginx
-- (eidkit.openresty.ledger, which spec/openresty/flow_nginx_spec.lua uses)
-- cannot run. It follows the state machine of docs/internals/ledger.md only
-- as far as that spec needs (one process, no TTL sweep, no payloads, no
-- billing): never ship it, never read it as the ledger's definition.
--   local ledger = require("support.memledger").new()
local errors = require "eidkit.errors"
local host = require "eidkit.host"

local _M = {}

-- ErrCode -> the verdict word of the C table (eidkit/errcode.h), via eidkit.host.
local STATUS = {}
for _, e in ipairs(host.errcode_table) do STATUS[e.code] = e.status end

local Ledger = {}
Ledger.__index = Ledger

local function copy(r)
  local c = {}
  for k, v in pairs(r) do c[k] = v end
  return c
end

function Ledger:issue(t)
  if self.rows[t.EidToken] then return errors.result("exists", "the token is already in the ledger") end
  self.rows[t.EidToken] = { EidToken = t.EidToken, subject = t.subject, state = "issued", attempts = 0,
    expires_at = math.floor(host.now()) + 7200, has_payload = false }
  return true
end

function Ledger:get(tok)
  local r = self.rows[tok]
  if not r then return errors.result("unknown_token", "no such token in the ledger") end
  return copy(r)
end

function Ledger:claim(tok, subject)
  local r = self.rows[tok]
  if not r then return errors.result("unknown_token", "no such token in the ledger") end
  if r.subject ~= subject then return errors.result("wrong_subject", "the token is bound to another subject") end
  if r.state == "consumed" then return errors.result("consumed", "the token was settled already") end
  return copy(r)
end

function Ledger:record(tok, res)
  local r = assert(self.rows[tok], "record: unknown token")
  local text = type(res) == "table" and res.Text
  local code = type(text) == "table" and text.ErrCode
  if type(code) == "number" and r.state ~= "consumed" then
    local status = STATUS[code] or "failed"
    r.ErrCode = code
    r.attempts = type(text.LivenessDetail) == "table" and #text.LivenessDetail or 0
    if status ~= "pending" then r.state = status end
  end
  return copy(r)
end

function Ledger:consume(tok, subject)
  local r = self.rows[tok]
  if not r then return errors.result("unknown_token", "no such token in the ledger") end
  if r.subject ~= subject then return errors.result("wrong_subject", "the token is bound to another subject") end
  if r.state == "consumed" then return errors.result("consumed", "the token was settled already") end
  if r.state ~= "passed" and r.state ~= "failed" and r.state ~= "expired" then
    return errors.result("pending", "no verdict to settle")
  end
  r.state = "consumed"
  return copy(r)
end

function Ledger.payload() return nil end -- no payloads kept

function _M.new() return setmetatable({ rows = {} }, Ledger) end

return _M
