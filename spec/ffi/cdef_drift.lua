-- Fails when lua/eidkit/ffi.lua's cdefs drift from core/include/eidkit/eidkit.h,
-- eidkit/retry.h (which includes client.h and eidkit.h), eidkit/host.h,
-- eidkit/errcode.h and eidkit/ledger.h.
-- Run (ctest ffi_cdefs_match_header):
--   LUA_PATH='lua/?.lua;;' luajit spec/ffi/cdef_drift.lua core/include [clang]
--
-- Two independent checks, each able to fail on its own:
--   1. Declarations: clang parses the real header (-ast-dump=json); every
--      struct, enum, function pointer and function the cdefs declare must be
--      there with the same fields in the same order, the same type spellings
--      (array lengths evaluated, so a changed EID_*_MAX shows), the same
--      enumerators and values, and the same prototypes. A field added,
--      removed, renamed or reordered in the header fails here.
--   2. Layout: a C program compiled against the header prints sizeof and
--      offsetof of every field the header has; LuaJIT's ffi.sizeof /
--      ffi.offsetof of the cdefs must agree (packing, alignment, ABI).
local ffi = require "ffi"
local cjson = require "cjson"
local eidffi = require "eidkit.ffi"

local include, cc = arg[1], arg[2] or "clang"
assert(include, "usage: luajit cdef_drift.lua path/to/core/include [clang]")

local failures, checks = 0, 0
local function check(ok, what)
  checks = checks + 1
  if not ok then
    failures = failures + 1
    io.stderr:write("drift: ", what, "\n")
  end
end

local function sh(cmd)
  local h = assert(io.popen(cmd))
  local out = h:read("*a")
  local ok = h:close()
  return out, ok
end

local function norm(t) return (t:gsub("%s+", "")) end
local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end

-- ------------------------------------------------ the cdefs, as declared
-- A small parser for the one style ffi.lua is written in; anything it does not
-- understand is a failure, so it cannot pass by skipping a declaration.
local decl = { structs = {}, enums = {}, fnptrs = {}, functions = {} }

-- "const char *name" -> "const char *"; "char name[32]" -> "char[32]";
-- as a parameter, an array decays to a pointer (as in C).
local function split_decl(d, param)
  local base, name, n = d:match("^(.-)%s*([%a_][%w_]*)%s*%[(%d*)%]$")
  if base then return name, param and (base .. " *") or (base .. "[" .. n .. "]") end
  base, name = d:match("^(.-)%s*([%a_][%w_]*)$")
  if base and base ~= "" then return name, base end
  error("cannot parse declaration '" .. d .. "'")
end

local function params(list)
  list = trim(list:sub(2, -2))
  if list == "void" or list == "" then return "void" end
  local types = {}
  for p in list:gmatch("[^,]+") do
    local _, t = split_decl(trim(p), true)
    types[#types + 1] = t
  end
  return table.concat(types, ", ")
end

local rest = eidffi.cdefs:gsub("typedef%s+(%a+)%s+([%w_]+)%s*(%b{})%s*([%w_]+)%s*;", function(kind, tag, body, name)
  assert(tag == name, "typedef name differs from tag: " .. tag)
  if kind == "struct" then
    local fields = {}
    for f in body:sub(2, -2):gmatch("[^;]+") do
      f = trim(f)
      if f ~= "" then
        local fname, ftype = split_decl(f)
        fields[#fields + 1] = { name = fname, type = ftype }
      end
    end
    decl.structs[name] = fields
  elseif kind == "enum" then
    local values = {}
    for k, v in body:sub(2, -2):gmatch("([%w_]+)%s*=%s*(%-?%d+)") do values[#values + 1] = { k, tonumber(v) } end
    decl.enums[name] = values
  else
    error("cannot parse typedef " .. kind .. " " .. name)
  end
  return ""
end)
for d in rest:gmatch("[^;]+") do
  d = trim(d:gsub("%s+", " "))
  if d ~= "" then
    local ret, name, plist = d:match("^typedef (.-)%(%*%s*([%w_]+)%)%s*(%b())$")
    if ret then
      decl.fnptrs[name] = trim(ret) .. " (*)(" .. params(plist) .. ")"
    elseif not d:match("^typedef struct ([%w_]+) ([%w_]+)$") then -- (an opaque handle has no layout)
      ret, name, plist = d:match("^(.-)([%a_][%w_]*)%s*(%b())$")
      if not ret then error("cannot parse declaration '" .. d .. "'") end
      decl.functions[name] = trim(ret) .. " (" .. params(plist) .. ")"
    end
  end
end
for _, s in ipairs(eidffi.structs) do check(decl.structs[s], "eidkit.ffi.structs names " .. s .. ", not in its cdefs") end

-- --------------------------------------------- the header, as clang sees it
local dir = trim(sh("mktemp -d /tmp/eidkit-drift-XXXXXX"))
local function write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end
write(dir .. "/h.c", "#include <eidkit/retry.h>\n#include <eidkit/host.h>\n#include <eidkit/errcode.h>\n#include <eidkit/ledger.h>\n")
local json, ok = sh(("%s -x c -std=c11 -fsyntax-only -Xclang -ast-dump=json -I '%s' '%s/h.c'"):format(cc, include, dir))
assert(ok and json ~= "", "clang could not parse the header (is clang installed? run scripts/setup-deps)")
local hdr = { structs = {}, enums = {}, types = {} }
for _, n in ipairs(cjson.decode(json).inner) do
  if n.kind == "RecordDecl" and n.completeDefinition and n.name then
    local fields = {}
    for _, f in ipairs(n.inner or {}) do
      if f.kind == "FieldDecl" then fields[#fields + 1] = { name = f.name, type = f.type.qualType } end
    end
    hdr.structs[n.name] = fields
  elseif n.kind == "EnumDecl" and n.name then
    local values = {}
    for _, c in ipairs(n.inner or {}) do
      local v = c.inner and c.inner[1] and c.inner[1].value
      values[#values + 1] = { c.name, tonumber(v) }
    end
    hdr.enums[n.name] = values
  elseif (n.kind == "FunctionDecl" or n.kind == "TypedefDecl") and n.name then
    hdr.types[n.name] = n.type.qualType
  end
end

-- 1. declarations
for name, fields in pairs(decl.structs) do
  local h = hdr.structs[name]
  check(h, "struct " .. name .. " is not defined in the header")
  if h then
    check(#h == #fields, ("%s: header has %d fields, cdef %d"):format(name, #h, #fields))
    for i = 1, math.max(#h, #fields) do
      local a, b = h[i] or {}, fields[i] or {}
      check(a.name == b.name and norm(a.type or "") == norm(b.type or ""),
        ("%s field %d: header '%s %s', cdef '%s %s'"):format(name, i, tostring(a.type), tostring(a.name),
          tostring(b.type), tostring(b.name)))
    end
  end
end
for name, values in pairs(decl.enums) do
  local h = hdr.enums[name]
  check(h and #h == #values, "enum " .. name .. ": enumerators differ in number")
  for i = 1, #values do
    local a = h and h[i] or {}
    check(a[1] == values[i][1] and a[2] == values[i][2], ("enum %s #%d: header %s = %s, cdef %s = %s"):format(
      name, i, tostring(a[1]), tostring(a[2]), values[i][1], values[i][2]))
  end
end
for name, t in pairs(decl.fnptrs) do
  check(hdr.types[name] and norm(hdr.types[name]) == norm(t),
    ("%s: header '%s', cdef '%s'"):format(name, tostring(hdr.types[name]), t))
end
for name, t in pairs(decl.functions) do
  check(hdr.types[name] and norm(hdr.types[name]) == norm(t),
    ("%s: header '%s', cdef '%s'"):format(name, tostring(hdr.types[name]), t))
end

-- 2. layout, from the compiler, for every field the header has
local c = { "#include <eidkit/retry.h>", "#include <eidkit/host.h>", "#include <eidkit/errcode.h>",
  "#include <eidkit/ledger.h>", "#include <stddef.h>", "#include <stdio.h>", "int main(void) {" }
for name in pairs(decl.structs) do
  c[#c + 1] = ('printf("%s - %%zu %%zu\\n", sizeof(%s), _Alignof(%s));'):format(name, name, name)
  for _, f in ipairs(hdr.structs[name] or {}) do
    c[#c + 1] = ('printf("%s %s %%zu %%zu\\n", offsetof(%s, %s), sizeof(((%s *)0)->%s));'):format(
      name, f.name, name, f.name, name, f.name)
  end
end
c[#c + 1] = "return 0; }"
write(dir .. "/layout.c", table.concat(c, "\n") .. "\n")
local _, built = sh(("%s -std=c11 -I '%s' -o '%s/layout' '%s/layout.c' 2>&1"):format(cc, include, dir, dir))
assert(built, "could not compile the layout program against " .. include)
local out = sh(("'%s/layout'"):format(dir))
sh(("rm -rf '%s'"):format(dir))
local seen = 0
for s, field, a, b in out:gmatch("([%w_]+) ([%w_%-]+) (%d+) (%d+)\n") do
  a, b = tonumber(a), tonumber(b)
  seen = seen + 1
  if field == "-" then
    check(ffi.sizeof(s) == a and ffi.alignof(s) == b,
      ("%s: C sizeof %d align %d, ffi %d %d"):format(s, a, b, ffi.sizeof(s), ffi.alignof(s)))
  else
    local off = ffi.offsetof(s, field)
    local ftype
    for _, f in ipairs(decl.structs[s]) do if f.name == field then ftype = f.type end end
    local size = ftype and ffi.sizeof(ftype)
    check(off == a and size == b, ("%s.%s: C offset %d size %d, ffi %s %s"):format(s, field, a, b,
      tostring(off), tostring(size)))
  end
end
check(seen > #eidffi.structs, "the layout program printed nothing useful")

print(("cdef drift: %d checks, %d failed"):format(checks, failures))
os.exit(failures == 0 and 0 or 1)
