-- Differential test: eidkit's C signer against spec/tools/tc3_reference.py,
-- a TC3 implementation written separately from the algorithm text. Shared
-- vectors only pin the handful of inputs someone thought of; random requests
-- reach the corners (UTC date rollover, long and binary secrets, header case,
-- megabyte bodies, the derived-key cache) where the two would drift apart.
--
-- Every run uses a fresh seed unless EIDKIT_DIFF_SEED is set; a failure
-- prints the seed and case numbers. Each case has its own generator derived
-- from (seed, index), so EIDKIT_DIFF_SEED=s EIDKIT_DIFF_ONLY=i replays one
-- case alone. EIDKIT_DIFF_CASES changes the number of cases.

local scratch = require "support.scratch"
local cjson = require "cjson"
local eidkit = require "eidkit"

local MIB = 1048576
local TIMESTAMP_MAX = 253402300799 -- 9999-12-31T23:59:59Z, EID_TIMESTAMP_MAX
local LAST_DAY = TIMESTAMP_MAX // 86400

-- Resolve paths from this file, not the working directory, so the spec runs
-- the same from ctest (absolute spec dir) and from the repo root.
local SPEC_FILE = debug.getinfo(1, "S").source:gsub("^@", "")
local ROOT = SPEC_FILE:gsub("spec/unit/sign_diff_spec%.lua$", "")
local REFERENCE = ROOT .. "spec/tools/tc3_reference.py"
local VECTORS = os.getenv("EIDKIT_VECTORS") or (ROOT .. "spec/vectors/tc3-vectors.json")

local SEED = math.tointeger(tonumber(os.getenv("EIDKIT_DIFF_SEED") or "")) or os.time()
local CASES = math.tointeger(tonumber(os.getenv("EIDKIT_DIFF_CASES") or "")) or 1200
local ONLY = math.tointeger(tonumber(os.getenv("EIDKIT_DIFF_ONLY") or ""))

-- ------------------------------------------------------------ generator

-- splitmix64 rather than math.random: busted and other specs reseed and
-- consume the global generator, which would make a printed seed useless.
local function new_rng(seed)
  local state = seed
  local rng = {}
  function rng.next()
    state = state + 0x9E3779B97F4A7C15
    local z = state
    z = (z ~ (z >> 30)) * 0xBF58476D1CE4E5B9
    z = (z ~ (z >> 27)) * 0x94D049BB133111EB
    return z ~ (z >> 31)
  end
  function rng.int(lo, hi) return lo + (rng.next() >> 1) % (hi - lo + 1) end
  function rng.chance(p) return (rng.next() >> 11) < p * 2 ^ 53 end
  function rng.pick(t) return t[rng.int(1, #t)] end
  return rng
end

local function case_rng(i) return new_rng(SEED ~ (i * 0xD1B54A32D192ED03)) end

local function from_set(rng, set, lo, hi)
  local out = {}
  for k = 1, rng.int(lo, hi) do
    local c = rng.int(1, #set)
    out[k] = set:sub(c, c)
  end
  return table.concat(out)
end

local LOWER = "abcdefghijklmnopqrstuvwxyz"
local DIGITS = "0123456789"
local LETTERS = LOWER .. LOWER:upper()
local ALNUM = LETTERS .. DIGITS
local VISIBLE = {} -- printable ASCII without space
for b = 0x21, 0x7e do VISIBLE[#VISIBLE + 1] = string.char(b) end
VISIBLE = table.concat(VISIBLE)
local SECRET_ID_SET = VISIBLE:gsub("[/,]", "") -- '/' and ',' frame the Credential

-- Valid UTF-8 of exactly n bytes. The width mix varies per body so some are
-- pure ASCII and some nearly all CJK or astral; NUL and controls are valid
-- UTF-8 and the C API takes pointer + length, so they are included.
local function utf8_body(rng, n)
  local w1, w2, w3 = rng.int(0, 10), rng.int(0, 10), rng.int(0, 10)
  local w4 = rng.int(0, 10)
  local total = w1 + w2 + w3 + w4
  if total == 0 then w1, total = 1, 1 end
  local chunks, buf, len = {}, {}, 0
  while len < n do
    local r, width = rng.int(1, total), 4
    if r <= w1 then width = 1 elseif r <= w1 + w2 then width = 2
    elseif r <= w1 + w2 + w3 then width = 3 end
    if width > n - len then width = n - len end
    local cp
    if width == 1 then
      cp = rng.chance(0.05) and rng.int(0, 0x1f) or rng.int(0x20, 0x7f)
    elseif width == 2 then cp = rng.int(0x80, 0x7ff)
    elseif width == 3 then
      cp = rng.int(0x800, 0xffff - 0x800) -- skip the surrogate block
      if cp >= 0xd800 then cp = cp + 0x800 end
    else cp = rng.int(0x10000, 0x10ffff) end
    buf[#buf + 1] = utf8.char(cp)
    len = len + width
    if #buf == 4096 then
      chunks[#chunks + 1] = table.concat(buf)
      buf = {}
    end
  end
  chunks[#chunks + 1] = table.concat(buf)
  return table.concat(chunks)
end

local function body_length(rng, i)
  -- Cases 1 and 2 pin the documented extremes; the rest stay mostly small
  -- so a thousand cases hash in a few seconds.
  if i == 1 then return 0 end
  if i == 2 then return MIB end
  local r = rng.int(1, 1000)
  if r <= 700 then return rng.int(0, 256)
  elseif r <= 900 then return rng.int(257, 4096)
  elseif r <= 990 then return rng.int(4097, 65536)
  else return rng.int(65537, MIB) end
end

local function secret_key(rng, pool)
  local r = rng.int(1, 10)
  -- Reused keys make the signer's derived-key cache hit with other dates
  -- and services, which is where a stale key would surface.
  if r <= 4 then return rng.pick(pool) end
  if r <= 7 then return from_set(rng, VISIBLE, 1, 64) end
  local n = rng.chance(0.2) and rng.pick({ 1, 61, 62, 63, 64, 65, 256 }) or rng.int(1, 256)
  local b = {}
  for k = 1, n do b[k] = string.char(rng.int(0, 255)) end
  return table.concat(b)
end

-- Proleptic Gregorian days since 1970-01-01 (Hinnant). Only chooses the
-- timestamps; the reference computes dates with Python's datetime.
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = y // 400
  local yoe = y - era * 400
  local doy = (153 * ((m + 9) % 12) + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  return era * 146097 + doe - 719468
end

local EDGE_YEARS = { 1970, 1971, 1972, 1999, 2000, 2001, 2023, 2024, 2025, 2038, 2099, 2100,
  2101, 2400, 9998, 9999, 10000 }

-- Returns a timestamp and, where the generator aimed at a boundary, the UTC
-- date it must produce: that proves the cases really straddle midnights.
local function timestamp(rng)
  local r = rng.int(1, 100)
  local ts, want
  if r <= 40 then
    -- Around midnight; recent days are weighted because that is production.
    local day = rng.chance(0.5) and rng.int(19000, 22000) or rng.int(0, LAST_DAY + 1)
    ts = day * 86400 + rng.int(-3, 3)
  elseif r <= 80 then
    local y = rng.chance(0.5) and rng.pick(EDGE_YEARS) or rng.int(1971, 9999)
    local off = rng.int(-9, 9)
    ts = days_from_civil(y, 1, 1) * 86400 + off
    want = off < 0 and string.format("%04d-12-31", y - 1) or string.format("%04d-01-01", y)
  elseif r <= 88 then
    -- Feb 28/29 -> Mar 1 separates leap years from the rest.
    local y = rng.pick({ 1972, 2000, 2023, 2024, 2100, 2400, rng.int(1970, 9999) })
    local off = rng.int(-5, 5)
    ts = days_from_civil(y, 3, 1) * 86400 + off
    if off >= 0 then want = string.format("%04d-03-01", y) end
  elseif r <= 94 then
    ts = rng.pick({ 0, 1, 86399, 86400, TIMESTAMP_MAX - 86400, TIMESTAMP_MAX - 1, TIMESTAMP_MAX })
  else
    ts = rng.int(0, TIMESTAMP_MAX)
  end
  if ts < 0 or ts > TIMESTAMP_MAX then
    ts = ts < 0 and 0 or TIMESTAMP_MAX
    want = nil
  end
  return ts, want
end

-- Random case for the letters of a header name: TC3 signs lower-case names
-- and the API accepts any spelling.
local function random_case(rng, s)
  return (s:gsub("%a", function(c) return rng.chance(0.5) and c:upper() or c end))
end

local function shuffle(rng, t)
  for k = #t, 2, -1 do
    local j = rng.int(1, k)
    t[k], t[j] = t[j], t[k]
  end
  return t
end

local function gen_case(i, pool)
  local rng = case_rng(i)
  local req = {}

  local id_kind = rng.int(1, 4)
  if id_kind == 1 then req.secret_id = from_set(rng, SECRET_ID_SET, 1, 128)
  else req.secret_id = "AKID" .. from_set(rng, ALNUM, 32, 32) end
  req.secret_key = secret_key(rng, pool)

  local host_kind = rng.int(1, 8)
  local label = from_set(rng, LOWER .. DIGITS .. "-", 1, 20)
  if host_kind == 1 then req.host = nil
  elseif host_kind == 2 then req.host = "faceid.tencentcloudapi.com"
  elseif host_kind == 3 then req.host = "faceid.ap-guangzhou.tencentcloudapi.com"
  elseif host_kind == 4 then req.host = "FaceID.TencentCloudAPI.com"
  elseif host_kind == 5 then req.host = "faceid.tencentcloudapi.com:" .. rng.int(1, 65535)
  elseif host_kind == 6 then req.host = "cvm.tencentcloudapi.com"
  else req.host = label .. ".tencentcloudapi.com" end
  local r = rng.int(1, 10)
  if r <= 2 then req.service = from_set(rng, LOWER .. DIGITS .. "-", 1, 63)
  elseif r == 3 then req.service = "faceid" end
  local service = req.service or (req.host or "faceid"):match("^[^.:]*"):lower()

  req.action = rng.chance(0.6)
    and rng.pick({ "GetEidToken", "GetEidResult", "CheckEidTokenStatus",
      "GetWeChatBillDetails", "DescribeInstances" })
    or from_set(rng, ALNUM, 1, 128)
  -- The version defaults only for faceid; elsewhere it is required.
  if service ~= "faceid" or rng.chance(0.5) then
    req.version = rng.chance(0.5) and rng.pick({ "2018-03-01", "2017-03-12" })
      or from_set(rng, ALNUM .. ".-", 1, 32)
  end

  r = rng.int(1, 5)
  if r == 2 then req.content_type = "application/json"
  elseif r == 3 then req.content_type = "application/json; charset=utf-8"
  elseif r == 4 then req.content_type = "Application/JSON; Charset=UTF-8"
  elseif r == 5 then
    req.content_type = from_set(rng, VISIBLE, 1, 1) .. from_set(rng, VISIBLE .. " ", 0, 253)
      .. from_set(rng, VISIBLE, 1, 1)
  end

  if rng.chance(0.5) then
    req.region = rng.chance(0.5) and rng.pick({ "ap-guangzhou", "ap-shanghai", "ap-beijing" })
      or from_set(rng, LOWER .. DIGITS .. "-", 1, 64)
  end
  if rng.chance(0.4) then
    req.language = rng.chance(0.6) and rng.pick({ "zh-CN", "en-US" })
      or from_set(rng, LETTERS .. "-", 1, 16)
  end
  if rng.chance(0.4) then
    req.token = from_set(rng, VISIBLE, 1, rng.chance(0.1) and 4096 or 200)
  end

  local want_date
  req.timestamp, want_date = timestamp(rng)

  r = rng.int(1, 10)
  if r == 1 then
    req.signed_headers = nil
  elseif r == 2 then
    req.signed_headers = {} -- an empty list means the default pair
  else
    local names = { "content-type", "host" }
    local extra = { "x-tc-action", "x-tc-version", "x-tc-timestamp" }
    if req.region then extra[#extra + 1] = "x-tc-region" end
    if req.token then extra[#extra + 1] = "x-tc-token" end
    if req.language then extra[#extra + 1] = "x-tc-language" end
    for _, name in ipairs(extra) do
      if rng.chance(0.5) then names[#names + 1] = name end
    end
    for k, name in ipairs(names) do names[k] = random_case(rng, name) end
    req.signed_headers = shuffle(rng, names)
  end

  if i == 3 then
    -- Every field at its eidkit.h maximum and every header signed: the
    -- longest canonical request and Authorization the C buffers must hold.
    local long_label = from_set(rng, LOWER .. DIGITS .. "-", 63, 63)
    req.secret_id = from_set(rng, SECRET_ID_SET, 128, 128)
    local key = {}
    for k = 1, 256 do key[k] = string.char(rng.int(0, 255)) end
    req.secret_key = table.concat(key)
    req.host = long_label .. "." .. from_set(rng, LOWER .. DIGITS .. ".-", 191, 191)
    req.service = nil
    req.action = from_set(rng, ALNUM, 128, 128)
    req.version = from_set(rng, ALNUM .. ".-", 32, 32)
    req.content_type = from_set(rng, VISIBLE, 1, 1) .. from_set(rng, VISIBLE .. " ", 253, 253)
      .. from_set(rng, VISIBLE, 1, 1)
    req.region = from_set(rng, LOWER .. DIGITS .. "-", 64, 64)
    req.language = from_set(rng, LETTERS .. "-", 16, 16)
    req.token = from_set(rng, VISIBLE, 4096, 4096)
    local names = { "content-type", "host", "x-tc-action", "x-tc-language", "x-tc-region",
      "x-tc-timestamp", "x-tc-token", "x-tc-version" }
    for k, name in ipairs(names) do names[k] = random_case(rng, name) end
    req.signed_headers = shuffle(rng, names)
  end

  req.body = utf8_body(rng, body_length(rng, i))

  -- Sometimes sign a neighbour first (same key, a few seconds away or
  -- another service) so the case itself meets a warm cache entry that
  -- must not be reused across a date or service change.
  local prime
  if rng.chance(0.15) then
    prime = {}
    for k, v in pairs(req) do prime[k] = v end
    prime.body = ""
    if rng.chance(0.7) then
      prime.timestamp = math.max(0, math.min(TIMESTAMP_MAX, req.timestamp + rng.int(-10, 10)))
    else
      prime.service = service == "faceid" and "cvm" or "faceid"
      prime.version = req.version or "2018-03-01"
    end
  end
  return { index = i, req = req, prime = prime, want_date = want_date }
end

-- The vectors file leaves absent optional fields absent, as the sign table
-- expects; bodies and keys are plain strings there. cjson decodes every
-- number as a float, so the timestamp is made an integer again.
local function vector_request(v)
  return {
    secret_id = v.secret_id, secret_key = v.secret_key, host = v.host, service = v.service,
    action = v.action, version = v.version, region = v.region, token = v.token,
    language = v.language, content_type = v.content_type,
    timestamp = math.tointeger(v.timestamp),
    signed_headers = v.signed_headers, body = v.body,
  }
end

-- ------------------------------------------------------ reference process

local function shell_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local function hex(s)
  return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then error("cannot read " .. path .. ": " .. err, 0) end
  local s = f:read("a")
  f:close()
  return s
end

local function remove_all(paths)
  for k = #paths, 1, -1 do
    os.remove(paths[k])
    paths[k] = nil
  end
end

-- One python process for every case: starting it per case would dominate
-- the runtime. jobs is a list of {id=, req=}; returns results by id.
local function run_reference(jobs, tmpfiles)
  local index_path, bodies_path, out_path = scratch.file(), scratch.file(), scratch.file()
  tmpfiles[#tmpfiles + 1] = index_path
  tmpfiles[#tmpfiles + 1] = bodies_path
  tmpfiles[#tmpfiles + 1] = out_path

  local index = assert(io.open(index_path, "wb"))
  local bodies = assert(io.open(bodies_path, "wb"))
  local offset = 0
  for _, job in ipairs(jobs) do
    local q = job.req
    bodies:write(q.body)
    index:write(cjson.encode({
      id = job.id,
      secret_id = q.secret_id,
      secret_key_hex = hex(q.secret_key),
      body_offset = offset,
      body_len = #q.body,
      timestamp = q.timestamp,
      action = q.action,
      host = q.host,
      service = q.service,
      version = q.version,
      content_type = q.content_type,
      region = q.region,
      token = q.token,
      language = q.language,
      signed_headers = q.signed_headers,
    }), "\n")
    offset = offset + #q.body
  end
  assert(index:close())
  assert(bodies:close())

  local cmd = string.format("python3 %s %s %s %s 2>&1", shell_quote(REFERENCE),
    shell_quote(index_path), shell_quote(bodies_path), shell_quote(out_path))
  local p = assert(io.popen(cmd, "r"))
  local output = p:read("a")
  local ok, how, code = p:close()
  if not ok then
    error(string.format("tc3_reference.py failed (%s %s): %s", tostring(how), tostring(code),
      output), 0)
  end

  local results = {}
  for line in read_file(out_path):gmatch("[^\n]+") do
    local r = cjson.decode(line)
    results[r.id] = r
  end
  return results
end

-- ----------------------------------------------------------------- spec

describe("eidkit.sign against an independent TC3 reference (seed " .. SEED .. ")", function()
  local tmpfiles = {}
  local cases, vectors = {}, {}
  local results

  setup(function()
    local doc = cjson.decode(read_file(VECTORS))
    vectors = doc.vectors
    local pool_rng = new_rng(SEED ~ 0x5EC2E75)
    local pool = {}
    for k = 1, 6 do pool[k] = from_set(pool_rng, VISIBLE, 32, 40) .. (k == 6 and "\0\255" or "") end

    local jobs = {}
    for k, v in ipairs(vectors) do
      jobs[#jobs + 1] = { id = "vector-" .. k, req = vector_request(v) }
    end
    for i = 1, CASES do
      if not ONLY or ONLY == i then
        local c = gen_case(i, pool)
        cases[#cases + 1] = c
        jobs[#jobs + 1] = { id = i, req = c.req }
      end
    end

    -- Temp files hold secrets; they go as soon as python has answered,
    -- whether or not it succeeded.
    local ok, res = pcall(run_reference, jobs, tmpfiles)
    remove_all(tmpfiles)
    if not ok then error(res, 0) end
    results = res
  end)

  teardown(function() remove_all(tmpfiles) end)

  it("reference reproduces every shared vector (a broken reference cannot pass)", function()
    assert.is_true(#vectors >= 5, "expected at least 5 vectors in " .. VECTORS)
    local bad = {}
    for k, v in ipairs(vectors) do
      local r = results["vector-" .. k]
      if not r then
        bad[#bad + 1] = v.name .. ": no result"
      else
        assert.is_string(v.signature, v.name .. " has no expected signature")
        for _, field in ipairs({ "hashed_payload", "hashed_canonical_request", "secret_signing",
          "signature", "authorization" }) do
          if v[field] ~= nil and v[field] ~= r[field] then
            bad[#bad + 1] = v.name .. ": " .. field
          end
        end
      end
    end
    assert.are.same({}, bad)
  end)

  it("agrees with the reference on every random case", function()
    assert.are.equal(ONLY and 1 or CASES, #cases)

    -- The vectors go through C as well: they are cases like any other.
    local all = {}
    for k, v in ipairs(vectors) do
      all[#all + 1] = { index = "vector-" .. k, req = vector_request(v) }
    end
    for _, c in ipairs(cases) do all[#all + 1] = c end

    -- Names of the fields where C and the reference disagree for case c.
    local function differences(c, ref)
      local diff = {}
      if not ref then return { "no result from the reference" } end
      if c.want_date and ref.date ~= c.want_date then
        diff[#diff + 1] = "reference date is not the aimed-at " .. c.want_date
      end
      if c.prime then
        local ok, err = pcall(eidkit.sign_explain, c.prime)
        if not ok then diff[#diff + 1] = "priming sign raised: " .. tostring(err) end
      end
      local ok, ex, err = pcall(eidkit.sign_explain, c.req)
      if not ok or ex == nil then
        diff[#diff + 1] = "sign_explain failed: " .. tostring(ok and err or ex)
      else
        for _, field in ipairs({ "date", "hashed_payload", "hashed_canonical_request",
          "string_to_sign", "signature", "authorization" }) do
          if ex[field] ~= ref[field] then diff[#diff + 1] = field end
        end
        if ex.headers.Authorization ~= ref.authorization then
          diff[#diff + 1] = "sign_explain headers.Authorization"
        end
      end
      -- sign is the hot path callers use; called second, it also meets the
      -- cache entry sign_explain just filled.
      local ok2, headers, err2 = pcall(eidkit.sign, c.req)
      if not ok2 or headers == nil then
        diff[#diff + 1] = "sign failed: " .. tostring(ok2 and err2 or headers)
      else
        if headers.Authorization ~= ref.authorization then
          diff[#diff + 1] = "sign headers.Authorization"
        end
        if headers["X-TC-Timestamp"] ~= tostring(c.req.timestamp) then
          diff[#diff + 1] = "sign headers.X-TC-Timestamp"
        end
      end
      return diff
    end

    local bad, nbad, boundary_hits = {}, 0, 0
    for _, c in ipairs(all) do
      if type(c.index) == "number" then
        -- utf8.len is strict in 5.4: surrogates and overlong forms fail.
        assert(utf8.len(c.req.body), "generator made invalid UTF-8")
      end
      if c.want_date then boundary_hits = boundary_hits + 1 end
      local diff = differences(c, results[c.index])
      if #diff > 0 then
        nbad = nbad + 1
        if #bad < 25 then bad[#bad + 1] = "case " .. c.index .. ": " .. table.concat(diff, ", ") end
      end
    end

    -- Secrets are never printed: the seed and index regenerate any case.
    if nbad > 0 then
      error(string.format("%d of %d cases differ between eidkit and tc3_reference.py (seed %d);"
        .. " replay one with EIDKIT_DIFF_SEED=%d EIDKIT_DIFF_ONLY=<case>:\n  %s",
        nbad, #all, SEED, SEED, table.concat(bad, "\n  ")), 0)
    end
    if not ONLY then
      assert.is_true(boundary_hits >= CASES // 4, "too few cases aimed at date boundaries")
    end
  end)
end)
