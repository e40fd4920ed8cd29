/* eidkit.Ledger: the token ledger (core/include/eidkit/ledger.h) for Lua. */
#include "eidkit/ledger.h"

#include "eidkit_lua.h"

#define EIDKIT_LEDGER_MT "eidkit.Ledger"

#include <string.h>

#define PAGE 256

typedef struct lledger {
    eid_ledger *l; /* NULL once closed */
    int64_t now;   /* read from the Lua clock before each call */
} lledger;

static int64_t lua_clock(void *ud) { return ((lledger *)ud)->now; }

static lledger *check_ledger(lua_State *L, int idx) {
    lledger *ll = luaL_checkudata(L, idx, EIDKIT_LEDGER_MT);
    if (ll->l == NULL) luaL_error(L, "attempt to use a closed eidkit.Ledger");
    /* A Lua clock is read here, never from inside the C call (an error in it
     * would longjmp past the ledger's lock). */
    if (lua_getiuservalue(L, idx, 1) == LUA_TFUNCTION) {
        lua_call(L, 0, 1);
        int isnum = 0;
        lua_Integer now = lua_tointegerx(L, -1, &isnum);
        if (!isnum || lua_type(L, -1) != LUA_TNUMBER || now < 0 || now > EID_TIMESTAMP_MAX)
            luaL_error(L, "eidkit.Ledger clock must return integer Unix seconds");
        ll->now = (int64_t)now;
    }
    lua_pop(L, 1);
    return ll;
}

/* A failed call: misuse raises naming the argument; a malformed token given
 * to a lookup is simply not in the ledger (it usually comes from a user). */
static int fail(lua_State *L, eid_status st, const eid_error *err, int arg, int lookup) {
    if (st == EID_E_INVALID_ARG) {
        if (lookup && strcmp(err->field, "token") == 0)
            return eidkit_push_status(L, EID_E_LEDGER_UNKNOWN, err->message);
        return luaL_argerror(L, arg, err->message);
    }
    return eidkit_push_status(L, st, err->message);
}

static void set_int(lua_State *L, const char *k, int64_t v) {
    lua_pushinteger(L, (lua_Integer)v);
    lua_setfield(L, -2, k);
}

static void set_time(lua_State *L, const char *k, int64_t v) {
    if (v) set_int(L, k, v);
}

static void push_record(lua_State *L, const eid_ledger_entry *r) {
    lua_createtable(L, 0, 18);
    lua_pushstring(L, r->token);
    lua_setfield(L, -2, "EidToken");
    lua_pushstring(L, r->merchant_id);
    lua_setfield(L, -2, "MerchantId");
    lua_pushstring(L, r->subject);
    lua_setfield(L, -2, "subject");
    lua_pushstring(L, r->extra);
    lua_setfield(L, -2, "Extra");
    lua_pushstring(L, eid_ledger_state_name(r->state));
    lua_setfield(L, -2, "state");
    set_int(L, "created_at", r->created_at);
    set_int(L, "expires_at", r->expires_at);
    set_int(L, "result_deadline", r->result_deadline);
    set_time(L, "finished_at", r->finished_at);
    set_time(L, "consumed_at", r->consumed_at);
    set_time(L, "last_pull_at", r->last_pull_at);
    set_int(L, "pulls", r->pulls);
    set_int(L, "attempts", r->attempts);
    set_int(L, "billable", r->billable);
    if (r->has_err_code) set_int(L, "ErrCode", r->err_code);
    lua_pushboolean(L, r->has_payload);
    lua_setfield(L, -2, "has_payload");
    lua_newtable(L);
    int i = 0;
    for (const char *p = r->request_ids; *p;) {
        size_t len = strcspn(p, ",");
        lua_pushlstring(L, p, len);
        lua_rawseti(L, -2, ++i);
        p += len + (p[len] == ',');
    }
    lua_setfield(L, -2, "request_ids");
}

/* A string argument without embedded NUL (the C API takes C strings). */
static const char *check_cstring(lua_State *L, int idx) {
    size_t len;
    const char *s = luaL_checklstring(L, idx, &len);
    if (strlen(s) != len) luaL_argerror(L, idx, "contains a NUL byte");
    return s;
}

/* t[field] as an optional string (no number coercion); NULL when absent. */
static const char *field_string(lua_State *L, int t, const char *field, int arg) {
    int type = lua_getfield(L, t, field);
    const char *s = NULL;
    if (type == LUA_TSTRING) {
        size_t len;
        s = lua_tolstring(L, -1, &len);
        if (strlen(s) != len) {
            lua_pushfstring(L, "%s: contains a NUL byte", field);
            luaL_argerror(L, arg, lua_tostring(L, -1));
        }
    } else if (type != LUA_TNIL) {
        lua_pushfstring(L, "%s: expected string, got %s", field, lua_typename(L, type));
        luaL_argerror(L, arg, lua_tostring(L, -1));
    }
    lua_pop(L, 1); /* the table keeps the string alive */
    return s;
}

static int64_t field_integer(lua_State *L, int t, const char *field, int arg) {
    int type = lua_getfield(L, t, field);
    int64_t v = 0;
    if (type != LUA_TNIL) {
        int isnum = 0;
        lua_Integer i = lua_tointegerx(L, -1, &isnum);
        if (!isnum || type != LUA_TNUMBER || i < 0) {
            lua_pushfstring(L, "%s: expected non-negative integer Unix seconds", field);
            luaL_argerror(L, arg, lua_tostring(L, -1));
        }
        v = (int64_t)i;
    }
    lua_pop(L, 1);
    return v;
}

/* --------------------------------------------------------------- methods */

/* ledger:issue{EidToken=, MerchantId=, subject=, Extra=, created_at=, expires_at=} */
static int l_issue(lua_State *L) {
    lledger *ll = check_ledger(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    static const char *const known[] = {"EidToken",   "MerchantId", "subject", "Extra",
                                        "created_at", "expires_at", NULL};
    lua_pushnil(L);
    while (lua_next(L, 2)) {
        int ok = 0;
        if (lua_type(L, -2) == LUA_TSTRING)
            for (int i = 0; known[i] && !ok; i++)
                ok = strcmp(lua_tostring(L, -2), known[i]) == 0;
        if (!ok) {
            lua_pushfstring(L, "unknown field '%s'", luaL_tolstring(L, -2, NULL));
            luaL_argerror(L, 2, lua_tostring(L, -1));
        }
        lua_pop(L, 1);
    }
    eid_ledger_issue_params in = {
        .token = field_string(L, 2, "EidToken", 2),
        .merchant_id = field_string(L, 2, "MerchantId", 2),
        .subject = field_string(L, 2, "subject", 2),
        .extra = field_string(L, 2, "Extra", 2),
        .created_at = field_integer(L, 2, "created_at", 2),
        .expires_at = field_integer(L, 2, "expires_at", 2),
    };
    eid_error err = {0};
    eid_status st = eid_ledger_issue(ll->l, &in, &err);
    if (st == EID_E_INVALID_ARG) {
        /* Name the field as the caller spelt it. */
        static const char *const names[][2] = {
            {"token", "EidToken"}, {"merchant_id", "MerchantId"}, {"extra", "Extra"}};
        for (size_t i = 0; i < 3; i++) {
            size_t n = strlen(names[i][0]);
            if (strcmp(err.field, names[i][0]) == 0) {
                lua_pushfstring(L, "%s%s", names[i][1], err.message + n);
                return luaL_argerror(L, 2, lua_tostring(L, -1));
            }
        }
    }
    if (st) return fail(L, st, &err, 2, 0);
    lua_pushboolean(L, 1);
    return 1;
}

typedef eid_status (*lookup_fn)(eid_ledger *, const char *, const char *, eid_ledger_entry *,
                                eid_error *);

static int token_subject_call(lua_State *L, lookup_fn fn) {
    lledger *ll = check_ledger(L, 1);
    const char *token = check_cstring(L, 2);
    const char *subject = check_cstring(L, 3);
    eid_ledger_entry r;
    eid_error err = {0};
    eid_status st = fn(ll->l, token, subject, &r, &err);
    if (st) return fail(L, st, &err, strcmp(err.field, "subject") == 0 ? 3 : 2, 1);
    push_record(L, &r);
    return 1;
}

static int l_claim(lua_State *L) { return token_subject_call(L, eid_ledger_claim); }
static int l_consume(lua_State *L) { return token_subject_call(L, eid_ledger_consume); }

static int l_get(lua_State *L) {
    lledger *ll = check_ledger(L, 1);
    const char *token = check_cstring(L, 2);
    eid_ledger_entry r;
    eid_error err = {0};
    eid_status st = eid_ledger_get(ll->l, token, &r, &err);
    if (st) return fail(L, st, &err, 2, 1);
    push_record(L, &r);
    return 1;
}

/* Digest a GetEidResult response (the Response object, or the whole body
 * with a Response member) into an outcome. JSON null (cjson.null, a light
 * userdata) counts as absent. */
static int is_absent(lua_State *L, int idx) {
    int t = lua_type(L, idx);
    return t == LUA_TNIL || t == LUA_TLIGHTUSERDATA;
}

static void read_outcome(lua_State *L, int arg, eid_ledger_outcome *o) {
    luaL_checktype(L, arg, LUA_TTABLE);
    int resp = arg;
    if (lua_getfield(L, arg, "Response") == LUA_TTABLE)
        resp = lua_gettop(L);
    else
        lua_pop(L, 1);
    memset(o, 0, sizeof *o);
    if (lua_getfield(L, resp, "Error") == LUA_TTABLE) {
        lua_getfield(L, -1, "Code");
        const char *code = lua_tostring(L, -1);
        if (code && strcmp(code, "InvalidParameterValue.BizTokenExpired") == 0) {
            o->has_verdict = 1; /* the token expired: recorded like its ErrCode */
            o->err_code = EID_ERRCODE_EXPIRED;
        } else {
            luaL_argerror(L, arg, "Error: a failed GetEidResult call carries no result");
        }
        lua_pop(L, 1);
    } else if (!is_absent(L, -1)) {
        luaL_argerror(L, arg, "Error: expected table");
    }
    lua_pop(L, 1);
    o->request_id = field_string(L, resp, "RequestId", arg);
    int t = lua_getfield(L, resp, "Text");
    if (t == LUA_TTABLE) {
        int text = lua_gettop(L);
        lua_getfield(L, text, "ErrCode");
        if (!is_absent(L, -1)) {
            int isnum = 0;
            lua_Integer code = lua_tointegerx(L, -1, &isnum);
            if (!isnum || lua_type(L, -1) != LUA_TNUMBER)
                luaL_argerror(L, arg, "Text.ErrCode: expected integer");
            o->has_verdict = 1;
            o->err_code = (int64_t)code;
        }
        lua_pop(L, 1);
        lua_getfield(L, text, "LivenessDetail");
        if (lua_type(L, -1) == LUA_TTABLE) {
            lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
            if (n > INT32_MAX) luaL_argerror(L, arg, "Text.LivenessDetail: too long");
            o->attempts = (int32_t)n;
            for (lua_Integer i = 1; i <= n; i++) {
                if (lua_rawgeti(L, -1, i) != LUA_TTABLE)
                    luaL_argerror(L, arg, "Text.LivenessDetail: expected a list of objects");
                lua_getfield(L, -1, "IsNeedCharge");
                if (lua_toboolean(L, -1) && lua_type(L, -1) == LUA_TBOOLEAN) o->billable++;
                lua_pop(L, 2);
            }
        } else if (!is_absent(L, -1)) {
            luaL_argerror(L, arg, "Text.LivenessDetail: expected array");
        }
        lua_pop(L, 1);
    } else if (!is_absent(L, -1)) {
        luaL_argerror(L, arg, "Text: expected table");
    }
    lua_pop(L, 1);
}

/* ledger:record(token, response [, payload]) */
static int l_record(lua_State *L) {
    lledger *ll = check_ledger(L, 1);
    const char *token = check_cstring(L, 2);
    const char *payload = NULL;
    size_t payload_len = 0;
    if (!lua_isnoneornil(L, 4)) {
        payload = luaL_checklstring(L, 4, &payload_len);
    } else {
        lua_settop(L, 3);
        if (lua_getiuservalue(L, 1, 2) == LUA_TFUNCTION) {
            /* Opened with payload_encoder (keep_payloads): store every
             * response. Called before any ledger work, so an error here
             * changes nothing. The result stays at index 4. */
            lua_pushvalue(L, 3);
            lua_call(L, 1, 1);
            if (lua_type(L, 4) != LUA_TSTRING)
                return luaL_error(L, "payload_encoder must return a string, got %s",
                                  luaL_typename(L, 4));
            payload = lua_tolstring(L, 4, &payload_len);
        }
    }
    eid_ledger_outcome o;
    read_outcome(L, 3, &o);
    o.payload = payload;
    o.payload_len = payload_len;
    eid_ledger_entry r;
    eid_error err = {0};
    eid_status st = eid_ledger_record(ll->l, token, &o, &r, &err);
    if (st) {
        int arg = strcmp(err.field, "payload") == 0 ? 4 : strcmp(err.field, "token") == 0 ? 2 : 3;
        return fail(L, st, &err, arg, 1);
    }
    push_record(L, &r);
    return 1;
}

static int push_list(lua_State *L, const eid_ledger_entry *recs, size_t n, int t, int *count) {
    for (size_t i = 0; i < n; i++) {
        push_record(L, &recs[i]);
        lua_rawseti(L, t, ++*count);
    }
    return 1;
}

/* ledger:due(limit) -> {record...} */
static int l_due(lua_State *L) {
    lledger *ll = check_ledger(L, 1);
    lua_Integer limit = luaL_optinteger(L, 2, 100);
    luaL_argcheck(L, limit >= 1 && limit <= 100000, 2, "limit must be 1..100000");
    /* Buffers are userdata, so an error while pushing leaks nothing. */
    eid_ledger_entry *recs = lua_newuserdatauv(L, sizeof *recs * (size_t)limit, 0);
    size_t n = 0;
    eid_error err = {0};
    eid_status st = eid_ledger_due(ll->l, recs, (size_t)limit, &n, &err);
    if (st) return fail(L, st, &err, 2, 0);
    lua_createtable(L, (int)n, 0);
    int count = 0;
    push_list(L, recs, n, lua_gettop(L), &count);
    return 1;
}

/* ledger:export([{from = t0, to = t1}]) -> {record...}, created in
 * [from, to). As in C, an end that is absent or 0 is open: no table at all
 * exports every token. eid_ledger_export refuses from > to. */
static int l_export(lua_State *L) {
    lledger *ll = check_ledger(L, 1);
    int64_t from = 0, to = 0;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        from = field_integer(L, 2, "from", 2);
        to = field_integer(L, 2, "to", 2);
    }
    eid_ledger_entry *page = lua_newuserdatauv(L, sizeof *page * PAGE, 0);
    lua_newtable(L);
    int t = lua_gettop(L), count = 0;
    int64_t after = 0;
    char last[EID_LEDGER_TOKEN_MAX + 1] = "";
    size_t n;
    do {
        eid_error err = {0};
        eid_status st = eid_ledger_export(ll->l, from, to, after, last, page, PAGE, &n, &err);
        if (st) return fail(L, st, &err, 2, 0);
        push_list(L, page, n, t, &count);
        if (n) {
            after = page[n - 1].created_at;
            memcpy(last, page[n - 1].token, sizeof last);
        }
    } while (n == PAGE);
    return 1;
}

/* ledger:expire([now]) -> {expired = n, abandoned = n} */
static int l_expire(lua_State *L) {
    lledger *ll = check_ledger(L, 1);
    lua_Integer now = luaL_optinteger(L, 2, 0);
    luaL_argcheck(L, now >= 0 && now <= EID_TIMESTAMP_MAX, 2, "now: out of range");
    uint64_t e = 0, a = 0;
    eid_error err = {0};
    eid_status st = eid_ledger_expire(ll->l, (int64_t)now, &e, &a, &err);
    if (st) return fail(L, st, &err, 2, 0);
    lua_createtable(L, 0, 2);
    set_int(L, "expired", (int64_t)e);
    set_int(L, "abandoned", (int64_t)a);
    return 1;
}

static int l_stats(lua_State *L) {
    lledger *ll = check_ledger(L, 1);
    eid_ledger_counts s;
    eid_error err = {0};
    eid_status st = eid_ledger_stats(ll->l, &s, &err);
    if (st) return fail(L, st, &err, 1, 0);
    lua_createtable(L, 0, EID_LEDGER_STATES + 3);
    uint64_t total = 0;
    for (int i = 0; i < EID_LEDGER_STATES; i++) {
        set_int(L, eid_ledger_state_name((eid_ledger_state)i), (int64_t)s.count[i]);
        total += s.count[i];
    }
    set_int(L, "total", (int64_t)total);
    set_int(L, "billable", (int64_t)s.billable);
    set_int(L, "due", (int64_t)s.due);
    return 1;
}

static int l_payload(lua_State *L) {
    lledger *ll = check_ledger(L, 1);
    const char *token = check_cstring(L, 2);
    size_t len = 0;
    eid_error err = {0};
    eid_status st = eid_ledger_payload(ll->l, token, NULL, 0, &len, &err);
    if (st != EID_E_BUFFER_TOO_SMALL && st != EID_OK) return fail(L, st, &err, 2, 1);
    luaL_Buffer b;
    char *buf = luaL_buffinitsize(L, &b, len);
    st = eid_ledger_payload(ll->l, token, buf, len, &len, &err);
    if (st) return fail(L, st, &err, 2, 1);
    luaL_pushresultsize(&b, len);
    return 1;
}

/* ledger:take(key, rate, burst [, now_ms]) -> true | false, retry_after_s
 * | nil, err: one token from the bucket key (eid_ledger_take); now_ms 0 or
 * absent: the ledger's clock. */
static int l_take(lua_State *L) {
    lledger *ll = check_ledger(L, 1);
    const char *key = check_cstring(L, 2);
    double rate = (double)luaL_checknumber(L, 3);
    double burst = (double)luaL_checknumber(L, 4);
    lua_Integer now = luaL_optinteger(L, 5, 0);
    luaL_argcheck(L, now >= 0 && now <= EID_TIMESTAMP_MAX * 1000, 5, "now_ms: out of range");
    int allowed = 0;
    double retry = 0;
    eid_error err = {0};
    eid_status st = eid_ledger_take(ll->l, key, rate, burst, (int64_t)now, &allowed, &retry, &err);
    if (st) {
        int arg = strcmp(err.field, "rate") == 0 ? 3 : strcmp(err.field, "burst") == 0 ? 4 : 2;
        return fail(L, st, &err, arg, 0);
    }
    lua_pushboolean(L, allowed);
    if (allowed) return 1;
    lua_pushnumber(L, (lua_Number)retry);
    return 2;
}

static int l_backend(lua_State *L) {
    lledger *ll = check_ledger(L, 1);
    lua_pushstring(L, eid_ledger_backend(ll->l));
    return 1;
}

static int l_close(lua_State *L) {
    lledger *ll = luaL_checkudata(L, 1, EIDKIT_LEDGER_MT);
    eid_ledger_free(ll->l);
    ll->l = NULL;
    return 0;
}

static int l_tostring(lua_State *L) {
    lledger *ll = luaL_checkudata(L, 1, EIDKIT_LEDGER_MT);
    if (ll->l)
        lua_pushfstring(L, "eidkit.Ledger (%s, %p)", eid_ledger_backend(ll->l), (void *)ll);
    else
        lua_pushliteral(L, "eidkit.Ledger (closed)");
    return 1;
}

/* core.ledger_open(url [, {token_ttl=, result_window=, retention=,
 *   timeout_ms=, payload_key=, payload_encoder=, clock=}]) -> ledger | nil, err
 * payload_encoder(response) -> string: with it, record stores every
 * response it is given (encrypted) when no payload is passed. */
static int l_open(lua_State *L) {
    const char *url = check_cstring(L, 1);
    eid_ledger_options o = {0};
    int has_clock = 0, has_encoder = 0;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        o.token_ttl = field_integer(L, 2, "token_ttl", 2);
        o.result_window = field_integer(L, 2, "result_window", 2);
        o.retention = field_integer(L, 2, "retention", 2);
        int64_t t = field_integer(L, 2, "timeout_ms", 2);
        luaL_argcheck(L, t <= 600000, 2, "timeout_ms: must be 1..600000");
        o.timeout_ms = (int)t;
        if (lua_getfield(L, 2, "payload_key") != LUA_TNIL) {
            size_t len;
            if (lua_type(L, -1) != LUA_TSTRING)
                luaL_argerror(L, 2, "payload_key: expected a 32-byte string");
            o.payload_key = (const unsigned char *)lua_tolstring(L, -1, &len);
            o.payload_key_len = len;
        }
        if (lua_getfield(L, 2, "clock") != LUA_TNIL) {
            luaL_argcheck(L, lua_isfunction(L, -1), 2, "clock: expected function");
            has_clock = 1;
        }
        lua_pop(L, 1); /* the clock; payload_key stays until the ledger is open */
        if (lua_getfield(L, 2, "payload_encoder") != LUA_TNIL) {
            luaL_argcheck(L, lua_isfunction(L, -1), 2, "payload_encoder: expected function");
            luaL_argcheck(L, o.payload_key != NULL, 2, "payload_encoder: needs payload_key");
            has_encoder = 1;
        }
        lua_pop(L, 1);
    }
    /* Uservalues: 1 the clock, 2 the payload encoder. */
    lledger *ll = lua_newuserdatauv(L, sizeof *ll, 2);
    ll->l = NULL;
    ll->now = 0;
    luaL_setmetatable(L, EIDKIT_LEDGER_MT);
    if (has_clock) {
        lua_getfield(L, 2, "clock");
        lua_setiuservalue(L, -2, 1);
        lua_getfield(L, 2, "clock");
        lua_call(L, 0, 1);
        int isnum = 0;
        ll->now = (int64_t)lua_tointegerx(L, -1, &isnum);
        lua_pop(L, 1);
        if (!isnum) luaL_argerror(L, 2, "clock: must return integer Unix seconds");
        o.clock.now = lua_clock;
        o.clock.ud = ll;
    }
    if (has_encoder) {
        lua_getfield(L, 2, "payload_encoder");
        lua_setiuservalue(L, -2, 2);
    }
    eid_error err = {0};
    eid_status st = eid_ledger_open(url, &o, &ll->l, &err);
    if (st == EID_E_INVALID_ARG)
        return luaL_argerror(L, strcmp(err.field, "url") == 0 ? 1 : 2, err.message);
    if (st) return fail(L, st, &err, 1, 0);
    return 1;
}

void eidkit_open_ledger(lua_State *L) {
    static const luaL_Reg methods[] = {
        {"issue", l_issue}, {"claim", l_claim},     {"record", l_record},   {"consume", l_consume},
        {"get", l_get},     {"due", l_due},         {"export", l_export},   {"expire", l_expire},
        {"stats", l_stats}, {"payload", l_payload}, {"backend", l_backend}, {"close", l_close},
        {"take", l_take},   {NULL, NULL},
    };
    static const luaL_Reg meta[] = {
        {"__gc", l_close},
        {"__close", l_close},
        {"__tostring", l_tostring},
        {NULL, NULL},
    };
    /* The object the eidkit.ledger class wraps (docs/internals/classes.md). */
    eidkit_new_class(L, EIDKIT_LEDGER_MT, meta, methods);
    lua_pop(L, 1);
    lua_pushcfunction(L, l_open);
    lua_setfield(L, -2, "ledger_open");
}
