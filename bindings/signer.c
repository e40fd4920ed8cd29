/* eidkit.Signer and the module-level sign/sign_explain that share one. */
#include "eidkit/eidkit.h"

#include "eidkit_lua.h"

#include <string.h>

typedef struct lsigner {
    eid_signer *s; /* NULL once closed */
} lsigner;

static lsigner *check_signer(lua_State *L, int idx) {
    lsigner *ls = luaL_checkudata(L, idx, EIDKIT_SIGNER_MT);
    if (ls->s == NULL) luaL_error(L, "attempt to use a closed eidkit.Signer");
    return ls;
}

/* Read a string field with no number coercion and no embedded NUL (the C core
 * takes NUL-terminated strings, and a silent truncation would sign something
 * other than what is sent). */
static const char *opt_string(lua_State *L, int tidx, const char *field, size_t *len_out) {
    int t = lua_type(L, -1);
    if (t != LUA_TSTRING) {
        lua_pushfstring(L, "%s: expected string, got %s", field, lua_typename(L, t));
        luaL_argerror(L, tidx, lua_tostring(L, -1));
    }
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    if (len_out)
        *len_out = len;
    else if (strlen(s) != len) {
        lua_pushfstring(L, "%s: contains a NUL byte", field);
        luaL_argerror(L, tidx, lua_tostring(L, -1));
    }
    return s;
}

/* An integer-valued number at idx (strings are not coerced): 1 and *out, or 0. */
static int strict_integer(lua_State *L, int idx, lua_Integer *out) {
    int isnum = 0;
    *out = lua_tointegerx(L, idx, &isnum);
    return isnum && lua_type(L, idx) == LUA_TNUMBER;
}

/* Lua seconds to the C field; INT64_MIN is the C API's "now" sentinel, so it
 * becomes an ordinary out-of-range value and is refused like any other. */
static int64_t as_timestamp(lua_Integer v) {
    return v == (lua_Integer)EID_TIMESTAMP_NOW ? -1 : (int64_t)v;
}

static void read_signed_headers(lua_State *L, int tidx, const char **names, size_t *count) {
    if (!lua_istable(L, -1)) {
        lua_pushfstring(L, "signed_headers: expected table of header names, got %s",
                        luaL_typename(L, -1));
        luaL_argerror(L, tidx, lua_tostring(L, -1));
    }
    lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
    if (n > EID_SIGNED_HEADERS_MAX) {
        lua_pushfstring(L, "signed_headers: more than %d names", EID_SIGNED_HEADERS_MAX);
        luaL_argerror(L, tidx, lua_tostring(L, -1));
    }
    for (lua_Integer i = 1; i <= n; i++) {
        /* The table keeps the string alive after the pop. */
        if (lua_rawgeti(L, -1, i) != LUA_TSTRING) {
            lua_pushfstring(L, "signed_headers[%d]: expected string, got %s", (int)i,
                            luaL_typename(L, -1));
            luaL_argerror(L, tidx, lua_tostring(L, -1));
        }
        names[i - 1] = lua_tostring(L, -1);
        lua_pop(L, 1);
    }
    *count = (size_t)n;
}

enum field {
    F_UNKNOWN,
    F_BODY,
    F_HOST,
    F_TOKEN,
    F_ACTION,
    F_REGION,
    F_SERVICE,
    F_VERSION,
    F_LANGUAGE,
    F_SECRET_ID,
    F_TIMESTAMP,
    F_SECRET_KEY,
    F_CONTENT_TYPE,
    F_SIGNED_HEADERS
};

/* Dispatch on length first: one memcmp per key instead of a strcmp chain,
 * which was a fifth of a Lua-side signature. */
static enum field field_id(const char *k, size_t len) {
#define IS(lit) (memcmp(k, lit, sizeof lit - 1) == 0)
    switch (len) {
    case 4: return IS("body") ? F_BODY : IS("host") ? F_HOST : F_UNKNOWN;
    case 5: return IS("token") ? F_TOKEN : F_UNKNOWN;
    case 6: return IS("action") ? F_ACTION : IS("region") ? F_REGION : F_UNKNOWN;
    case 7: return IS("service") ? F_SERVICE : IS("version") ? F_VERSION : F_UNKNOWN;
    case 8: return IS("language") ? F_LANGUAGE : F_UNKNOWN;
    case 9: return IS("secret_id") ? F_SECRET_ID : IS("timestamp") ? F_TIMESTAMP : F_UNKNOWN;
    case 10: return IS("secret_key") ? F_SECRET_KEY : F_UNKNOWN;
    case 12: return IS("content_type") ? F_CONTENT_TYPE : F_UNKNOWN;
    case 14: return IS("signed_headers") ? F_SIGNED_HEADERS : F_UNKNOWN;
    default: return F_UNKNOWN;
    }
#undef IS
}

/* Fill *r from the table at tidx in one pass; unknown keys are an error so a
 * misspelt option (secretKey) is caught instead of silently ignored. */
static void read_request(lua_State *L, int tidx, eid_sign_request *r, const char **names) {
    luaL_checktype(L, tidx, LUA_TTABLE);
    memset(r, 0, sizeof *r);
    r->timestamp = EID_TIMESTAMP_NOW;
    int have_body = 0;
    lua_pushnil(L);
    while (lua_next(L, tidx) != 0) {
        if (lua_type(L, -2) != LUA_TSTRING) luaL_argerror(L, tidx, "field names must be strings");
        size_t klen, len;
        const char *k = lua_tolstring(L, -2, &klen);
        switch (field_id(k, klen)) {
        case F_BODY:
            r->body = opt_string(L, tidx, k, &len);
            r->body_len = len;
            have_body = 1;
            break;
        case F_SECRET_KEY:
            r->secret_key = opt_string(L, tidx, k, &len);
            r->secret_key_len = len;
            break;
        case F_TIMESTAMP: {
            lua_Integer ts;
            if (!strict_integer(L, -1, &ts))
                luaL_argerror(L, tidx, "timestamp: expected integer Unix seconds");
            r->timestamp = as_timestamp(ts);
            break;
        }
        case F_SIGNED_HEADERS:
            read_signed_headers(L, tidx, names, &r->signed_headers_count);
            r->signed_headers = names;
            break;
        case F_SECRET_ID: r->secret_id = opt_string(L, tidx, k, NULL); break;
        case F_TOKEN: r->token = opt_string(L, tidx, k, NULL); break;
        case F_HOST: r->host = opt_string(L, tidx, k, NULL); break;
        case F_SERVICE: r->service = opt_string(L, tidx, k, NULL); break;
        case F_ACTION: r->action = opt_string(L, tidx, k, NULL); break;
        case F_VERSION: r->version = opt_string(L, tidx, k, NULL); break;
        case F_REGION: r->region = opt_string(L, tidx, k, NULL); break;
        case F_LANGUAGE: r->language = opt_string(L, tidx, k, NULL); break;
        case F_CONTENT_TYPE: r->content_type = opt_string(L, tidx, k, NULL); break;
        case F_UNKNOWN:
            lua_pushfstring(L, "unknown field '%s'", k);
            luaL_argerror(L, tidx, lua_tostring(L, -1));
        }
        lua_pop(L, 1);
    }
    if (!have_body) luaL_argerror(L, tidx, "body: required (the exact bytes to send)");
}

static void push_headers(lua_State *L, const eid_sign_request *r, const eid_signature *sig) {
    eid_header h[EID_HEADERS_MAX];
    size_t n = eid_sign_headers(r, sig, h);
    lua_createtable(L, 0, (int)n);
    for (size_t i = 0; i < n; i++) {
        lua_pushstring(L, h[i].value);
        lua_setfield(L, -2, h[i].name);
    }
}

/* Shared by sign and explain; sidx is the signer, tidx the request table. */
static int do_sign(lua_State *L, int sidx, int tidx, int explain) {
    eid_signer *s = check_signer(L, sidx)->s;
    eid_sign_request r;
    const char *names[EID_SIGNED_HEADERS_MAX];
    read_request(L, tidx, &r, names);
    /* A Lua clock is read here, before the C call, rather than as the C
     * signer's callback: an error raised inside the signer's lock would
     * longjmp past the unlock. */
    if (r.timestamp == EID_TIMESTAMP_NOW) {
        int top = lua_gettop(L);
        if (lua_getiuservalue(L, sidx, 1) == LUA_TFUNCTION) {
            lua_call(L, 0, 1);
            lua_Integer now;
            if (!strict_integer(L, -1, &now))
                return luaL_error(L, "eidkit.Signer clock must return integer Unix seconds, got %s",
                                  luaL_typename(L, -1));
            r.timestamp = as_timestamp(now);
        }
        lua_settop(L, top);
    }
    eid_signature sig;
    eid_error err = {0};
    eid_status st;
    char cr[EID_TOKEN_MAX + 4096];
    eid_sign_explain ex = {.canonical_request = cr, .canonical_request_cap = sizeof cr};
    st = explain ? eid_signer_explain(s, &r, &sig, &ex, &err) : eid_signer_sign(s, &r, &sig, &err);
    if (st == EID_E_INVALID_ARG) return luaL_argerror(L, tidx, err.message);
    if (st != EID_OK) return eidkit_push_status(L, st, err.message);
    if (!explain) {
        push_headers(L, &r, &sig);
        return 1;
    }
    const struct {
        const char *name, *value;
    } fields[] = {
        {"string_to_sign", ex.string_to_sign},
        {"hashed_payload", ex.hashed_payload},
        {"hashed_canonical_request", ex.hashed_canonical_request},
        {"signature", sig.signature},
        {"authorization", sig.authorization},
        {"signed_headers", sig.signed_headers},
        {"date", sig.date},
    };
    lua_createtable(L, 0, 10);
    lua_pushlstring(L, cr, ex.canonical_request_len);
    lua_setfield(L, -2, "canonical_request");
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        lua_pushstring(L, fields[i].value);
        lua_setfield(L, -2, fields[i].name);
    }
    lua_pushinteger(L, (lua_Integer)sig.timestamp);
    lua_setfield(L, -2, "timestamp");
    push_headers(L, &r, &sig);
    lua_setfield(L, -2, "headers");
    return 1;
}

/* ------------------------------------------------------- eidkit.Signer */

/* eidkit.signer{cache_slots = n, clock = function() return unix_seconds end} */
static int signer_new(lua_State *L) {
    eid_signer_options o = {0};
    int has_clock = 0;
    if (!lua_isnoneornil(L, 1)) {
        luaL_checktype(L, 1, LUA_TTABLE);
        if (lua_getfield(L, 1, "cache_slots") != LUA_TNIL) {
            lua_Integer n;
            luaL_argcheck(L, strict_integer(L, -1, &n) && n >= 1 && n <= 4096, 1,
                          "cache_slots: expected an integer 1..4096");
            o.cache_slots = (size_t)n;
        }
        if (lua_getfield(L, 1, "clock") != LUA_TNIL) {
            luaL_argcheck(L, lua_isfunction(L, -1), 1, "clock: expected function");
            has_clock = 1;
        }
        lua_pop(L, 2);
    }
    /* Created closed, then opened: __gc is safe even if eid_signer_new fails. */
    lsigner *ls = lua_newuserdatauv(L, sizeof *ls, 1);
    ls->s = NULL;
    luaL_setmetatable(L, EIDKIT_SIGNER_MT);
    if (has_clock) {
        lua_getfield(L, 1, "clock");
        lua_setiuservalue(L, -2, 1);
    }
    eid_status st = eid_signer_new(&o, &ls->s);
    if (st != EID_OK) return eidkit_push_status(L, st, NULL);
    return 1;
}

/* signer:compute{secret_key=, date=, service=, timestamp=, signed_headers="a;b",
 * values={...}, lower_values=, body=, method=, uri=, query=} -> hex signature.
 * The inputs come from a request a server received, so malformed values are a
 * runtime failure (nil, err), not misuse; wrong Lua types still raise. */
static const char *compute_string(lua_State *L, int tidx, const char *field, int required,
                                  size_t *len) {
    int t = lua_getfield(L, tidx, field);
    if (t == LUA_TNIL && !required) {
        lua_pop(L, 1);
        return NULL;
    }
    const char *v = opt_string(L, tidx, field, len);
    lua_pop(L, 1); /* the table still holds the string */
    return v;
}

static int do_compute(lua_State *L, int sidx, int tidx) {
    eid_signer *s = check_signer(L, sidx)->s;
    luaL_checktype(L, tidx, LUA_TTABLE);
    eid_canonical c = {0};
    c.secret_key = compute_string(L, tidx, "secret_key", 1, &c.secret_key_len);
    c.date = compute_string(L, tidx, "date", 1, NULL);
    c.service = compute_string(L, tidx, "service", 1, NULL);
    c.timestamp = compute_string(L, tidx, "timestamp", 1, NULL);
    c.signed_headers = compute_string(L, tidx, "signed_headers", 1, NULL);
    c.method = compute_string(L, tidx, "method", 0, NULL);
    c.uri = compute_string(L, tidx, "uri", 0, NULL);
    c.query = compute_string(L, tidx, "query", 0, NULL);
    c.body = compute_string(L, tidx, "body", 0, &c.body_len);
    lua_getfield(L, tidx, "lower_values");
    c.lower_values = lua_toboolean(L, -1);
    lua_pop(L, 1);

    const char *values[EID_VERIFY_HEADERS_MAX];
    if (lua_getfield(L, tidx, "values") != LUA_TTABLE)
        luaL_argerror(L, tidx, "values: expected table");
    lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
    if (n > EID_VERIFY_HEADERS_MAX)
        return eidkit_push_status(L, EID_E_INVALID_ARG, "too many signed headers");
    for (lua_Integer i = 1; i <= n; i++) {
        int t = lua_rawgeti(L, -1, i);
        if (t == LUA_TBOOLEAN && !lua_toboolean(L, -1)) {
            values[i - 1] = NULL; /* false: the header was not received */
        } else if (t == LUA_TSTRING) {
            values[i - 1] = lua_tostring(L, -1);
        } else {
            lua_pushfstring(L, "values[%d]: expected string or false, got %s", (int)i,
                            luaL_typename(L, -1));
            luaL_argerror(L, tidx, lua_tostring(L, -1));
        }
        lua_pop(L, 1);
    }
    c.values = values;
    c.value_count = (size_t)n;

    char sig[65];
    eid_error err = {0};
    eid_status st = eid_signer_compute(s, &c, sig, NULL, &err);
    lua_pop(L, 1); /* values, kept alive until here */
    if (st != EID_OK) return eidkit_push_status(L, st, err.message);
    lua_pushlstring(L, sig, 64);
    return 1;
}

static int signer_compute(lua_State *L) { return do_compute(L, 1, 2); }

static int signer_sign(lua_State *L) { return do_sign(L, 1, 2, 0); }
static int signer_explain(lua_State *L) { return do_sign(L, 1, 2, 1); }

static int push_stats(lua_State *L, eid_signer *s) {
    uint64_t hits = 0, misses = 0;
    eid_signer_cache_stats(s, &hits, &misses);
    lua_createtable(L, 0, 2);
    lua_pushinteger(L, (lua_Integer)hits);
    lua_setfield(L, -2, "hits");
    lua_pushinteger(L, (lua_Integer)misses);
    lua_setfield(L, -2, "misses");
    return 1;
}

static int signer_stats(lua_State *L) { return push_stats(L, check_signer(L, 1)->s); }

/* One idempotent close behind close(), __gc and __close. */
static int signer_close(lua_State *L) {
    lsigner *ls = luaL_checkudata(L, 1, EIDKIT_SIGNER_MT);
    eid_signer_free(ls->s);
    ls->s = NULL;
    return 0;
}

static int signer_tostring(lua_State *L) {
    lsigner *ls = luaL_checkudata(L, 1, EIDKIT_SIGNER_MT);
    if (ls->s)
        lua_pushfstring(L, "eidkit.Signer (%p)", (void *)ls);
    else
        lua_pushliteral(L, "eidkit.Signer (closed)");
    return 1;
}

/* ------------------------------------------- module-level, shared signer */

static int mod_sign(lua_State *L) { return do_sign(L, lua_upvalueindex(1), 1, 0); }
static int mod_explain(lua_State *L) { return do_sign(L, lua_upvalueindex(1), 1, 1); }
static int mod_compute(lua_State *L) { return do_compute(L, lua_upvalueindex(1), 1); }
static int mod_stats(lua_State *L) {
    return push_stats(L, check_signer(L, lua_upvalueindex(1))->s);
}

void eidkit_open_signer(lua_State *L) {
    static const luaL_Reg methods[] = {
        {"sign", signer_sign},         {"explain", signer_explain}, {"compute", signer_compute},
        {"cache_stats", signer_stats}, {"close", signer_close},     {NULL, NULL},
    };
    static const luaL_Reg meta[] = {
        {"__gc", signer_close},
        {"__close", signer_close},
        {"__tostring", signer_tostring},
        {NULL, NULL},
    };
    eidkit_new_class(L, EIDKIT_SIGNER_MT, meta, methods);
    lua_pop(L, 1);

    lua_pushcfunction(L, signer_new);
    lua_setfield(L, -2, "signer");

    /* Module state lives in an upvalue, not a C global: each lua_State gets
     * its own signer, freed with the state. */
    lua_pushcfunction(L, signer_new);
    lua_call(L, 0, 2);
    if (lua_isnil(L, -2))
        luaL_error(L, "eidkit.core: cannot create the default signer: %s",
                   luaL_tolstring(L, -1, NULL));
    lua_pop(L, 1);
    static const luaL_Reg shared[] = {
        {"sign", mod_sign},
        {"sign_explain", mod_explain},
        {"compute", mod_compute},
        {"cache_stats", mod_stats},
        {NULL, NULL},
    };
    luaL_setfuncs(L, shared, 1);
}
