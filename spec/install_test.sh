#!/usr/bin/env bash
# Install eidkit the ways its users do, into throw-away places, and use each
# install from elsewhere (docs/PACKAGING.md). Usage: install_test.sh BUILD_DIR
#   - cmake --install into a prefix, which is then moved (relocatable): the
#     installed program finds its own Lua files; stock lua5.4 loads the
#     installed module; a C program built with `pkg-config eidkit` (and
#     eidkit-sign) and a CMake project using find_package(eidkit) sign a TC3
#     vector;
#   - luarocks make from a copy of the tree into a fresh tree, offline;
#   - then spec/install/trees.lua (busted): lua5.4 from the rock tree, LuaJIT's
#     eidkit.ffi from both (only libeidkit_sign mapped), nginx on the prefix.
set -euo pipefail
build="$(cd "$1" && pwd)"
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d /tmp/eidkit-install-XXXXXX)"
trap 'rm -rf "$work"' EXIT
passed=0
ok() { passed=$((passed + 1)); }
fail() { echo "install: $*" >&2; exit 1; }
for tool in cc pkg-config cmake luarocks lua5.4 luajit busted git readelf nm; do
  command -v "$tool" >/dev/null || fail "$tool is not installed (run scripts/setup-deps)"
done

cmake --install "$build" --prefix "$work/staged" >/dev/null
# Moved after installing: nothing may depend on the prefix it was installed to.
mv "$work/staged" "$work/prefix"
prefix="$work/prefix"
cd /

# ---------------------------------------------------------------- the program
first_path=$(echo 'io.write((package.path:match("[^;]+")))' | "$prefix/bin/eidkit" run -)
case "$first_path" in
  "$prefix"/bin/../share/lua/5.4/*) ok ;;
  *) fail "installed eidkit uses $first_path, not its prefix" ;;
esac
want="TC3-HMAC-SHA256 Credential=a/1970-01-01/faceid/tc3_request, SignedHeaders=content-type;host, Signature=8b9ba17741b4bcfae6ed2aa6da912feff3393a67de0880ab71a2da949100fe7b"
got=$(TENCENTCLOUD_SECRET_ID=a TENCENTCLOUD_SECRET_KEY=b "$prefix/bin/eidkit" sign --action X --body '' --timestamp 0 | sed -n 's/^Authorization: //p')
[ "$got" = "$want" ] || fail "installed eidkit sign: got '$got'"
ok
libdir=$(cd "$prefix" && find lib* -path '*/lua/5.4' -type d | head -1)
libdir="${libdir%/lua/5.4}"
got=$(LUA_CPATH="$prefix/$libdir/lua/5.4/?.so;;" LUA_PATH="$prefix/share/lua/5.4/?.lua;$prefix/share/lua/5.4/?/init.lua;;" \
  lua5.4 -e 'io.write(require("eidkit").sign{secret_id="a",secret_key="b",action="X",body="",timestamp=0}.Authorization)')
[ "$got" = "$want" ] || fail "stock lua5.4 with installed module: got '$got'"
ok

# ------------------------------------------------------------------ C users
# libeidkit_sign: exactly eidkit.h's API, and libcrypto its only library.
sign_so="$prefix/$libdir/libeidkit_sign.so"
exported=$(nm -D --defined-only "$sign_so" | awk '{print $3}' | sort)
declared=$(sed -n 's/^EID_API [^(]*[ *]\(eid_[a-z0-9_]*\)(.*/\1/p' "$prefix/include/eidkit/eidkit.h" | sort)
if [ -z "$declared" ] || [ "$exported" != "$declared" ]; then
  fail "libeidkit_sign exports $(echo "$exported" | tr '\n' ' ')but eidkit.h declares $(echo "$declared" | tr '\n' ' ')"
fi
ok
needed=$(readelf -d "$sign_so" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | sort | tr '\n' ' ')
case "$needed" in
  "libc.so."[0-9]" libcrypto.so."[0-9]" ") ok ;;
  *) fail "libeidkit_sign needs $needed(only libcrypto and libc expected)" ;;
esac
# No build or source path in what C users read.
if grep -rlF -e "$build" -e "$root" "$prefix/$libdir/pkgconfig" "$prefix/$libdir/cmake"; then
  fail "absolute build or source paths in the installed pkg-config/CMake files (above)"
fi
ok
vectors="${EIDKIT_VECTORS:-$root/spec/vectors/tc3-vectors.json}"
# The first official vector, as arguments of spec/install/sign_vector.c.
mapfile -t vec < <(lua5.4 - "$vectors" <<'LUA'
local v = require("cjson").decode(io.open(arg[1]):read("a")).vectors[1]
for _, k in ipairs { "secret_id", "secret_key", "service", "host", "action", "version", "region",
  "timestamp", "content_type", "body", "authorization" } do print(v[k]) end
LUA
)
want_vec="${vec[10]}"
unset 'vec[10]'
export PKG_CONFIG_PATH="$prefix/$libdir/pkgconfig"
for pc in eidkit eidkit-sign; do
  # shellcheck disable=SC2046 # pkg-config's words
  cc -std=c11 -Wall -Werror -o "$work/sign_$pc" "$root/spec/install/sign_vector.c" $(pkg-config --cflags --libs "$pc")
  got=$(LD_LIBRARY_PATH="$(pkg-config --variable=libdir "$pc")" "$work/sign_$pc" "${vec[@]}")
  [ "$got" = "$want_vec" ] || fail "C program built with pkg-config $pc: got '$got'"
  ok
done
# Linking eidkit-sign must not bring the whole library along.
if readelf -d "$work/sign_eidkit-sign" | grep -q 'libeidkit\.so'; then fail "pkg-config eidkit-sign links libeidkit"; fi
ok

cmake -S "$root/spec/install" -B "$work/cmake-user" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$work/cmake-user" >/dev/null
for exe in sign_full sign_only; do
  got=$("$work/cmake-user/$exe" "${vec[@]}")
  [ "$got" = "$want_vec" ] || fail "find_package(eidkit) program $exe: got '$got'"
  ok
done
if readelf -d "$work/cmake-user/sign_only" | grep -q 'libeidkit\.so'; then fail "eidkit::sign links libeidkit"; fi
ok

# ------------------------------------------------------------------ LuaRocks
# From a copy of the tree (luarocks builds in build.luarocks/ beside the
# rockspec), into a fresh tree. --only-server on an empty directory: a
# dependency LuaRocks would have to download fails here instead.
mkdir -p "$work/src" "$work/no-server"
(cd "$root" && git ls-files -z --cached --others --exclude-standard | xargs -0 cp -P --parents -t "$work/src" 2>/dev/null) ||
  fail "cannot copy the tree (git ls-files in $root)"
rocks="$work/rocks"
(cd "$work/src" && CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
  luarocks --lua-version 5.4 --tree "$rocks" --only-server "$work/no-server" make eidkit-dev-1.rockspec \
  >"$work/luarocks.log" 2>&1) || { cat "$work/luarocks.log" >&2; fail "luarocks make failed"; }
ok
got=$(TENCENTCLOUD_SECRET_ID=a TENCENTCLOUD_SECRET_KEY=b "$rocks/bin/eidkit" sign --action X --body '' --timestamp 0 | sed -n 's/^Authorization: //p')
[ "$got" = "$want" ] || fail "the rock's eidkit program: got '$got'"
ok
echo "install: $passed passed, 0 failed (shell)"

# ------------------------------------------------- Lua, LuaJIT, nginx on both
cd "$root"
EIDKIT_INSTALL_PREFIX="$prefix" EIDKIT_INSTALL_LIBDIR="$prefix/$libdir" EIDKIT_ROCK_TREE="$rocks" \
  LUA_PATH="$root/spec/?.lua;;" LUA_CPATH="$build/lua/?.so;;" EIDKIT_VECTORS="$vectors" \
  busted --lua=lua5.4 -o utfTerminal --pattern=trees "$root/spec/install"
