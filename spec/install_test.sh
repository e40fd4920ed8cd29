#!/usr/bin/env bash
# Install into a throw-away prefix and use it from elsewhere: the installed
# program must find its own Lua files (not the source tree's), and stock
# lua5.4 must load the installed module. Usage: install_test.sh BUILD_DIR
set -euo pipefail
build="$1"
prefix="$(mktemp -d)"
trap 'rm -rf "$prefix"' EXIT
cmake --install "$build" --prefix "$prefix" >/dev/null
cd /
first_path=$(echo 'io.write((package.path:match("[^;]+")))' | "$prefix/bin/eidkit" run -)
case "$first_path" in
  "$prefix"/bin/../share/lua/5.4/*) ;;
  *) echo "installed eidkit uses $first_path, not its prefix" >&2; exit 1 ;;
esac
want="TC3-HMAC-SHA256 Credential=a/1970-01-01/faceid/tc3_request, SignedHeaders=content-type;host, Signature=8b9ba17741b4bcfae6ed2aa6da912feff3393a67de0880ab71a2da949100fe7b"
got=$(TENCENTCLOUD_SECRET_ID=a TENCENTCLOUD_SECRET_KEY=b "$prefix/bin/eidkit" sign --action X --body '' --timestamp 0 | sed -n 's/^Authorization: //p')
[ "$got" = "$want" ] || { echo "installed eidkit sign: got '$got'" >&2; exit 1; }
libdir=$(cd "$prefix" && ls -d lib*/lua/5.4 | head -1)
got=$(LUA_CPATH="$prefix/$libdir/?.so;;" LUA_PATH="$prefix/share/lua/5.4/?.lua;$prefix/share/lua/5.4/?/init.lua;;" \
  lua5.4 -e 'io.write(require("eidkit").sign{secret_id="a",secret_key="b",action="X",body="",timestamp=0}.Authorization)')
[ "$got" = "$want" ] || { echo "stock lua5.4 with installed module: got '$got'" >&2; exit 1; }
echo "install: 3 passed, 0 failed"
