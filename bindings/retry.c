/* core.retry_decide and core.retry_delay: the API client's retry decision
 * (eidkit/retry.h) for Lua 5.4. lua/eidkit/ffi.lua gives LuaJIT the same two
 * functions with the same tables; spec/client/retry_decide_spec.lua runs one
 * table of cases through both. */
#include "eidkit/retry.h"

#include "eidkit_lua.h"

#include <string.h>

/* A field of the table at idx, checked: misuse raises naming the field. */
static const char *opt_string(lua_State *L, int idx, const char *k) {
    const char *s = NULL;
    if (lua_getfield(L, idx, k) != LUA_TNIL) {
        s = lua_tostring(L, -1);
        if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "bad field '%s' (expected string)", k);
    }
    lua_pop(L, 1);
    return s; /* still referenced by the caller's table */
}

static lua_Number opt_number(lua_State *L, int idx, const char *k, lua_Number def) {
    lua_Number n = def;
    if (lua_getfield(L, idx, k) != LUA_TNIL) {
        if (lua_type(L, -1) != LUA_TNUMBER) luaL_error(L, "bad field '%s' (expected number)", k);
        n = lua_tonumber(L, -1);
    }
    lua_pop(L, 1);
    return n;
}

static lua_Integer opt_integer(lua_State *L, int idx, const char *k, lua_Integer def) {
    lua_Integer n = def;
    int isint = 0;
    if (lua_getfield(L, idx, k) != LUA_TNIL) {
        if (lua_type(L, -1) == LUA_TNUMBER) n = lua_tointegerx(L, -1, &isint);
        if (!isint) luaL_error(L, "bad field '%s' (expected integer)", k);
    }
    lua_pop(L, 1);
    return n;
}

static int opt_boolean(lua_State *L, int idx, const char *k) {
    int b = 0;
    if (lua_getfield(L, idx, k) != LUA_TNIL) {
        if (lua_type(L, -1) != LUA_TBOOLEAN) luaL_error(L, "bad field '%s' (expected boolean)", k);
        b = lua_toboolean(L, -1);
    }
    lua_pop(L, 1);
    return b;
}

/* Every key of the table at idx must be one of names: a typo raises. */
static void only_keys(lua_State *L, int idx, const char *what, const char *const *names) {
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        int known = 0;
        if (lua_type(L, -2) == LUA_TSTRING)
            for (const char *const *n = names; *n && !known; n++)
                known = strcmp(*n, lua_tostring(L, -2)) == 0;
        if (!known) luaL_error(L, "bad %s (unknown field '%s')", what, luaL_tolstring(L, -2, NULL));
        lua_pop(L, 1);
    }
}

static void read_facts(lua_State *L, int idx, eid_retry_facts *f) {
    static const char *const names[] = {"action",      "attempts",    "outcome",      "sent",
                                        "http_status", "remote_code", "skew_retried", "remaining",
                                        "server_time", "local_time",  "jitter",       NULL};
    luaL_checktype(L, idx, LUA_TTABLE);
    only_keys(L, idx, "facts", names);
    memset(f, 0, sizeof *f);
    f->action = opt_string(L, idx, "action");
    f->attempts = (int)opt_integer(L, idx, "attempts", 0);
    const char *o = opt_string(L, idx, "outcome");
    f->outcome = EID_OUTCOME_COUNT;
    for (int i = 0; o && i < EID_OUTCOME_COUNT; i++)
        if (strcmp(o, eid_outcome_name((eid_outcome)i)) == 0) f->outcome = (eid_outcome)i;
    if (f->outcome == EID_OUTCOME_COUNT)
        luaL_error(L, "bad field 'outcome' (expected an outcome name such as 'timeout')");
    f->bytes_sent = opt_boolean(L, idx, "sent");
    f->http_status = (long)opt_integer(L, idx, "http_status", 0);
    f->remote_code = opt_string(L, idx, "remote_code");
    f->skew_retried = opt_boolean(L, idx, "skew_retried");
    f->remaining = opt_number(L, idx, "remaining", 0);
    f->server_time = (int64_t)opt_integer(L, idx, "server_time", 0);
    f->local_time = (int64_t)opt_integer(L, idx, "local_time", 0);
    f->jitter = opt_number(L, idx, "jitter", 0);
}

/* The keys of eidkit.client's `retry` option table. */
static void read_rules(lua_State *L, int idx, eid_retry_rules *r) {
    static const char *const names[] = {"max_attempts", "unsafe", "base", "cap", NULL};
    memset(r, 0, sizeof *r);
    if (lua_isnoneornil(L, idx)) return;
    luaL_checktype(L, idx, LUA_TTABLE);
    only_keys(L, idx, "rules", names);
    r->max_attempts = (int)opt_integer(L, idx, "max_attempts", 0);
    r->retry_unsafe = opt_boolean(L, idx, "unsafe");
    r->backoff_base = opt_number(L, idx, "base", 0);
    r->backoff_cap = opt_number(L, idx, "cap", 0);
}

static void set_flag(lua_State *L, const char *k, int v) {
    lua_pushboolean(L, v);
    lua_setfield(L, -2, k);
}

/* A delay < 0 ("stop") is left out, as in the retry policy's err table. */
static void set_delay(lua_State *L, const char *k, double v) {
    if (v < 0) return;
    lua_pushnumber(L, v);
    lua_setfield(L, -2, k);
}

/* core.retry_decide([rules,] facts) -> verdict. rules: {max_attempts,
 * unsafe, base, cap} (nil: the defaults); facts and verdict: the fields of
 * eid_retry_facts / eid_retry_verdict (outcome by name, flags as booleans,
 * status as its eid_status_code, negative delays left out). Misuse raises
 * naming the field. */
static int l_retry_decide(lua_State *L) {
    eid_retry_rules rules;
    eid_retry_facts f;
    eid_retry_verdict v;
    eid_error err = {0};
    read_rules(L, 1, &rules);
    read_facts(L, 2, &f);
    if (eid_retry_decide(&rules, &f, &v, &err) != EID_OK)
        return luaL_error(L, "bad argument to 'retry_decide' (%s)", err.message);
    lua_createtable(L, 0, 13);
    lua_pushstring(L, eid_status_code(v.status));
    lua_setfield(L, -2, "status");
    lua_pushstring(L, v.code);
    lua_setfield(L, -2, "code");
    set_flag(L, "transient", v.transient);
    set_flag(L, "sent", v.sent);
    set_flag(L, "retryable", v.retryable);
    set_flag(L, "adopt_skew", v.adopt_skew);
    lua_pushinteger(L, (lua_Integer)v.skew);
    lua_setfield(L, -2, "skew");
    set_flag(L, "resign", v.resign);
    set_flag(L, "ask_policy", v.ask_policy);
    set_delay(L, "backoff", v.backoff);
    set_delay(L, "default_delay", v.default_delay);
    set_delay(L, "delay", v.delay);
    set_flag(L, "keep_received", v.keep_received);
    return 1;
}

/* core.retry_delay(remaining, wanted) -> wanted | nil: the deadline rule
 * for a retry policy's answer (eid_retry_delay). */
static int l_retry_delay(lua_State *L) {
    eid_retry_facts f = {0};
    f.remaining = luaL_checknumber(L, 1);
    double d = eid_retry_delay(&f, luaL_optnumber(L, 2, -1));
    if (d < 0)
        lua_pushnil(L);
    else
        lua_pushnumber(L, d);
    return 1;
}

void eidkit_open_retry(lua_State *L) {
    lua_pushcfunction(L, l_retry_decide);
    lua_setfield(L, -2, "retry_decide");
    lua_pushcfunction(L, l_retry_delay);
    lua_setfield(L, -2, "retry_delay");
}
