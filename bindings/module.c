/* eidkit.core: the module table, the error type, and version facts. */
#include "eidkit/eidkit.h"

#include "eidkit_lua.h"

static int error_tostring(lua_State *L) {
    lua_getfield(L, 1, "code");
    lua_getfield(L, 1, "message");
    lua_pushfstring(L, "%s: %s", luaL_optstring(L, -2, "error"), luaL_optstring(L, -1, ""));
    return 1;
}

int eidkit_push_fail(lua_State *L, const char *code, const char *message) {
    lua_pushnil(L);
    lua_createtable(L, 0, 4);
    lua_pushstring(L, code);
    lua_setfield(L, -2, "code");
    lua_pushstring(L, message);
    lua_setfield(L, -2, "message");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "retryable");
    luaL_setmetatable(L, EIDKIT_ERROR_MT);
    return 2;
}

static int l_version(lua_State *L) {
    lua_pushstring(L, eid_version());
    return 1;
}

static int l_openssl_version(lua_State *L) {
    lua_pushstring(L, eid_crypto_version());
    return 1;
}

static int l_utc_date(lua_State *L) {
    lua_Integer ts = luaL_checkinteger(L, 1);
    char date[11];
    if (eid_utc_date((int64_t)ts, date) != EID_OK)
        return luaL_argerror(L, 1, "timestamp out of range 0..253402300799");
    lua_pushlstring(L, date, 10);
    return 1;
}

int luaopen_eidkit_core(lua_State *L) {
    luaL_checkversion(L);
    if (luaL_newmetatable(L, EIDKIT_ERROR_MT)) {
        lua_pushcfunction(L, error_tostring);
        lua_setfield(L, -2, "__tostring");
        lua_pushliteral(L, EIDKIT_ERROR_MT);
        lua_setfield(L, -2, "__name");
    }
    lua_pop(L, 1);

    static const luaL_Reg funcs[] = {
        {"version", l_version},
        {"openssl_version", l_openssl_version},
        {"utc_date", l_utc_date},
        {NULL, NULL},
    };
    luaL_newlib(L, funcs);
    lua_pushliteral(L, LUA_RELEASE); /* the Lua headers this module was built with */
    lua_setfield(L, -2, "lua_release");
    luaL_getmetatable(L, EIDKIT_ERROR_MT);
    lua_setfield(L, -2, "error_mt");
    eidkit_open_signer(L);
    return 1;
}
