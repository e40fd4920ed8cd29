-- eidkit.sandbox.pattern: Lua 5.4's pattern matching (string.find, match,
-- gmatch, gsub) written in Lua, for the sandbox. The C matcher is one call
-- that no hook can interrupt, and it backtracks without bound: three
-- quantifiers on 8 KiB ran for minutes on the host's only Lua thread. This
-- one runs on the VM, so the sandbox's instruction count and time limit stop
-- it like any other code. It is slower (about 30x), so the sandbox calls the
-- C matcher when a bound on its work is small (pattern.cost) and this one
-- otherwise. Same results, same errors: spec/sandbox/pattern_spec.lua holds
-- them equal on generated patterns and subjects.
local byte, sub, find, format, concat = string.byte, string.sub, string.find, string.format, table.concat
local type, tostring, tonumber, error, pcall, setmetatable, getmetatable =
  type, tostring, tonumber, error, pcall, setmetatable, getmetatable
local math_type, floor, pack, unpack = math.type, math.floor, table.pack, table.unpack

local _M = {}

-- The matcher's own errors, told apart from what a replacement function
-- raises (passed on untouched): the public functions raise them at their
-- caller's position, as the C functions do.
local FAIL_MT = {}
local function fail(msg)
  error(setmetatable({ msg }, FAIL_MT), 0)
end

local ESC, LBRACKET, RBRACKET, CARET, DOLLAR = 37, 91, 93, 94, 36
local LPAREN, RPAREN, DOT, STAR, PLUS, MINUS, QUESTION = 40, 41, 46, 42, 43, 45, 63
local CAP_UNFINISHED, CAP_POSITION = -1, -2
local MAXCAPTURES, MAXDEPTH = 32, 200

-- Character classes of the C locale, by the class letter in lower case.
local function in_class(c, cl)
  if cl == 97 then return (c >= 65 and c <= 90) or (c >= 97 and c <= 122) -- a
  elseif cl == 99 then return c < 32 or c == 127 -- c
  elseif cl == 100 then return c >= 48 and c <= 57 -- d
  elseif cl == 103 then return c > 32 and c < 127 -- g
  elseif cl == 108 then return c >= 97 and c <= 122 -- l
  elseif cl == 112 then -- p
    return (c >= 33 and c <= 47) or (c >= 58 and c <= 64) or (c >= 91 and c <= 96) or (c >= 123 and c <= 126)
  elseif cl == 115 then return c == 32 or (c >= 9 and c <= 13) -- s
  elseif cl == 117 then return c >= 65 and c <= 90 -- u
  elseif cl == 119 then return (c >= 48 and c <= 57) or (c >= 65 and c <= 90) or (c >= 97 and c <= 122) -- w
  elseif cl == 120 then return (c >= 48 and c <= 57) or (c >= 65 and c <= 70) or (c >= 97 and c <= 102) -- x
  elseif cl == 122 then return c == 0 -- z: deprecated, still in 5.4
  end
  return nil
end

-- c matches %<cl>: a class letter (upper case: its complement), else cl itself.
local function match_class(c, cl)
  local lower = cl >= 65 and cl <= 90 and cl + 32 or cl
  local r = in_class(c, lower)
  if r == nil then return cl == c end
  if lower ~= cl then return not r end
  return r
end

-- The index just past the single-character class starting at p.
local function class_end(ms, p)
  local pat, plen = ms.p, ms.plen
  local c = byte(pat, p)
  p = p + 1
  if c == ESC then
    if p > plen then fail("malformed pattern (ends with '%')") end
    return p + 1
  elseif c == LBRACKET then
    if byte(pat, p) == CARET then p = p + 1 end
    repeat -- the first character after [ or [^ is never the closing ]
      if p > plen then fail("malformed pattern (missing ']')") end
      local cc = byte(pat, p)
      p = p + 1
      if cc == ESC and p <= plen then p = p + 1 end
    until byte(pat, p) == RBRACKET
    return p + 1
  end
  return p
end

-- c against the set [ ... ] from p (at the [) to ec (at the ]).
local function match_bracket(ms, c, p, ec)
  local pat = ms.p
  local sig = true
  p = p + 1
  if byte(pat, p) == CARET then
    sig = false
    p = p + 1
  end
  while p < ec do
    local pc = byte(pat, p)
    if pc == ESC then
      p = p + 1
      if match_class(c, byte(pat, p)) then return sig end
      p = p + 1
    elseif byte(pat, p + 1) == MINUS and p + 2 < ec then
      if pc <= c and c <= byte(pat, p + 2) then return sig end
      p = p + 3
    else
      if pc == c then return sig end
      p = p + 1
    end
  end
  return not sig
end

local function single_match(ms, s, p, ep)
  if s > ms.slen then return false end
  local c = byte(ms.s, s)
  local pc = byte(ms.p, p)
  if pc == DOT then return true
  elseif pc == ESC then return match_class(c, byte(ms.p, p + 1))
  elseif pc == LBRACKET then return match_bracket(ms, c, p, ep - 1)
  end
  return pc == c
end

local do_match

local function max_expand(ms, s, p, ep)
  local i = 0
  while single_match(ms, s + i, p, ep) do i = i + 1 end
  while i >= 0 do -- longest first
    local r = do_match(ms, s + i, ep + 1)
    if r then return r end
    i = i - 1
  end
  return nil
end

local function min_expand(ms, s, p, ep)
  while true do
    local r = do_match(ms, s, ep + 1)
    if r then return r end
    if single_match(ms, s, p, ep) then s = s + 1 else return nil end
  end
end

local function start_capture(ms, s, p, what)
  local level = ms.level + 1
  if level > MAXCAPTURES then fail("too many captures") end
  ms.cstart[level], ms.clen[level] = s, what
  ms.level = level
  local r = do_match(ms, s, p)
  if not r then ms.level = ms.level - 1 end
  return r
end

local function end_capture(ms, s, p)
  local l
  for i = ms.level, 1, -1 do
    if ms.clen[i] == CAP_UNFINISHED then
      l = i
      break
    end
  end
  if not l then fail("invalid pattern capture") end
  ms.clen[l] = s - ms.cstart[l]
  local r = do_match(ms, s, p)
  if not r then ms.clen[l] = CAP_UNFINISHED end
  return r
end

local function match_balance(ms, s, p)
  if p + 1 > ms.plen then fail("malformed pattern (missing arguments to '%b')") end
  if s > ms.slen or byte(ms.s, s) ~= byte(ms.p, p) then return nil end
  local b, e = byte(ms.p, p), byte(ms.p, p + 1)
  local cont = 1
  s = s + 1
  while s <= ms.slen do
    local c = byte(ms.s, s)
    if c == e then
      cont = cont - 1
      if cont == 0 then return s + 1 end
    elseif c == b then
      cont = cont + 1
    end
    s = s + 1
  end
  return nil
end

local function check_capture(ms, d)
  local l = d - 48 -- '1' is capture 1
  if l < 1 or l > ms.level or ms.clen[l] == CAP_UNFINISHED then
    fail(format("invalid capture index %%%d", l))
  end
  return l
end

local function match_capture(ms, s, d)
  local l = check_capture(ms, d)
  local len = ms.clen[l]
  local start = ms.cstart[l]
  -- A position capture's length is negative, huge as C's size_t: no match.
  if len >= 0 and ms.slen - s + 1 >= len and sub(ms.s, start, start + len - 1) == sub(ms.s, s, s + len - 1) then
    return s + len
  end
  return nil
end

-- The end (one past the last character) of a match of the pattern from p
-- at subject position s, or nil.
function do_match(ms, s, p)
  ms.depth = ms.depth + 1
  if ms.depth > MAXDEPTH then fail("pattern too complex") end
  local pat, plen = ms.p, ms.plen
  local r
  while true do
    if p > plen then
      r = s
      break
    end
    local pc = byte(pat, p)
    local nc = byte(pat, p + 1)
    if pc == LPAREN then
      if nc == RPAREN then r = start_capture(ms, s, p + 2, CAP_POSITION)
      else r = start_capture(ms, s, p + 1, CAP_UNFINISHED) end
      break
    elseif pc == RPAREN then
      r = end_capture(ms, s, p + 1)
      break
    elseif pc == DOLLAR and p == plen then
      r = s == ms.slen + 1 and s or nil
      break
    elseif pc == ESC and nc == 98 then -- %b
      s = match_balance(ms, s, p + 2)
      if not s then break end
      p = p + 4
    elseif pc == ESC and nc == 102 then -- %f
      p = p + 2
      if byte(pat, p) ~= LBRACKET then fail("missing '[' after '%f' in pattern") end
      local ep = class_end(ms, p)
      local prev = s == 1 and 0 or byte(ms.s, s - 1)
      local cur = s <= ms.slen and byte(ms.s, s) or 0
      if match_bracket(ms, prev, p, ep - 1) or not match_bracket(ms, cur, p, ep - 1) then break end
      p = ep
    elseif pc == ESC and nc and nc >= 48 and nc <= 57 then -- %0-%9
      s = match_capture(ms, s, nc)
      if not s then break end
      p = p + 2
    else
      local ep = class_end(ms, p)
      local epc = byte(pat, ep)
      if not single_match(ms, s, p, ep) then
        if epc == STAR or epc == QUESTION or epc == MINUS then
          p = ep + 1 -- the item may match nothing
        else
          break
        end
      elseif epc == QUESTION then
        r = do_match(ms, s + 1, ep + 1)
        if r then break end
        p = ep + 1
      elseif epc == PLUS then
        r = max_expand(ms, s + 1, p, ep)
        break
      elseif epc == STAR then
        r = max_expand(ms, s, p, ep)
        break
      elseif epc == MINUS then
        r = min_expand(ms, s, p, ep)
        break
      else
        s = s + 1
        p = ep
      end
    end
  end
  ms.depth = ms.depth - 1
  return r
end

local function state(s, p)
  return { s = s, slen = #s, p = p, plen = #p, level = 0, depth = 0, cstart = {}, clen = {} }
end

local function reset(ms)
  ms.level, ms.depth = 0, 0
end

-- Capture i of a match from s to e (exclusive).
local function capture(ms, i, s, e)
  if i > ms.level then
    if i ~= 1 then fail(format("invalid capture index %%%d", i)) end
    return sub(ms.s, s, e - 1)
  end
  local l = ms.clen[i]
  if l == CAP_UNFINISHED then fail("unfinished capture") end
  if l == CAP_POSITION then return ms.cstart[i] end
  return sub(ms.s, ms.cstart[i], ms.cstart[i] + l - 1)
end

-- Every capture (the whole match when there are none and s is given).
local function captures(ms, s, e)
  local n = (ms.level == 0 and s) and 1 or ms.level
  local out = {}
  for i = 1, n do out[i] = capture(ms, i, s, e) end
  return unpack(out, 1, n)
end

local function check_string(v, n, fname)
  local t = type(v)
  if t == "string" then return v end
  if t == "number" then return tostring(v) end
  fail(format("bad argument #%d to '%s' (string expected, got %s)", n, fname, v == nil and "no value" or t))
end

local function check_int(v, n, fname, default)
  if v == nil then return default end
  if math_type(v) == "integer" then return v end
  if type(v) == "number" and v == floor(v) and v >= math.mininteger and v <= math.maxinteger then
    return floor(v)
  end
  if type(v) == "string" then
    local x = math.tointeger(tonumber(v))
    if x then return x end
  end
  if type(v) == "number" then
    fail(format("bad argument #%d to '%s' (number has no integer representation)", n, fname))
  end
  fail(format("bad argument #%d to '%s' (number expected, got %s)", n, fname, type(v)))
end

-- Lua's posrelat for find's init: 1-based, negative from the end.
local function start_at(init, len)
  if init > 0 then return init end
  if init == 0 or -init > len then return 1 end
  return len + init + 1
end

-- As lstrlib's nospecials: ')' and ']' alone do not make a pattern.
local SPECIALS = "[%^%$%*%+%?%.%(%[%%%-]"

local function find_aux(fname, s, p, init, plain, is_find)
  s = check_string(s, 1, fname)
  p = check_string(p, 2, fname)
  local ls = #s
  init = start_at(check_int(init, 3, fname, 1), ls)
  if init > ls + 1 then return nil end
  if is_find and (plain or not find(p, SPECIALS)) then
    return find(s, p, init, true) -- no pattern: the C search is linear
  end
  local ms = state(s, p)
  local anchor = byte(p, 1) == CARET
  local pstart = anchor and 2 or 1
  local s1 = init
  repeat
    reset(ms)
    local e = do_match(ms, s1, pstart)
    if e then
      if is_find then return s1, e - 1, captures(ms, nil, 0) end
      return captures(ms, s1, e)
    end
    s1 = s1 + 1
  until anchor or s1 > ls + 1
  return nil
end

local function p_find(s, p, init, plain) return find_aux("find", s, p, init, plain, true) end
local function p_match(s, p, init) return find_aux("match", s, p, init, nil, false) end

local function gmatch(s, p, init)
  s = check_string(s, 1, "gmatch")
  p = check_string(p, 2, "gmatch")
  local ls = #s
  local src = start_at(check_int(init, 3, "gmatch", 1), ls)
  if src > ls + 1 then src = ls + 2 end -- nothing to match
  local ms = state(s, p)
  local lastmatch
  return function()
    for s1 = src, ls + 1 do
      reset(ms)
      local e = do_match(ms, s1, 1)
      if e and e ~= lastmatch then
        src, lastmatch = e, e
        return captures(ms, s1, e)
      end
    end
    src = ls + 2
    return nil
  end
end

local function add_string(ms, out, s, e, repl)
  local i, lr = 1, #repl
  while i <= lr do
    local c = byte(repl, i)
    if c ~= ESC then
      local j = find(repl, "%", i, true) or lr + 1
      out[#out + 1] = sub(repl, i, j - 1)
      i = j
    else
      i = i + 1
      local d = byte(repl, i)
      if d == ESC then
        out[#out + 1] = "%"
      elseif d and d >= 48 and d <= 57 then
        local v = d == 48 and sub(ms.s, s, e - 1) or capture(ms, d - 48, s, e)
        out[#out + 1] = type(v) == "number" and tostring(v) or v
      else
        fail("invalid use of '%' in replacement string")
      end
      i = i + 1
    end
  end
end

local function add_value(ms, out, s, e, repl, tr)
  if tr == "string" then return add_string(ms, out, s, e, repl) end
  local v
  if tr == "function" then
    v = repl(captures(ms, s, e))
  else
    v = repl[capture(ms, 1, s, e)]
  end
  if v == nil or v == false then
    out[#out + 1] = sub(ms.s, s, e - 1)
  elseif type(v) == "string" or type(v) == "number" then
    out[#out + 1] = tostring(v)
  else
    fail(format("invalid replacement value (a %s)", type(v)))
  end
end

local function gsub(s, p, repl, max_n)
  s = check_string(s, 1, "gsub")
  p = check_string(p, 2, "gsub")
  local tr = type(repl)
  if tr == "number" then
    repl, tr = tostring(repl), "string"
  elseif tr ~= "string" and tr ~= "table" and tr ~= "function" then
    fail(format("bad argument #3 to 'gsub' (string/function/table expected, got %s)",
      repl == nil and "no value" or tr))
  end
  local ls = #s
  max_n = check_int(max_n, 4, "gsub", ls + 1)
  local anchor = byte(p, 1) == CARET
  local pstart = anchor and 2 or 1
  local ms = state(s, p)
  local out, n, src, lastmatch = {}, 0, 1, nil
  while n < max_n do
    reset(ms)
    local e = do_match(ms, src, pstart)
    if e and e ~= lastmatch then
      n = n + 1
      add_value(ms, out, src, e, repl, tr)
      src, lastmatch = e, e
    elseif src <= ls then
      out[#out + 1] = sub(s, src, src)
      src = src + 1
    else
      break
    end
    if anchor then break end
  end
  out[#out + 1] = sub(s, src)
  return concat(out), n
end

local function raised(r)
  if r[1] then return unpack(r, 2, r.n) end
  local e = r[2]
  -- Always reached by a tail call: level 2 is the caller of the public function.
  if getmetatable(e) == FAIL_MT then error(e[1], 2) end
  error(e, 0)
end

local function public(f)
  return function(...) return raised(pack(pcall(f, ...))) end
end

_M.find, _M.match, _M.gsub = public(p_find), public(p_match), public(gsub)

-- gmatch's iterator raises its errors where it is called, too.
function _M.gmatch(...)
  local r = pack(pcall(gmatch, ...))
  if not r[1] then return raised(r) end
  local it = r[2]
  return function() return raised(pack(pcall(it))) end
end

-- A bound on the C matcher's steps for pattern p on a subject of n bytes:
-- each start position (one when anchored), times n + 1 for every item that
-- can repeat (*, +, -; 2 for ?), times n for every %b and back reference,
-- times the pattern's length. Small: the C matcher cannot run long.
function _M.cost(n, p, anchored)
  if type(p) ~= "string" then return 0 end
  local m = n + 1.0 -- floats: an integer product would wrap around
  local cost = (anchored and 1.0 or m) * (#p + 1)
  local i, lp = 1, #p
  while i <= lp do
    local c = byte(p, i)
    if c == ESC then
      local d = byte(p, i + 1)
      if d == 98 or (d and d >= 48 and d <= 57) then cost = cost * m end
      i = i + 2
    else
      if c == STAR or c == PLUS or c == MINUS then cost = cost * m
      elseif c == QUESTION then cost = cost * 2 end
      i = i + 1
    end
    if cost > 1e300 then return cost end
  end
  return cost
end

return _M
