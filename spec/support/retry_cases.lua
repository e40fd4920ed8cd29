-- One table of retry decisions (eidkit/retry.h), run through both hosts by
-- spec/client/retry_decide_spec.lua: Lua 5.4 through eidkit.core, LuaJIT
-- through eidkit.ffi.retry. Each case: facts (and rules) in, the exact
-- verdict (or the misuse message) out. Kept to what Lua 5.4 and LuaJIT both
-- run. The rules and their reasons: docs/internals/client.md.

-- A verdict with the defaults of a final failure; t overrides.
local function verdict(t)
  local v = { status = "transport", code = "", transient = false, sent = true, retryable = false,
    adopt_skew = false, skew = 0, resign = false, ask_policy = true, keep_received = false }
  for k, x in pairs(t) do v[k] = x end
  return v
end

-- A retryable failure: backoff b, and with jitter 0.5 and time to spare the
-- default delay b/2.
local function retry(t, b)
  t.transient, t.retryable, t.backoff, t.default_delay, t.delay = true, true, b, b / 2, b / 2
  return verdict(t)
end

local function facts(action, outcome, t)
  local f = { action = action, attempts = 1, outcome = outcome, sent = true, remaining = 10,
    jitter = 0.5 }
  for k, x in pairs(t or {}) do f[k] = x end
  return f
end

local R, T, READ = "GetEidResult", "GetEidToken", "CheckEidTokenStatus"

local cases = {
  -- 200 answers
  { "success", facts(R, "ok"), verdict { status = "ok", ask_policy = false } },
  { "remote, permanent", facts(R, "remote", { remote_code = "InvalidParameter" }),
    verdict { status = "remote", code = "InvalidParameter" } },
  { "remote transient, read", facts(R, "remote", { remote_code = "InternalError.Db" }),
    retry({ status = "remote", code = "InternalError.Db" }, 0.1) },
  { "remote transient, GetEidToken sent: never again", facts(T, "remote", { remote_code = "InternalError" }),
    verdict { status = "remote", code = "InternalError", transient = true } },
  { "throttled GetEidToken is retried (the service refused it)",
    facts(T, "remote", { remote_code = "RequestLimitExceeded.UinLimitExceeded", attempts = 2 }),
    retry({ status = "remote", code = "RequestLimitExceeded.UinLimitExceeded" }, 0.2) },
  { "FailedOperation.DbError is transient", facts(READ, "remote", { remote_code = "FailedOperation.DbError" }),
    retry({ status = "remote", code = "FailedOperation.DbError" }, 0.1) },
  { "ResourceUnavailable.* is transient", facts(R, "remote", { remote_code = "ResourceUnavailable.X" }),
    retry({ status = "remote", code = "ResourceUnavailable.X" }, 0.1) },
  { "malformed", facts(R, "malformed"), verdict { code = "bad_response" } },
  { "no memory for the Response: stop, no policy", facts(R, "nomem"),
    verdict { status = "nomem", code = "nomem", ask_policy = false } },

  -- clock skew
  { "SignatureExpire with a Date: adopt and re-sign at once, GetEidToken too",
    facts(T, "remote", { remote_code = "AuthFailure.SignatureExpire", server_time = 1700000600,
      local_time = 1700000000 }),
    verdict { status = "remote", code = "AuthFailure.SignatureExpire", adopt_skew = true, skew = 600,
      resign = true, ask_policy = false, delay = 0 } },
  { "SignatureExpire, server behind",
    facts(R, "remote", { remote_code = "AuthFailure.SignatureExpire", server_time = 1000, local_time = 1600 }),
    verdict { status = "remote", code = "AuthFailure.SignatureExpire", adopt_skew = true, skew = -600,
      resign = true, ask_policy = false, delay = 0 } },
  { "SignatureExpire a second time in a call: final",
    facts(R, "remote", { remote_code = "AuthFailure.SignatureExpire", server_time = 1000, local_time = 1600,
      skew_retried = true, attempts = 2 }),
    verdict { status = "remote", code = "AuthFailure.SignatureExpire" } },
  { "SignatureExpire without a Date: nothing to adopt",
    facts(R, "remote", { remote_code = "AuthFailure.SignatureExpire" }),
    verdict { status = "remote", code = "AuthFailure.SignatureExpire" } },
  { "SignatureExpire at the deadline: adopt, then stop",
    facts(R, "remote", { remote_code = "AuthFailure.SignatureExpire", server_time = 1000, local_time = 1600,
      remaining = 0.0005 }),
    verdict { status = "remote", code = "AuthFailure.SignatureExpire", adopt_skew = true, skew = -600 } },

  -- other HTTP statuses
  { "503, read", facts(R, "http", { http_status = 503 }),
    retry({ code = "http_503", keep_received = true }, 0.1) },
  { "429, read", facts(R, "http", { http_status = 429 }),
    retry({ code = "http_429", keep_received = true }, 0.1) },
  { "404: permanent", facts(R, "http", { http_status = 404 }),
    verdict { code = "http_404", keep_received = true } },
  { "502 after GetEidToken was sent: final", facts(T, "http", { http_status = 502 }),
    verdict { code = "http_502", transient = true, keep_received = true } },

  -- transport failures
  { "timeout before sending, GetEidToken: retried", facts(T, "timeout", { sent = false }),
    retry({ code = "timeout", sent = false }, 0.1) },
  { "timeout after sending, GetEidToken: final", facts(T, "timeout"),
    verdict { code = "timeout", transient = true } },
  { "timeout after sending, read, third attempt", facts(R, "timeout", { attempts = 3 }),
    retry({ code = "timeout" }, 0.4) },
  { "connect: never sent, whatever the transport said", facts(T, "connect", { sent = true }),
    retry({ code = "connect", sent = false }, 0.1) },
  { "reset, GetEidToken: final", facts(T, "reset"), verdict { code = "reset", transient = true } },
  { "reset, an unknown action: final", facts("Foo", "reset"), verdict { code = "reset", transient = true } },
  { "reset, read", facts("GetWeChatBillDetails", "reset"), retry({ code = "reset" }, 0.1) },
  { "tls: never sent, permanent", facts(R, "tls"), verdict { code = "tls", sent = false } },
  { "truncated body, read", facts(R, "truncated"), retry({ code = "bad_response" }, 0.1) },
  { "too big", facts(R, "too_big"), verdict { code = "bad_response" } },
  { "no memory receiving", facts(R, "recv_nomem"), verdict { code = "nomem" } },
  { "other transport failure", facts(R, "other"), verdict { code = "transport" } },

  -- keep_received: a body goes into the error only from an answer whose
  -- status is not 200 (a proxy's page); a 200 body may hold an identity
  { "truncated 200: no body kept", facts(R, "truncated", { http_status = 200 }),
    retry({ code = "bad_response" }, 0.1) },
  { "truncated 502 page: kept", facts(R, "truncated", { http_status = 502 }),
    retry({ code = "bad_response", keep_received = true }, 0.1) },
  { "too big 200: no body kept", facts(R, "too_big", { http_status = 200 }), verdict { code = "bad_response" } },
  { "too big 502 page: kept", facts(R, "too_big", { http_status = 502 }),
    verdict { code = "bad_response", keep_received = true } },
  { "malformed 200: no body kept", facts(R, "malformed", { http_status = 200 }), verdict { code = "bad_response" } },
  { "malformed, whatever status is claimed: no body kept", facts(R, "malformed", { http_status = 502 }),
    verdict { code = "bad_response" } },
  { "an http outcome claiming 200: no body kept", facts(R, "http", { http_status = 200 }),
    verdict { code = "http_200" } },
  { "truncated without a status: no body kept", facts(R, "truncated"), retry({ code = "bad_response" }, 0.1) },
  { "a 200 success or remote error is no error body", facts(R, "remote", { http_status = 200,
    remote_code = "InvalidParameter" }), verdict { status = "remote", code = "InvalidParameter" } },
  { "reset after a 502 status line: no body kept", facts(R, "reset", { http_status = 502 }),
    retry({ code = "reset" }, 0.1) },

  -- the ladder, the cap, the attempts and the deadline
  { "attempts used up", facts(R, "timeout", { attempts = 4 }),
    verdict { code = "timeout", transient = true, retryable = true } },
  { "the ladder stops at the cap", facts(R, "reset", { attempts = 9 }), retry({ code = "reset" }, 0.5),
    rules = { max_attempts = 10, base = 0.1, cap = 0.5 } },
  { "unsafe: GetEidToken retried like a read", facts(T, "http", { http_status = 502 }),
    retry({ code = "http_502", keep_received = true }, 0.25), rules = { unsafe = true, base = 0.25 } },
  { "jitter 0: retry at once", facts(R, "reset", { jitter = 0 }),
    verdict { code = "reset", transient = true, retryable = true, backoff = 0.1, default_delay = 0, delay = 0 } },
  { "a delay ending past the deadline: stop", facts(R, "reset", { remaining = 0.05 }),
    verdict { code = "reset", transient = true, retryable = true, backoff = 0.1, default_delay = 0.05 } },
  { "a delay ending within 1 ms of the deadline: stop", facts(R, "reset", { remaining = 0.0505 }),
    verdict { code = "reset", transient = true, retryable = true, backoff = 0.1, default_delay = 0.05 } },

  -- misuse names the field
  { "jitter out of [0, 1)", facts(R, "reset", { jitter = 1 }), error = "(jitter: must be in [0, 1))" },
  { "attempts 0", facts(R, "reset", { attempts = 0 }), error = "(attempts: must be at least 1)" },
  { "no action", facts(R, "reset", { action = false }), error = "bad field 'action' (expected string)" },
  { "unknown outcome", facts(R, "lost"), error = "bad field 'outcome' (expected an outcome name such as 'timeout')" },
  { "unknown fact", facts(R, "reset", { bytes = 1 }), error = "bad facts (unknown field 'bytes')" },
  { "unknown rule", facts(R, "reset"), rules = { attempts = 3 }, error = "bad rules (unknown field 'attempts')" },
  { "negative rule", facts(R, "reset"), rules = { cap = -1 },
    error = "(backoff_cap: must be 0.001..3600 seconds (0: the default))" },
  -- The ranges both clients' `retry` options get (eid_retry_check_rules).
  { "max_attempts past 100", facts(R, "reset"), rules = { max_attempts = 101 },
    error = "(max_attempts: must be 1..100 (0: the default))" },
  { "base under a millisecond", facts(R, "reset"), rules = { base = 0.0005 },
    error = "(backoff_base: must be 0.001..3600 seconds (0: the default))" },
  { "cap over an hour", facts(R, "reset"), rules = { cap = 3601 },
    error = "(backoff_cap: must be 0.001..3600 seconds (0: the default))" },
}

-- The deadline rule for a policy's answer: {remaining, wanted, result}.
local delays = {
  { 10, 1.5, 1.5 },
  { 10, 0, 0 },
  { 10, -1, nil },
  { 1, 0.999, nil },
  { 1, 0.9985, 0.9985 },
  { 0, 0, nil },
}

return { cases = cases, delays = delays }
