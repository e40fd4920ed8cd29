-- Served by nginx (content_by_lua_file) for spec/openresty/ledger_spec.lua:
-- the worker side of the spec, calling eidkit.openresty.ledger as a
-- merchant's handler would and answering in JSON.
--   POST /ledger {url, opts, now, op, args}  -> {res =, err =, noscript =, pid =}
--                (op "sweep": args {opts}, answers {EidToken = response} for its pull)
--   GET  /shas?url=                          -> {name = sha1 hex}
--   GET  /timed?url=&tok=[&pool_size=][&op=record]
--                                            -> {start =, finish =, ok =, code =, batches =}: issues
--                                               tok (op=record: records a pending answer for it),
--                                               with the worker's clock before and after
--                                               (pool_size: the ledger's, when the url is new)
local cjson = require "cjson.safe"
local orledger = require "eidkit.openresty.ledger"

-- Per worker: this chunk runs for every request, package.loaded lives on.
local state = package.loaded["spec.orledger_state"]
if not state then
  state = { ledgers = {}, now = 0 }
  package.loaded["spec.orledger_state"] = state
end

local function ledger(url, opts)
  local l = state.ledgers[url]
  if not l then
    opts = opts or {}
    -- The spec's frozen clock, set by each request.
    opts.clock = function() return state.now end
    local err
    l, err = orledger.open(url, opts)
    if not l then error(tostring(err), 0) end
    state.ledgers[url] = l
  end
  return l
end

local function reply(t)
  ngx.header["Content-Type"] = "application/json"
  ngx.print(cjson.encode(t))
end

local function plain_error(err)
  if err == nil then return nil end
  return { code = err.code, message = err.message, retryable = err.retryable }
end

local uri = ngx.var.uri
if uri == "/ledger" then
  ngx.req.read_body()
  local req = cjson.decode(ngx.req.get_body_data() or "")
  if type(req) ~= "table" then ngx.status = 400 return ngx.print("bad JSON") end
  state.now = req.now or ngx.time()
  local lok, l = pcall(ledger, req.url, req.opts)
  if not lok then return reply { raised = tostring(l), pid = ngx.worker.pid() } end
  local args = req.args or {}
  if req.op == "sweep" then
    -- The pull answers from req.answers (by EidToken), or fails.
    local answers = req.answers or {}
    args = { function(tok) if answers[tok] then return answers[tok] end return nil, "no answer for this token" end,
      req.args and req.args[1] }
  end
  local ok, res, err = pcall(l[req.op], l, unpack(args))
  if not ok then return reply { raised = tostring(res), pid = ngx.worker.pid() } end
  -- take's second result is the wait, not an error.
  local retry
  -- As text, to the bit (this cjson encodes 14 digits at most).
  if req.op == "take" and res ~= nil then retry, err = err and string.format("%.17g", err), nil end
  return reply { res = res == nil and cjson.null or res, err = plain_error(err), retry = retry,
    noscript = l.noscript, batches = l.batches, pid = ngx.worker.pid() }
elseif uri == "/shas" then
  return reply(ledger(ngx.unescape_uri(ngx.var.arg_url)):script_shas())
elseif uri == "/timed" then
  local pool_size = tonumber(ngx.var.arg_pool_size)
  local l = ledger(ngx.unescape_uri(ngx.var.arg_url), pool_size and { pool_size = pool_size } or nil)
  if state.now == 0 then state.now = ngx.time() end
  ngx.update_time()
  local start = ngx.now()
  local ok, err
  if ngx.var.arg_op == "record" then
    -- A pending answer with a RequestId of its own (the token's name).
    local rec
    rec, err = l:record(ngx.var.arg_tok, { Text = { LivenessDetail = {} }, RequestId = "rq-" .. ngx.var.arg_tok })
    ok = rec ~= nil and rec.pulls == 1 and rec.request_ids[1] == "rq-" .. ngx.var.arg_tok
  else
    ok, err = l:issue { EidToken = ngx.var.arg_tok, MerchantId = "m", subject = "s" }
    ok = ok == true
  end
  ngx.update_time()
  return reply { start = start, finish = ngx.now(), ok = ok, code = err and err.code, batches = l.batches }
end
ngx.status = 404
