/*
 * The shared body of the Lua harnesses (fuzz_gateway.c, fuzz_sim.c): an
 * embedded Lua 5.4 that runs spec/fuzz/CHECK_FILE once, which returns a
 * check(bytes) function; each input is passed to it, and a raise aborts.
 * EIDKIT_ROOT (set by spec/fuzz/run) is the repository.
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
    snprintf(path, sizeof path, "%s/spec/fuzz/" CHECK_FILE, root);
    lua_pushstring(L, root);
    lua_setglobal(L, "EIDKIT_ROOT");
    if (luaL_dofile(L, path) != LUA_OK) {
        fprintf(stderr, "fuzz: %s\n", lua_tostring(L, -1));
        abort();
    }
    lua_setglobal(L, "check"); /* the chunk returns check(bytes) */
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    if (L == NULL) setup();
    lua_getglobal(L, "check");
    lua_pushlstring(L, (const char *)data, size);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
        fprintf(stderr, "fuzz: %s\n", lua_tostring(L, -1));
        abort();
    }
    lua_settop(L, 0);
    return 0;
}
