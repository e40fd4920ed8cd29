# The API client (issue 4): libcurl (easy + multi + share) and jansson for the
# response envelope.
pkg_check_modules(CURL REQUIRED IMPORTED_TARGET libcurl)
list(APPEND EIDKIT_CORE_SOURCES core/src/client.c)
list(APPEND EIDKIT_CORE_LIBS PkgConfig::CURL PkgConfig::JANSSON)
list(APPEND EIDKIT_LUA_BINDINGS bindings/client.c)
