/*
 * libFuzzer: eidkit.gateway's request handling from any bytes, in an embedded
 * Lua 5.4 with the real gateway module and lua-cjson (the JSON-to-Lua
 * boundary), in front of a stand-in flow (the gateway's validation is what is
 * fuzzed, not Tencent). The input is "METHOD PATH\n" then header lines, a
 * blank line and the body. Properties (spec/fuzz/gateway_check.lua):
 * gw:handle never raises, answers a status the gateway documents, with a
 * JSON body, and never echoes the body's bytes back.
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include <stdio.h>
#include <stdlib.h>

static lua_State *L;

static void setup(void) {
    L = luaL_newstate();
    luaL_openlibs(L);
    const char *root = getenv("EIDKIT_ROOT");
    if (root == NULL) root = ".";
    char path[4096];
    snprintf(path, sizeof path, "%s/spec/fuzz/gateway_check.lua", root);
    lua_pushstring(L, root);
    lua_setglobal(L, "EIDKIT_ROOT");
    if (luaL_dofile(L, path) != LUA_OK) {
        fprintf(stderr, "fuzz_gateway: %s\n", lua_tostring(L, -1));
        abort();
    }
    lua_setglobal(L, "check"); /* the chunk returns check(bytes) */
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    if (L == NULL) setup();
    lua_getglobal(L, "check");
    lua_pushlstring(L, (const char *)data, size);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
        fprintf(stderr, "fuzz_gateway: %s\n", lua_tostring(L, -1));
        abort();
    }
    lua_settop(L, 0);
    return 0;
}
