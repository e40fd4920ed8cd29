# core.http_server: the eidkit.HttpServer class on libmicrohttpd.
pkg_check_modules(MHD REQUIRED IMPORTED_TARGET libmicrohttpd)
list(APPEND EIDKIT_LUA_BINDINGS bindings/httpd.c)
list(APPEND EIDKIT_BINDING_LIBS PkgConfig::MHD)
# The certificate is handed to GnuTLS from a callback, so that srv:set_tls can
# replace it while the server runs (MHD's own copy cannot be changed).
pkg_check_modules(GNUTLS REQUIRED IMPORTED_TARGET gnutls)
list(APPEND EIDKIT_BINDING_LIBS PkgConfig::GNUTLS)
