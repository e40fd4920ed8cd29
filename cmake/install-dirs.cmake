# Where `cmake --install` puts each piece (read before the targets, whose
# install RPATHs depend on it). The defaults are the layout stock lua5.4
# searches: Lua files in <prefix>/share/lua/5.4, eidkit/core.so in
# <libdir>/lua/5.4, libeidkit in <libdir>. A LuaRocks build
# (eidkit-dev-1.rockspec) passes its rock's directories instead, with the
# libraries beside the C module, and sets EIDKIT_LUAROCKS. Each may be
# relative to the prefix or absolute.
# LuaRocks moves each installed file into its tree and fails on symlinks, so
# EIDKIT_LUAROCKS also drops the libraries' version symlinks (SONAME
# libeidkit.so: a copy private to the rock).
option(EIDKIT_LUAROCKS "Install for LuaRocks (the layout of eidkit-dev-1.rockspec)" OFF)
set(EIDKIT_INSTALL_LUADIR "${CMAKE_INSTALL_DATADIR}/lua/5.4" CACHE STRING "Lua modules (eidkit/*.lua)")
set(EIDKIT_INSTALL_CMODDIR "${CMAKE_INSTALL_LIBDIR}/lua/5.4" CACHE STRING "Lua C modules (eidkit/core.so)")
set(EIDKIT_INSTALL_LIBDIR "${CMAKE_INSTALL_LIBDIR}" CACHE STRING "libeidkit and libeidkit_sign")
set(EIDKIT_INSTALL_BINDIR "${CMAKE_INSTALL_BINDIR}" CACHE STRING "the eidkit program")

# RPATHs are relative ($ORIGIN), so an installed tree can move: the relative
# path between two install directories, each relative to the prefix or absolute.
function(eidkit_relative_dir out from to)
  foreach(v from to)
    if(NOT IS_ABSOLUTE "${${v}}")
      set(${v} "${CMAKE_INSTALL_PREFIX}/${${v}}")
    endif()
  endforeach()
  file(RELATIVE_PATH rel "${from}" "${to}")
  string(REGEX REPLACE "/+$" "" rel "${rel}")
  if(rel STREQUAL "")
    set(rel ".")
  endif()
  set(${out} "${rel}" PARENT_SCOPE)
endfunction()

eidkit_relative_dir(EIDKIT_CMOD_TO_LIB "${EIDKIT_INSTALL_CMODDIR}/eidkit" "${EIDKIT_INSTALL_LIBDIR}")
eidkit_relative_dir(_bin_to_lib "${EIDKIT_INSTALL_BINDIR}" "${EIDKIT_INSTALL_LIBDIR}")
set(EIDKIT_PROGRAM_RPATH "$ORIGIN/${_bin_to_lib}")
if(EIDKIT_LUAROCKS)
  # LuaRocks deploys the rock's bin/ to <tree>/bin and its lib/ (C modules,
  # here with libeidkit) to <tree>/lib/lua/5.4, so the paths inside the rock
  # directory are not the ones the program runs from.
  set(EIDKIT_PROGRAM_RPATH "$ORIGIN/../lib/lua/5.4")
endif()
