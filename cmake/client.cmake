# The API client (issue 4): libcurl (easy + multi + share), cJSON for the
# response envelope (the hot path) and jansson to build typed requests (it
# checks UTF-8). One concept per file; core/src/client_internal.h lists them.
pkg_check_modules(CURL REQUIRED IMPORTED_TARGET libcurl)
pkg_check_modules(CJSON REQUIRED IMPORTED_TARGET libcjson)
list(APPEND EIDKIT_CORE_SOURCES core/src/client.c core/src/envelope.c core/src/retry.c
  core/src/calls.c core/src/http.c)
list(APPEND EIDKIT_CORE_LIBS PkgConfig::CURL PkgConfig::CJSON PkgConfig::JANSSON)
list(APPEND EIDKIT_LUA_BINDINGS bindings/client.c)
