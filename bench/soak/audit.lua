-- bench/soak's ledger audit, run by the eidkit program:
--   eidkit run bench/soak/audit.lua LEDGER_URL TOKENS_FILE
-- For every token the load was issued (one JSON line each): the ledger holds
-- it, bound to the load's subject; every one the load saw passed or failed
-- is consumed in the ledger with that verdict (ErrCode 0 or 2016), once: a
-- second consume by its subject is refused as already consumed. Prints a
-- JSON summary; exits 1 when any token is unaccounted for.
local eidkit_ledger = require "eidkit.ledger"
local cjson = require "cjson"

local url, file = ...
local ledger = assert(eidkit_ledger.open(url))
local n, missing, wrong_subject, settled, consumed_ok, verdict_mismatch, not_consumed, consumed_twice =
  0, 0, 0, 0, 0, 0, 0, 0
local states = {}
for line in io.lines(file) do
  local t = cjson.decode(line)
  n = n + 1
  local rec = ledger:get(t.tok)
  if not rec then
    missing = missing + 1
  else
    states[rec.state] = (states[rec.state] or 0) + 1
    if rec.subject ~= t.subject then wrong_subject = wrong_subject + 1 end
    if t.status == "passed" or t.status == "failed" then
      settled = settled + 1
      local want = t.status == "passed" and 0 or 2016
      if rec.state ~= "consumed" then
        not_consumed = not_consumed + 1
      elseif rec.ErrCode ~= want then
        verdict_mismatch = verdict_mismatch + 1
      else
        consumed_ok = consumed_ok + 1
      end
      local again, err = ledger:consume(t.tok, t.subject)
      if again or not err or err.code ~= "consumed" then consumed_twice = consumed_twice + 1 end
    end
  end
end
ledger:close()
local bad = missing + wrong_subject + verdict_mismatch + not_consumed + consumed_twice
print(cjson.encode { tokens = n, missing = missing, wrong_subject = wrong_subject, settled_seen = settled,
  consumed_with_verdict = consumed_ok, verdict_mismatch = verdict_mismatch, settled_not_consumed = not_consumed,
  second_consume_allowed = consumed_twice, states = states })
os.exit(bad == 0 and 0 or 1)
