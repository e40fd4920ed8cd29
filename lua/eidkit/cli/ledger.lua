-- eidkit ledger: operate the EidToken ledger from the shell (stats, the
-- reconciliation export, expiry and the result sweep).
local ledger_mod = require "eidkit.ledger"
local reconcile = require "eidkit.ledger.reconcile"
local args = require "eidkit.cli.args"
local core = require "eidkit.core"
local settings = require "eidkit.gateway.settings"

local stdout, stderr = io.stdout, io.stderr
local format, concat = string.format, table.concat
local getenv = os.getenv

local _M = {}

local STATES = { "issued", "passed", "failed", "consumed", "expired", "abandoned" }

local spec = {
  { name = "ledger", arg = "URL",
    help = "an existing sqlite:PATH or redis://[[USER]:PASSWORD@]HOST:PORT[/DB] (default: $EIDKIT_LEDGER, else " .. settings.DEFAULT_LEDGER .. ")" },
  { name = "date", arg = "YYYY-MM-DD", help = "export, reconcile: the day (required), in --tz" },
  { name = "tz", arg = "ZONE",
    help = "export, reconcile: Asia/Shanghai (default: Tencent bills by Beijing day), UTC or +HH:MM" },
  { name = "per", arg = "WHAT", help = "export: token (default) or attempt, what one row is" },
  { name = "format", arg = "FMT", help = "export: csv (default) or jsonl" },
  { name = "output", arg = "FILE", help = "export: write to FILE instead of standard output" },
  { name = "limit", arg = "N", help = "sweep: at most N tokens (default 100)" },
  { name = "endpoint", arg = "URL",
    help = "sweep: the API endpoint (default: $EIDKIT_ENDPOINT, else https://faceid.tencentcloudapi.com)" },
  { name = "ca-file", arg = "FILE", help = "sweep: trust this CA bundle for the endpoint" },
  { name = "info-type", arg = "DIGITS", help = "sweep: GetEidResult InfoType (default 1: the verdict and billing)" },
  { name = "json", help = "stats, expire, reconcile: print one JSON object" },
  { name = "help", help = "show this help" },
}

function _M.help()
  return "usage: eidkit ledger stats|export|reconcile|sweep|expire [options]\n\n" .. [[
  stats    tokens per state, billable attempts, tokens due for a pull
  export   one day of the ledger as Tencent bills it (--date YYYY-MM-DD, in
           --tz, default Asia/Shanghai): --per token (default), the tokens
           issued that day or with an attempt whose ReqTime is in it, with the
           day's attempts and charges; --per attempt, each LivenessDetail
           entry of the day (--format csv|jsonl)
  reconcile
           the day's totals: tokens issued, attempts, billable attempts by
           verdict (0, 2006, 2016) and by intention on/off, tokens still open
           (their count can change), tokens whose count grew after they were
           consumed (--date YYYY-MM-DD, --tz, --json)
  expire   move tokens past their TTL to expired and past the 3-day result
           window to abandoned
  sweep    expire, then pull the result of every due token from Tencent
           (GetEidResult) and record it; credentials come from
           TENCENTCLOUD_SECRET_ID/_SECRET_KEY/_SESSION_TOKEN, the profile file
           (~/.tencentcloud/credentials) or the CVM role

options:
]] .. args.help(spec) .. "\n"
end

-- The message on stderr; the exit status (default 2: the command line is wrong).
local function exit_error(msg, code)
  stderr:write("eidkit ledger: ", msg, "\n")
  return code or 2
end

-- Text from merchants (subject, MerchantId, Extra) may start with = + - @:
-- a spreadsheet opening the export would run it as a formula, so such text
-- gets a leading apostrophe (OWASP's CSV-injection advice). Numbers pass.
local function csv_field(v)
  local text = type(v) == "string"
  v = v == nil and "" or tostring(v)
  if text and v:find("^[=+%-@\t\r]") then v = "'" .. v end
  if v:find('[,"\r\n]') then v = '"' .. v:gsub('"', '""') .. '"' end
  return v
end

local TOKEN_COLUMNS = { "EidToken", "MerchantId", "subject", "Extra", "intention", "created", "finished",
  "state", "ErrCode", "late_ErrCode", "billable", "settled_billable", "attempts", "day_attempts",
  "day_billable", "open", "RequestIds" }

local ATTEMPT_COLUMNS = { "EidToken", "MerchantId", "Extra", "intention", "Seq", "ReqTime", "ReqTime_ms",
  "Errcode", "IsNeedCharge", "Sim", "LivenessMode", "CompareLibType", "ErrCode", "late_ErrCode", "state" }

local function token_row(rec, off)
  local billed = 0
  for _, a in ipairs(rec.day_attempts) do
    if a.IsNeedCharge then billed = billed + 1 end
  end
  return {
    EidToken = rec.EidToken, MerchantId = rec.MerchantId, subject = rec.subject, Extra = rec.Extra,
    intention = rec.intention, created = reconcile.iso(rec.created_at, off),
    finished = reconcile.iso(rec.finished_at, off), state = rec.state, ErrCode = rec.ErrCode,
    late_ErrCode = rec.late_ErrCode, billable = rec.billable, settled_billable = rec.settled_billable,
    attempts = rec.attempts, day_attempts = #rec.day_attempts, day_billable = billed,
    open = rec.open == true, RequestIds = rec.request_ids,
  }
end

local function attempt_row(a, off)
  local rec = a.token
  return {
    EidToken = rec.EidToken, MerchantId = rec.MerchantId, Extra = rec.Extra, intention = rec.intention,
    Seq = a.Seq, ReqTime = reconcile.iso(a.ReqTime // 1000, off, a.ReqTime % 1000), ReqTime_ms = a.ReqTime,
    Errcode = a.Errcode, IsNeedCharge = a.IsNeedCharge, Sim = a.Sim, LivenessMode = a.LivenessMode,
    CompareLibType = a.CompareLibType, ErrCode = rec.ErrCode, late_ErrCode = rec.late_ErrCode,
    state = rec.state,
  }
end

local function export(ledger, opts, out)
  if not opts.date then return exit_error("export needs --date YYYY-MM-DD") end
  local fmt = opts.format or "csv"
  if fmt ~= "csv" and fmt ~= "jsonl" then
    return exit_error(format("--format: expected csv or jsonl, got '%s'", fmt))
  end
  local per = opts.per or "token"
  if per ~= "token" and per ~= "attempt" then
    return exit_error(format("--per: expected token or attempt, got '%s'", per))
  end
  local day, err = reconcile.day(ledger, opts.date, opts.tz)
  if not day then
    if type(err) == "string" then return exit_error(err) end
    return exit_error(tostring(err), 1)
  end
  local f = out
  if opts.output then
    local ferr
    f, ferr = io.open(opts.output, "w")
    if not f then return exit_error("--output: " .. tostring(ferr), 1) end
  end
  local columns = per == "token" and TOKEN_COLUMNS or ATTEMPT_COLUMNS
  local list = per == "token" and day.tokens or day.attempts
  local make = per == "token" and token_row or attempt_row
  if fmt == "csv" then
    f:write(concat(columns, ","), "\n")
    for _, item in ipairs(list) do
      local r, cells = make(item, day.offset), {}
      if r.RequestIds then r.RequestIds = concat(r.RequestIds, " ") end
      for i, c in ipairs(columns) do cells[i] = csv_field(r[c]) end
      f:write(concat(cells, ","), "\n")
    end
  else
    local cjson = require "cjson"
    for _, item in ipairs(list) do
      local r = make(item, day.offset)
      -- lua-cjson 2.1.0 writes an empty table as {}; RequestIds is a list.
      local empty = r.RequestIds and #r.RequestIds == 0
      if empty then r.RequestIds = nil end
      local line = cjson.encode(r)
      if empty then line = line:sub(1, -2) .. ',"RequestIds":[]}' end
      f:write(line, "\n")
    end
  end
  if f ~= out then f:close() end
  return 0
end

local function reconcile_day(ledger, opts, out)
  if not opts.date then return exit_error("reconcile needs --date YYYY-MM-DD") end
  local day, err = reconcile.day(ledger, opts.date, opts.tz)
  if not day then
    if type(err) == "string" then return exit_error(err) end
    return exit_error(tostring(err), 1)
  end
  local t = reconcile.totals(day)
  if opts.json then
    local cjson = require "cjson"
    local line = cjson.encode(t)
    -- lua-cjson 2.1.0 writes an empty table as {}; open and changed are lists.
    line = line:gsub('"open":{}', '"open":[]'):gsub('"changed":{}', '"changed":[]')
    out:write(line, "\n")
    return 0
  end
  out:write(format("date              %s (%s, %s)\n", t.date, t.tz, reconcile.iso(0, day.offset):sub(20)))
  out:write(format("tokens issued     %d\nattempts          %d\nbillable          %d\n", t.tokens_issued,
    t.attempts, t.billable))
  for _, c in ipairs(reconcile.BILLED_CODES) do
    out:write(format("  ErrCode %-7d %d\n", c, t.billable_by_code[tostring(c)]))
  end
  out:write(format("  other ErrCode   %d\n", t.billable_by_code.other))
  out:write(format("  intention on    %d\n  intention off   %d\n", t.billable_by_intention.on,
    t.billable_by_intention.off))
  out:write(format("open              %d\n", #t.open))
  for _, tok in ipairs(t.open) do out:write("  ", tok, "\n") end
  out:write(format("changed           %d\n", #t.changed))
  for _, c in ipairs(t.changed) do
    out:write(format("  %s billable %d, %d when consumed\n", c.EidToken, c.billable, c.settled_billable))
  end
  return 0
end

local function stats(ledger, opts, out)
  local s, err = ledger:stats()
  if not s then return exit_error(tostring(err), 1) end
  if opts.json then
    s.backend = ledger:backend()
    out:write(require("cjson").encode(s), "\n")
    return 0
  end
  out:write(format("%-10s %s\n", "backend", ledger:backend()))
  for _, k in ipairs(STATES) do out:write(format("%-10s %d\n", k, s[k])) end
  out:write(format("%-10s %d\n%-10s %d\n%-10s %d\n", "total", s.total, "billable", s.billable,
    "due", s.due))
  return 0
end

local function expire(ledger, opts, out)
  local r, err = ledger:expire()
  if not r then return exit_error(tostring(err), 1) end
  if opts.json then
    out:write(require("cjson").encode(r), "\n")
  else
    out:write(format("expired %d, abandoned %d\n", r.expired, r.abandoned))
  end
  return 0
end

-- The puller: GetEidResult through the API client, when this build has one.
-- The GetEidResult puller for sweep: an eidkit.client on --endpoint (or
-- $EIDKIT_ENDPOINT, else Tencent's) with the default credential chain
-- (environment, profile file, CVM role). Returns pull, client or nil, why.
function _M.puller(opts)
  local client_mod = require "eidkit.client"
  local endpoint = opts.endpoint or getenv("EIDKIT_ENDPOINT")
  if endpoint == "" then endpoint = nil end
  local ok, client = pcall(client_mod.new, { endpoint = endpoint, ca_file = opts.ca_file })
  if not ok then return nil, "--endpoint/--ca-file: " .. tostring(client) end
  -- Ask for credentials now, so a missing key is one clear line rather
  -- than one failure per token.
  local creds, err = client.provider:get()
  if not creds then
    client:close()
    return nil, "no credentials to pull results with: " .. tostring(err)
  end
  return client:ledger_puller(opts.info_type or "1"), client
end

local function sweep(ledger, opts, out)
  local limit = 100
  if opts.limit then
    limit = math.tointeger(tonumber(opts.limit))
    if not limit or limit < 1 or limit > 100000 or not opts.limit:match("^%d+$") then
      return exit_error(format("--limit: expected 1..100000, got '%s'", opts.limit))
    end
  end
  if opts.info_type and not opts.info_type:match("^[012356]+$") then
    return exit_error(format("--info-type: expected digits of 0, 1, 2, 3, 5, 6, got '%s'", opts.info_type))
  end
  local pull, client = _M.puller(opts)
  if not pull then
    -- Do the ledger's part (expiry), then say plainly what is missing.
    local r, err = ledger:expire()
    if not r then return exit_error(tostring(err), 1) end
    local due = ledger:due(limit)
    out:write(format("expired %d, abandoned %d, due %d (not pulled)\n", r.expired, r.abandoned,
      due and #due or 0))
    return exit_error(client, 3)
  end
  local report, err = ledger:sweep(pull, { limit = limit })
  client:close()
  if not report then return exit_error(tostring(err), 1) end
  out:write(format("expired %d, abandoned %d, due %d, recorded %d, failed %d\n", report.expired,
    report.abandoned, report.due, report.recorded, report.failed))
  for _, f in ipairs(report.failures) do
    stderr:write(format("  %s: %s\n", f.EidToken, f.message))
  end
  return report.failed > 0 and 1 or 0
end

local actions = { stats = stats, export = export, reconcile = reconcile_day, expire = expire, sweep = sweep }

-- argv: the arguments after "ledger". Returns the exit code.
function _M.main(argv, out)
  out = out or stdout
  local opts, positional = args.parse(spec, argv)
  if not opts then return exit_error(positional .. " (see eidkit help ledger)") end
  if opts.help then out:write(_M.help()) return 0 end
  local action = actions[positional[1] or ""]
  if not action then
    return exit_error(positional[1] and format("unknown action '%s' (stats, export, reconcile, sweep or expire)",
      positional[1]) or "expected an action: stats, export, reconcile, sweep or expire")
  end
  if positional[2] then return exit_error(format("unexpected argument '%s'", positional[2])) end
  local url, label = settings.ledger_source(opts.ledger, getenv)
  local uerr
  url, uerr = settings.ledger_url(url, label, core.ledger_check_url)
  if not url then return exit_error(uerr) end
  -- Opening creates a SQLite file that is not there: for these commands a
  -- mistyped path would be an empty ledger reporting nothing to bill.
  local path = url:match("^sqlite:(.+)$")
  if path and path ~= ":memory:" then
    local f = io.open(path, "rb")
    if not f then
      return exit_error(format("%s: no ledger at %s (no such file; eidkit serve or the flow makes one)",
        label, path), 1)
    end
    f:close()
  end
  local ok, ledger, err = pcall(ledger_mod.open, url)
  if not ok then return exit_error(label .. ": " .. (tostring(ledger):match("%((.*)%)$") or tostring(ledger))) end
  if not ledger then return exit_error(tostring(err), 1) end
  local code = action(ledger, opts, out)
  ledger:close()
  return code
end

return _M
