-- eidkit.ledger.sweep: the sweep of a token ledger, one function that
-- both hosts' ledgers use as their `sweep` method (eidkit.ledger on Lua 5.4,
-- eidkit.openresty.ledger in nginx), so there is one sweep. It needs only
-- the ledger's expire, due and record methods. Loaded by LuaJIT too: no
-- integer division, bitwise operators, utf8 or <close>.
local type, pcall, tostring, ipairs, error = type, pcall, tostring, ipairs, error

-- ledger:sweep(pull [, opts]) -> report | nil, err
-- Moves tokens past their TTL or result window to expired/abandoned, then
-- pulls the result of every due token, oldest first: pull(EidToken, record)
-- must return GetEidResult's Response table, or nil, err. opts.limit caps the
-- tokens pulled (default 100); opts.payload (function(response) -> string)
-- stores an encrypted copy of each response (needs a payload key).
-- report = {expired, abandoned, due, recorded, failed, failures = {{EidToken, message}},
--           records = {[EidToken] = the record after its result was recorded}}
local function sweep(self, pull, opts)
  if type(pull) ~= "function" then
    error("bad argument #1 to 'sweep' (pull: expected function(EidToken, record))", 2)
  end
  opts = opts or {}
  local ex, err = self:expire()
  if not ex then return nil, err end
  local due
  due, err = self:due(opts.limit or 100)
  if not due then return nil, err end
  local report = { expired = ex.expired, abandoned = ex.abandoned, due = #due,
    recorded = 0, failed = 0, failures = {}, records = {} }
  local function failed(tok, msg)
    report.failed = report.failed + 1
    report.failures[#report.failures + 1] = { EidToken = tok, message = msg }
  end
  for _, rec in ipairs(due) do
    local tok = rec.EidToken
    local ok, resp, perr = pcall(pull, tok, rec)
    if not ok then
      failed(tok, "pull raised: " .. tostring(resp))
    elseif resp == nil then
      failed(tok, "pull failed: " .. tostring(perr))
    else
      local payload = opts.payload and opts.payload(resp) or nil
      local rok, updated, rerr = pcall(self.record, self, tok, resp, payload)
      if not rok then
        failed(tok, "bad response: " .. tostring(updated))
      elseif not updated then
        if rerr.code == "unavailable" then return nil, rerr end
        failed(tok, tostring(rerr))
      else
        report.recorded = report.recorded + 1
        report.records[tok] = updated
      end
    end
  end
  return report
end

return sweep
