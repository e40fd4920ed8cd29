# Identity crypto (issue 16): SM2, SM4-ECB, AES-256-CBC and RSA PKCS#1 v1.5
# through OpenSSL's EVP; SM4-GCM through libgcrypt, which Debian 12's
# OpenSSL 3.0 lacks. cJSON (found by client.cmake) parses EidInfo's JSON.
pkg_check_modules(GCRYPT REQUIRED IMPORTED_TARGET libgcrypt)
list(APPEND EIDKIT_CORE_SOURCES core/src/pkey.c core/src/sm2.c core/src/rsa.c core/src/cipher.c
  core/src/base64.c core/src/eidinfo.c)
list(APPEND EIDKIT_CORE_LIBS PkgConfig::GCRYPT PkgConfig::CJSON)
list(APPEND EIDKIT_LUA_BINDINGS bindings/crypto.c)
