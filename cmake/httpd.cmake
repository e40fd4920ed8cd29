# core.http_server: the eidkit.HttpServer class on libmicrohttpd.
pkg_check_modules(MHD REQUIRED IMPORTED_TARGET libmicrohttpd)
list(APPEND EIDKIT_LUA_BINDINGS bindings/httpd.c)
list(APPEND EIDKIT_BINDING_LIBS PkgConfig::MHD)
