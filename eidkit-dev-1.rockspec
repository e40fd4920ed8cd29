-- `luarocks --lua-version 5.4 --tree TREE make` from a checkout: builds with
-- CMake and installs the Lua modules, the C module eidkit.core, libeidkit and
-- libeidkit_sign (beside the C module, where it and eidkit.ffi find them) and
-- the eidkit program. docs/PACKAGING.md lists what must already be on the
-- system (Debian packages): nothing is downloaded.
rockspec_format = "3.0"
package = "eidkit"
version = "dev-1"
source = {
  url = "git+file://.",
}
description = {
  summary = "Merchant-side toolkit for Tencent Cloud FaceID eID",
  detailed = [[
TC3 signing, the FaceID API client, the EidToken ledger and flow, the merchant
gateway; for Lua 5.4 (the C module) and OpenResty (LuaJIT FFI).]],
  -- The repository has no LICENSE file yet; this says so rather than guess.
  license = "none declared",
}
-- Lua 5.4 only: the C module is built against it. lua-cjson (Debian's
-- lua-cjson) is used at run time but is not a rock dependency, so LuaRocks
-- never reaches for the network; the C libraries are checked by CMake.
dependencies = {
  "lua >= 5.4, < 5.5",
}
build = {
  type = "cmake",
  variables = {
    CMAKE_INSTALL_PREFIX = "$(PREFIX)",
    -- The build type the suite runs; warnings stay warnings on a user's
    -- compiler (a newer one may find new ones).
    CMAKE_BUILD_TYPE = "RelWithDebInfo",
    EIDKIT_WERROR = "OFF",
    EIDKIT_LUAROCKS = "ON",
    EIDKIT_TESTS = "OFF",
    EIDKIT_BUSTED = "OFF",
    EIDKIT_INSTALL_LUADIR = "$(LUADIR)",
    EIDKIT_INSTALL_CMODDIR = "$(LIBDIR)",
    EIDKIT_INSTALL_LIBDIR = "$(LIBDIR)",
    EIDKIT_INSTALL_BINDIR = "$(BINDIR)",
  },
}
