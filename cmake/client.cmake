# The API client (issue 4): libcurl (easy + multi + share) and cJSON, which
# reads the response envelope (the hot path) and builds the typed requests.
# One concept per file; core/src/client_internal.h lists them.
pkg_check_modules(CURL REQUIRED IMPORTED_TARGET libcurl)
pkg_check_modules(CJSON REQUIRED IMPORTED_TARGET libcjson)
list(APPEND EIDKIT_CORE_SOURCES core/src/client.c core/src/envelope.c core/src/retry.c
  core/src/calls.c core/src/http.c)
list(APPEND EIDKIT_CORE_LIBS PkgConfig::CURL PkgConfig::CJSON)
list(APPEND EIDKIT_LUA_BINDINGS bindings/client.c bindings/client_thread.c bindings/retry.c)
