-- A merchant's verification service on eidkit.flow, and a command that runs
-- one verification from start to outcome.
--
--   build/eidkit run examples/flow.lua                      -- against a simulator it starts
--   build/eidkit run examples/flow.lua --user fail:2016     -- ... where the user fails (or abandon)
--   build/eidkit run examples/flow.lua --endpoint URL --merchant ID [--ledger FILE]
--       -- against a running `eidkit sim` or Tencent (credentials from the
--       -- TENCENTCLOUD_* variables or ~/.tencentcloud/credentials): prints the
--       -- Url, waits for the user to finish on it, then prints the outcome
--
-- As a module (examples/flow_spec.lua tests it with eidkit.testing):
--   local service = require("flow").new{ flow = eidkit.flow{...} }
--   local started = service:begin{ id = "user-42", name = ..., id_card = ... }
--   local outcome, message = service:complete(user, started.EidToken)
local eidkit = require "eidkit"
local eidflow = eidkit.flow

local format = string.format

local M = {}
local mt = { __index = {} }
local service = mt.__index

-- What the page tells the user, by outcome.
function M.message(outcome)
  if outcome.status == "passed" then return "Verified." end
  if outcome.status == "pending" then return "Still in progress: come back when you have finished." end
  if outcome.retry_with_new_token then return "That did not work. Please try again." end
  if outcome.reason == "identity_rejected" then
    return "We could not verify this identity. Please visit a branch with your ID card."
  end
  return "Verification is not available right now. Please contact support."
end

-- new{ flow = an eidkit.flow } -> service
function M.new(opts)
  assert(type(opts) == "table" and opts.flow, "new{ flow = eidkit.flow{...} }")
  return setmetatable({ flow = opts.flow }, mt)
end

-- begin(user) -> {EidToken, Url, expires_at} | nil, err: a token for this
-- user, stored in the ledger before the front end sees it.
function service:begin(user)
  return self.flow:start {
    subject = user.id,
    Name = user.name, IdCard = user.id_card,
    Config = { InputType = "4" }, -- we pass name and ID number: the user only does the face check
  }
end

-- complete(user, EidToken) -> outcome, message | nil, err. Called when the
-- front end says the user is back (verifyDoneCallback, the H5 redirect, an
-- onShow): never trusts that signal, always pulls the result server-side.
function service:complete(user, tok)
  local outcome, err = self.flow:finish { subject = user.id, EidToken = tok }
  if not outcome then return nil, err end
  return outcome, M.message(outcome)
end

-- sweep() -> tokens recorded: pull the results front ends never reported (cron).
function service:sweep()
  return self.flow:sweep { limit = 100 }
end

-- ----------------------------------------------------------- the command

local DEMO_USER = { id = "user-42", name = "张三", id_card = "11010519491231002X" }

local function parse(argv)
  local o = { user = "pass" }
  local i = 1
  while argv[i] do
    local k, v = argv[i]:match("^%-%-([%w-]+)$"), argv[i + 1]
    if not k or not v then error("usage: flow.lua [--endpoint URL --merchant ID [--ledger FILE]] "
      .. "[--user pass|fail:CODE|abandon]", 0) end
    o[k] = v
    i = i + 2
  end
  return o
end

local function report(outcome, message)
  if not outcome then -- e.g. the policy's on_outcome alert
    io.stderr:write("flow.lua: ", tostring(message), "\n")
    os.exit(1, true) -- true: close the state, so the simulator is stopped
  end
  print(format("status=%s code=%s reason=%s retry_with_new_token=%s billable=%s", outcome.status,
    tostring(outcome.code), outcome.reason, tostring(outcome.retry_with_new_token),
    tostring(outcome.billable)))
  print(message)
end

-- Against a simulator the kit starts: the user is played as --user says.
local function run_simulated(o, policy)
  local testing = require "eidkit.testing"
  local sim <close> = testing.sim {}
  local svc = M.new { flow = sim:flow { policy = policy } }
  local started = assert(svc:begin(DEMO_USER))
  print("EidToken " .. started.EidToken .. " (simulator at " .. sim.url .. ")")
  local code = o.user:match("^fail:(%-?%d+)$")
  if o.user == "pass" then
    assert(sim:pass(started.EidToken))
  elseif code then
    assert(sim:fail(started.EidToken, math.tointeger(tonumber(code))))
  elseif o.user == "abandon" then
    assert(sim:abandon(started.EidToken))
    print("swept: " .. tostring(svc:sweep()))
  else
    error("--user: expected pass, fail:CODE or abandon", 0)
  end
  report(svc:complete(DEMO_USER, started.EidToken))
end

-- Against a real endpoint: the user opens the Url; we poll until done.
local function run_remote(o, policy)
  assert(o.merchant, "--merchant ID is required with --endpoint")
  local client = eidkit.client { endpoint = o.endpoint }
  local ledger = assert(eidkit.ledger.open("sqlite:" .. (o.ledger or "eidkit-example.db")))
  local svc = M.new { flow = eidflow { client = client, ledger = ledger,
    merchant_id = o.merchant, policy = policy } }
  local started = assert(svc:begin(DEMO_USER))
  print("open this on a phone (or in a browser for eidkit sim): " .. started.Url)
  local st = assert(svc.flow:poll_h5 { EidToken = started.EidToken, subject = DEMO_USER.id,
    max_wait = 600 })
  print("status " .. st.status .. " after " .. st.polls .. " polls")
  local outcome, message = svc:complete(DEMO_USER, started.EidToken)
  ledger:close()
  report(outcome, message)
end

function M.main(argv)
  local o = parse(argv)
  local policy = require "policy"
  if o.endpoint then run_remote(o, policy) else run_simulated(o, policy) end
end

-- Required as a module (require passes the name and the file): the service.
-- Run as a script: the command, with this directory on package.path.
local name, file = ...
if name == "flow" and type(file) == "string" then return M end
local dir = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
package.path = dir .. "/?.lua;" .. package.path
M.main(arg or {})
