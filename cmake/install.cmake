# Install rules for C users: the two libraries, the headers, pkg-config files
# and a relocatable CMake package (find_package(eidkit CONFIG) ->
# eidkit::eidkit, eidkit::sign). docs/PACKAGING.md says which to link.
include(CMakePackageConfigHelpers)

set_target_properties(eidkit_sign PROPERTIES EXPORT_NAME sign)
install(TARGETS eidkit eidkit_sign EXPORT eidkitTargets
  LIBRARY DESTINATION ${EIDKIT_INSTALL_LIBDIR})
if(EIDKIT_LUAROCKS)
  # LuaRocks deploys regular files only (the libraries carry no version
  # symlinks there, see cmake/install-dirs.cmake), and a rock is for Lua
  # users: C users install with cmake.
  return()
endif()
install(DIRECTORY core/include/eidkit DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})

set(EIDKIT_CMAKEDIR "${EIDKIT_INSTALL_LIBDIR}/cmake/eidkit")
install(EXPORT eidkitTargets NAMESPACE eidkit:: DESTINATION ${EIDKIT_CMAKEDIR})
configure_package_config_file(cmake/eidkitConfig.cmake.in
  "${CMAKE_BINARY_DIR}/packaging/eidkitConfig.cmake" INSTALL_DESTINATION ${EIDKIT_CMAKEDIR})
# 0.x: a minor version may break the API, so only the same minor is compatible.
write_basic_package_version_file("${CMAKE_BINARY_DIR}/packaging/eidkitConfigVersion.cmake"
  COMPATIBILITY SameMinorVersion)
install(FILES "${CMAKE_BINARY_DIR}/packaging/eidkitConfig.cmake"
  "${CMAKE_BINARY_DIR}/packaging/eidkitConfigVersion.cmake" DESTINATION ${EIDKIT_CMAKEDIR})

# pkg-config files find their prefix from where they lie (${pcfiledir}), so a
# moved tree still works; no build path is written into them.
set(EIDKIT_PCDIR "${EIDKIT_INSTALL_LIBDIR}/pkgconfig")
eidkit_relative_dir(EIDKIT_PC_TO_PREFIX "${EIDKIT_PCDIR}" "")
eidkit_relative_dir(EIDKIT_PC_TO_LIB "${EIDKIT_PCDIR}" "${EIDKIT_INSTALL_LIBDIR}")
eidkit_relative_dir(EIDKIT_PC_TO_INCLUDE "${EIDKIT_PCDIR}" "${CMAKE_INSTALL_INCLUDEDIR}")
foreach(pc eidkit eidkit-sign)
  configure_file(cmake/${pc}.pc.in "${CMAKE_BINARY_DIR}/packaging/${pc}.pc" @ONLY)
  install(FILES "${CMAKE_BINARY_DIR}/packaging/${pc}.pc" DESTINATION ${EIDKIT_PCDIR})
endforeach()
