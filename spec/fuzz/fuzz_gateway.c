/*
 * libFuzzer: eidkit.gateway's request handling from any bytes, in an embedded
 * Lua 5.4 with the real gateway module and lua-cjson (the JSON-to-Lua
 * boundary), in front of a stand-in flow (the gateway's validation is what is
 * fuzzed, not Tencent). The input is "METHOD PATH\n" then header lines, a
 * blank line and the body. Properties (spec/fuzz/gateway_check.lua):
 * gw:handle never raises, answers a status the gateway documents, with a
 * JSON body, and never echoes the body's bytes back.
 */
#define CHECK_FILE "gateway_check.lua"
#include "lua_harness.h"
