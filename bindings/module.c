/* eidkit.core: the module table, the error type, and version facts. */
#define _POSIX_C_SOURCE 200809L

#include "eidkit/eidkit.h"
#include "eidkit/host.h"
#include "eidkit/ledger.h"

#include "eidkit_lua.h"

#include <arpa/inet.h>
#include <string.h>

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

int eidkit_push_status(lua_State *L, eid_status st, const char *message) {
    int n =
        eidkit_push_fail(L, eid_status_code(st), message && *message ? message : eid_strerror(st));
    if (st == EID_E_LEDGER_UNAVAILABLE) { /* nothing changed: the call may be repeated */
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "retryable");
    }
    return n;
}

void eidkit_new_class(lua_State *L, const char *name, const luaL_Reg *meta,
                      const luaL_Reg *methods) {
    if (luaL_newmetatable(L, name)) {
        luaL_setfuncs(L, meta, 0);
        lua_newtable(L); /* luaL_newlib needs an array, not a pointer */
        luaL_setfuncs(L, methods, 0);
        lua_setfield(L, -2, "__index");
    }
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

/* parse_authorization(value) -> {secret_id, date, service, signed_headers,
 * headers = {names...}, signature} or nil, err (code "invalid"). */
static int l_parse_authorization(lua_State *L) {
    size_t len;
    const char *v = luaL_checklstring(L, 1, &len);
    eid_authorization a;
    eid_error err = {0};
    if (eid_authorization_parse(v, len, &a, &err) != EID_OK)
        return eidkit_push_status(L, EID_E_INVALID_ARG, err.message);
    lua_createtable(L, 0, 6);
    lua_pushstring(L, a.secret_id);
    lua_setfield(L, -2, "secret_id");
    lua_pushstring(L, a.date);
    lua_setfield(L, -2, "date");
    lua_pushstring(L, a.service);
    lua_setfield(L, -2, "service");
    lua_pushstring(L, a.signed_headers);
    lua_setfield(L, -2, "signed_headers");
    lua_pushstring(L, a.signature);
    lua_setfield(L, -2, "signature");
    lua_createtable(L, (int)a.signed_headers_count, 0);
    const char *p = a.signed_headers;
    for (lua_Integer i = 1;; i++) {
        const char *semi = strchr(p, ';');
        lua_pushlstring(L, p, semi ? (size_t)(semi - p) : strlen(p));
        lua_rawseti(L, -2, i);
        if (semi == NULL) break;
        p = semi + 1;
    }
    lua_setfield(L, -2, "headers");
    return 1;
}

/* equal(a, b): constant-time string comparison, for signatures and tokens. */
static int l_equal(lua_State *L) {
    size_t al, bl;
    const char *a = luaL_checklstring(L, 1, &al);
    const char *b = luaL_checklstring(L, 2, &bl);
    lua_pushboolean(L, eid_ct_equal(a, al, b, bl));
    return 1;
}

/* random_bytes(n): n bytes from OpenSSL's CSPRNG (1..65536). */
static int l_random_bytes(lua_State *L) {
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n >= 1 && n <= 65536, 1, "expected 1..65536");
    luaL_Buffer b;
    char *p = luaL_buffinitsize(L, &b, (size_t)n);
    if (eid_random_bytes(p, (size_t)n) != EID_OK)
        return eidkit_push_status(L, EID_E_CRYPTO, "the random generator failed");
    luaL_pushresultsize(&b, (size_t)n);
    return 1;
}

/* Flows poll (CheckEidTokenStatus every second) and tests wait; stock Lua
 * has neither a sleep nor a sub-second clock (eidkit/host.h, which the
 * LuaJIT host calls through the FFI too). */
static int l_sleep(lua_State *L) {
    lua_Number s = luaL_checknumber(L, 1);
    luaL_argcheck(L, eid_sleep((double)s) == EID_OK, 1, "expected 0..86400 seconds");
    return 0;
}

/* Unix time with sub-second resolution. */
static int l_now(lua_State *L) {
    lua_pushnumber(L, eid_clock_now());
    return 1;
}

/* core.ip_address(text) -> the address's bytes (4 for IPv4, 16 for IPv6)
 * and its canonical text (inet_ntop: "2001:db8::1" for "2001:DB8:0::1")
 * | nil: inet_pton's reading of an address literal, for eidkit.realip,
 * which names a client as nginx's $remote_addr does, in canonical form. */
static int l_ip_address(lua_State *L) {
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    unsigned char b[16];
    char text[INET6_ADDRSTRLEN];
    if (len < INET6_ADDRSTRLEN && strlen(s) == len) {
        int af = inet_pton(AF_INET, s, b) == 1    ? AF_INET
                 : inet_pton(AF_INET6, s, b) == 1 ? AF_INET6
                                                  : 0;
        if (af && inet_ntop(af, b, text, sizeof text)) {
            lua_pushlstring(L, (const char *)b, af == AF_INET ? 4 : 16);
            lua_pushstring(L, text);
            return 2;
        }
    }
    lua_pushnil(L);
    return 1;
}

/* Seconds on a clock that never jumps, for measuring intervals. */
static int l_monotonic(lua_State *L) {
    lua_pushnumber(L, eid_clock_monotonic());
    return 1;
}

/* t[name] = value for each row, as a new table on the stack. */
static void push_named(lua_State *L, const eid_named_value *rows, size_t n) {
    lua_createtable(L, 0, (int)n);
    for (size_t i = 0; i < n; i++) {
        lua_pushinteger(L, (lua_Integer)rows[i].value);
        lua_setfield(L, -2, rows[i].name);
    }
}

/* The C core's rules that Lua code needs, from the C macros, so they are
 * written once: core.limits (the ledger's input limits and defaults, named
 * as the EID_LEDGER_* macros without the prefix) and core.errcodes (Tencent's
 * ErrCodes the ledger gives a meaning to), from eidkit/host.h's tables, which
 * the LuaJIT host reads through the FFI. */
static void push_rules(lua_State *L) {
    size_t nl;
    const eid_named_value *named = eid_limits(&nl);
    push_named(L, named, nl);
    lua_setfield(L, -2, "limits");
    named = eid_errcode_names(&nl);
    push_named(L, named, nl);
    lua_setfield(L, -2, "errcodes");
    /* core.errcode_table: every Text.ErrCode eidkit gives a meaning to
     * (eidkit/errcode.h), as {code, status, reason, retry_with_new_token,
     * billed}; status is eidkit.flow's word for the verdict
     * (eid_errcode_status). */
    size_t n;
    const eid_errcode_info *t = eid_errcode_table(&n);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        lua_createtable(L, 0, 5);
        lua_pushinteger(L, (lua_Integer)t[i].code);
        lua_setfield(L, -2, "code");
        lua_pushstring(L, eid_errcode_status(t[i].verdict));
        lua_setfield(L, -2, "status");
        lua_pushstring(L, t[i].reason);
        lua_setfield(L, -2, "reason");
        lua_pushboolean(L, t[i].retry_with_new_token);
        lua_setfield(L, -2, "retry_with_new_token");
        lua_pushboolean(L, t[i].billed);
        lua_setfield(L, -2, "billed");
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "errcode_table");
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
        {"parse_authorization", l_parse_authorization},
        {"equal", l_equal},
        {"random_bytes", l_random_bytes},
        {"sleep", l_sleep},
        {"now", l_now},
        {"monotonic", l_monotonic},
        {"ip_address", l_ip_address},
        {NULL, NULL},
    };
    luaL_newlib(L, funcs);
    lua_pushliteral(L, LUA_RELEASE); /* the Lua headers this module was built with */
    lua_setfield(L, -2, "lua_release");
    luaL_getmetatable(L, EIDKIT_ERROR_MT);
    lua_setfield(L, -2, "error_mt");
    /* status_codes[value] = err.code, for every eid_status (dense from 0). */
    lua_newtable(L);
    for (int i = 0; strcmp(eid_status_code((eid_status)i), "unknown") != 0; i++) {
        lua_pushstring(L, eid_status_code((eid_status)i));
        lua_rawseti(L, -2, i);
    }
    lua_setfield(L, -2, "status_codes");
    push_rules(L);
    eidkit_open_signer(L);
    eidkit_open_httpd(L);
    eidkit_open_ledger(L);
    eidkit_open_ledger_pool(L);
    eidkit_open_client(L);
    eidkit_open_sandbox(L);
    eidkit_open_process(L);
    eidkit_open_poller(L);
    eidkit_open_crypto(L);
    return 1;
}
