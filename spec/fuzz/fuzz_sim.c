/*
 * libFuzzer: the simulator's request handling from any bytes, in an embedded
 * Lua 5.4 with the real eidkit.sim and eidkit.core. The first byte picks the
 * action (or a control-API path); the rest is the JSON body, signed with the
 * simulator's demo credential so that parameter validation is what is
 * reached. Properties (spec/fuzz/sim_check.lua): sim:handle never fails
 * inside (no 500), answers API calls 200 with a JSON Response carrying a
 * RequestId, and control calls with JSON.
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
    snprintf(path, sizeof path, "%s/spec/fuzz/sim_check.lua", root);
    lua_pushstring(L, root);
    lua_setglobal(L, "EIDKIT_ROOT");
    if (luaL_dofile(L, path) != LUA_OK) {
        fprintf(stderr, "fuzz_sim: %s\n", lua_tostring(L, -1));
        abort();
    }
    lua_setglobal(L, "check"); /* the chunk returns check(bytes) */
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    if (L == NULL) setup();
    lua_getglobal(L, "check");
    lua_pushlstring(L, (const char *)data, size);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
        fprintf(stderr, "fuzz_sim: %s\n", lua_tostring(L, -1));
        abort();
    }
    lua_settop(L, 0);
    return 0;
}
