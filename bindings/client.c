/* eidkit.Client: the C API client (eidkit/client.h) for Lua. The pure-Lua
 * layer (lua/eidkit/client.lua) validates parameters, encodes and decodes
 * JSON and resolves credentials; this file moves bytes and results.
 *
 * Callbacks (logger, retry policy) are Lua functions called from inside
 * eid_client_call / eid_client_perform. They run under lua_pcall; an error is
 * stashed in the userdata, later callbacks are skipped (the policy answers
 * "stop"), and the error is re-raised once the C call has returned, so a Lua
 * error never unwinds through libcurl or the client's own state.
 *
 * Besides the blocking call and batch, a host with its own event loop
 * submits (c:submit), waits on c:fd() for at most c:timeout() ms, drives
 * (c:perform(0)) and collects (c:next()); eidkit serve does, so a request
 * waiting on Tencent never holds up another. */
#include "eidkit/client.h"
#include "eidkit/retry.h"

#include "client_thread.h"
#include "eidkit_lua.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EIDKIT_CLIENT_MT "eidkit.Client"

#define UV_LOGGER 1
#define UV_RETRY  2
#define UV_ERROR  3
#define UV_COUNT  3

typedef struct lclient {
    eid_client *c; /* NULL once closed */
    lua_State *L;  /* set while a call runs */
    int self;      /* stack index of the userdata while a call runs */
    int failed;    /* a callback raised; the error is in UV_ERROR */
    int busy;
    lua_Integer last_id; /* c:submit ids: 1, 2, ... (the call's ud) */
    lua_Integer pending; /* submitted, not yet taken by c:next */
    /* thread = true: the client runs on t's thread (bindings/client_thread.c);
     * finished calls taken from it wait here for c:next, oldest first. */
    eidkit_transport *t;
    eidkit_titem *ready_head, *ready_tail;
    lua_Integer n_ready;
} lclient;

/* Around the Lua thread's own uses of the eid_client. */
static void lock_client(lclient *lc) {
    if (lc->t) eidkit_transport_lock(lc->t);
}
static void unlock_client(lclient *lc) {
    if (lc->t) eidkit_transport_unlock(lc->t);
}

static lclient *check_client(lua_State *L, int idx) {
    lclient *lc = luaL_checkudata(L, idx, EIDKIT_CLIENT_MT);
    if (lc->c == NULL) luaL_error(L, "attempt to use a closed eidkit.Client");
    if (lc->busy) luaL_error(L, "eidkit.Client is busy (called from one of its own callbacks)");
    return lc;
}

/* Run the function on top with nargs arguments under pcall; on error stash
 * it. Returns 1 on success with nres results pushed. */
static int protected(lclient *lc, int nargs, int nres) {
    lua_State *L = lc->L;
    if (lua_pcall(L, nargs, nres, 0) == LUA_OK) return 1;
    lc->failed = 1;
    lua_setiuservalue(L, lc->self, UV_ERROR);
    return 0;
}

static void set_str(lua_State *L, const char *k, const char *v) {
    lua_pushstring(L, v);
    lua_setfield(L, -2, k);
}
static void set_int(lua_State *L, const char *k, lua_Integer v) {
    lua_pushinteger(L, v);
    lua_setfield(L, -2, k);
}
static void set_num(lua_State *L, const char *k, lua_Number v) {
    lua_pushnumber(L, v);
    lua_setfield(L, -2, k);
}

/* A pushed table of the event; runs in protected mode (via lua_pcall). */
static int push_event(lua_State *L) {
    const eid_client_event *ev = lua_touserdata(L, 1);
    lua_createtable(L, 0, 11);
    set_str(L, "event", ev->event);
    set_str(L, "action", ev->action);
    set_str(L, "trace_id", ev->trace_id);
    set_int(L, "attempts", ev->attempts);
    set_num(L, "duration", ev->duration);
    if (ev->code[0]) set_str(L, "code", ev->code);
    if (ev->http_status) set_int(L, "http_status", ev->http_status);
    if (ev->request_id[0]) set_str(L, "request_id", ev->request_id);
    if (ev->retry_delay >= 0) set_num(L, "retry_delay", ev->retry_delay);
    set_int(L, "skew", (lua_Integer)ev->skew);
    return 1;
}

static void on_log(void *ud, const eid_client_event *ev) {
    lclient *lc = ud;
    lua_State *L = lc->L;
    if (lc->failed || L == NULL) return;
    lua_getiuservalue(L, lc->self, UV_LOGGER);
    lua_pushstring(L, ev->level);
    /* Build the event table under pcall too: a memory error must not escape. */
    lua_pushcfunction(L, push_event);
    lua_pushlightuserdata(L, (void *)ev);
    if (!protected(lc, 1, 1)) {
        lua_pop(L, 2);
        return;
    }
    protected(lc, 2, 0);
}

static int push_retry_info(lua_State *L) {
    const eid_retry_info *in = lua_touserdata(L, 1);
    lua_createtable(L, 0, 8);
    set_str(L, "code", in->code);
    set_str(L, "action", in->action);
    set_int(L, "http_status", in->http_status);
    set_int(L, "attempts", in->attempts);
    lua_pushboolean(L, in->retryable);
    lua_setfield(L, -2, "retryable");
    lua_pushboolean(L, in->sent);
    lua_setfield(L, -2, "sent");
    if (in->default_delay >= 0) set_num(L, "default_delay", in->default_delay);
    set_num(L, "remaining", in->remaining);
    luaL_setmetatable(L, EIDKIT_ERROR_MT);
    return 1;
}

static double on_retry(void *ud, const eid_retry_info *info) {
    lclient *lc = ud;
    lua_State *L = lc->L;
    if (lc->failed || L == NULL) return -1;
    lua_getiuservalue(L, lc->self, UV_RETRY);
    lua_pushcfunction(L, push_retry_info);
    lua_pushlightuserdata(L, (void *)info);
    if (!protected(lc, 1, 1)) {
        lua_pop(L, 1);
        return -1;
    }
    lua_pushinteger(L, info->attempts);
    if (!protected(lc, 2, 1)) return -1;
    double d = -1;
    if (lua_type(L, -1) == LUA_TNUMBER) {
        d = lua_tonumber(L, -1);
        if (!(d >= 0 && d <= 3600)) d = -1;
    } else if (!lua_isnil(L, -1) && !(lua_isboolean(L, -1) && !lua_toboolean(L, -1))) {
        lua_pushfstring(L, "retry policy must return seconds (number) or nil, got %s",
                        luaL_typename(L, -1));
        lc->failed = 1;
        lua_setiuservalue(L, lc->self, UV_ERROR);
    }
    lua_pop(L, 1);
    return d;
}

/* After a C call: re-raise a callback's error. */
static void relay(lclient *lc) {
    lua_State *L = lc->L;
    lc->L = NULL;
    lc->busy = 0;
    if (!lc->failed) return;
    lc->failed = 0;
    lua_getiuservalue(L, lc->self, UV_ERROR);
    lua_pushnil(L);
    lua_setiuservalue(L, lc->self, UV_ERROR);
    lua_error(L);
}

static void enter(lclient *lc, lua_State *L, int self) {
    lc->L = L;
    lc->self = lua_absindex(L, self);
    lc->failed = 0;
    lc->busy = 1;
}

/* ------------------------------------------------------------ options */

/* The range in the message, "0.001..3600 s": the same words as
 * eidkit.openresty.client's for the options both take from eid_client_option. */
static int out_of_range(lua_State *L, const char *k, double lo, double hi, const char *unit) {
    char range[96];
    snprintf(range, sizeof range, "%.15g..%.15g%s%s", lo, hi, *unit ? " " : "", unit);
    return luaL_error(L, "bad option '%s' (out of range: %s)", k, range);
}

static double opt_seconds(lua_State *L, int t, const char *k, double lo, double hi) {
    double v = 0;
    int ty = lua_getfield(L, t, k);
    if (ty != LUA_TNIL) {
        if (ty != LUA_TNUMBER)
            luaL_error(L, "bad option '%s' (expected seconds, got %s)", k, lua_typename(L, ty));
        v = lua_tonumber(L, -1);
        if (!(v >= lo && v <= hi)) out_of_range(L, k, lo, hi, "s");
    }
    lua_pop(L, 1);
    return v;
}

static lua_Integer opt_int(lua_State *L, int t, const char *k, lua_Integer lo, lua_Integer hi,
                           const char *unit) {
    lua_Integer v = 0;
    int ty = lua_getfield(L, t, k);
    if (ty != LUA_TNIL) {
        int isint = 0;
        v = lua_tointegerx(L, -1, &isint);
        if (ty != LUA_TNUMBER || !isint)
            luaL_error(L, "bad option '%s' (expected integer, got %s)", k, lua_typename(L, ty));
        if (v < lo || v > hi) out_of_range(L, k, (double)lo, (double)hi, unit);
    }
    lua_pop(L, 1);
    return v;
}

/* An option both clients take, with the unit and range of libeidkit's
 * table (eid_client_option); 0 when not given, so eid_client_new applies the
 * table's default. */
static double opt_shared(lua_State *L, int t, const char *k) {
    const eid_client_option_spec *s;
    for (size_t i = 0; (s = eid_client_option(i)) != NULL; i++)
        if (strcmp(s->name, k) == 0) break;
    if (s == NULL) luaL_error(L, "eidkit: option '%s' is not in libeidkit's table", k);
    if (strcmp(s->unit, "bytes") == 0)
        return (double)opt_int(L, t, k, (lua_Integer)s->min, (lua_Integer)s->max, s->unit);
    return opt_seconds(L, t, k, s->min, s->max);
}

/* A string option, left on the stack (so the pointer stays valid). */
static const char *opt_str(lua_State *L, int t, const char *k) {
    int ty = lua_getfield(L, t, k);
    if (ty == LUA_TNIL) return NULL;
    if (ty != LUA_TSTRING)
        luaL_error(L, "bad option '%s' (expected string, got %s)", k, lua_typename(L, ty));
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    if (strlen(s) != len) luaL_error(L, "bad option '%s' (contains a NUL byte)", k);
    return s;
}

static const char *const known_options[] = {
    "endpoint",        "service",     "version",      "region",        "language",
    "connect_timeout", "timeout",     "deadline",     "proxy",         "ca_file",
    "verify_tls",      "headers",     "max_response", "max_in_flight", "max_attempts",
    "backoff_base",    "backoff_cap", "retry_unsafe", "retry",         "logger",
    "thread",          NULL,
};

/* core.client_new(opts) -> eidkit.Client; misuse raises naming the option. */
static int l_client_new(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    lua_pushnil(L);
    while (lua_next(L, 1) != 0) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING) return luaL_error(L, "option names must be strings");
        const char *k = lua_tostring(L, -1);
        int ok = 0;
        for (const char *const *o = known_options; *o && !ok; o++)
            ok = strcmp(*o, k) == 0;
        if (!ok) return luaL_error(L, "unknown option '%s'", k);
    }
    eid_client_options o;
    memset(&o, 0, sizeof o);
    o.endpoint = opt_str(L, 1, "endpoint");
    o.service = opt_str(L, 1, "service");
    o.version = opt_str(L, 1, "version");
    o.region = opt_str(L, 1, "region");
    o.language = opt_str(L, 1, "language");
    o.proxy = opt_str(L, 1, "proxy");
    o.ca_file = opt_str(L, 1, "ca_file");
    o.connect_timeout_ms = (long)(opt_shared(L, 1, "connect_timeout") * 1000);
    o.timeout_ms = (long)(opt_shared(L, 1, "timeout") * 1000);
    o.deadline_ms = (long)(opt_shared(L, 1, "deadline") * 1000);
    o.max_response = (size_t)opt_shared(L, 1, "max_response");
    o.backoff_base_ms =
        (long)(opt_seconds(L, 1, "backoff_base", EID_RETRY_BACKOFF_MIN, EID_RETRY_BACKOFF_LIMIT) *
               1000);
    o.backoff_cap_ms =
        (long)(opt_seconds(L, 1, "backoff_cap", EID_RETRY_BACKOFF_MIN, EID_RETRY_BACKOFF_LIMIT) *
               1000);
    o.max_in_flight = (size_t)opt_int(L, 1, "max_in_flight", 1, 100000, "");
    o.max_attempts = (int)opt_int(L, 1, "max_attempts", 1, EID_RETRY_MAX_ATTEMPTS_LIMIT, "");
    lua_getfield(L, 1, "verify_tls");
    o.insecure = lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1);
    lua_getfield(L, 1, "retry_unsafe");
    o.retry_unsafe = lua_toboolean(L, -1);
    o.defer_parse = 1; /* lua/eidkit/client.lua decodes every Response with lua-cjson */
    lua_pop(L, 2);
    /* headers: a list of "Name: value" strings. */
    const char *hdrs[64];
    if (lua_getfield(L, 1, "headers") == LUA_TTABLE) {
        lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
        if (n > 64) return luaL_error(L, "bad option 'headers' (more than 64)");
        for (lua_Integer i = 1; i <= n; i++) {
            if (lua_rawgeti(L, -1, i) != LUA_TSTRING)
                return luaL_error(L, "bad option 'headers' (entry %d is not a string)", (int)i);
            hdrs[i - 1] = lua_tostring(L, -1);
            lua_pop(L, 1); /* kept alive by the table */
        }
        o.headers = hdrs;
        o.header_count = (size_t)n;
    } else if (!lua_isnil(L, -1)) {
        return luaL_error(L, "bad option 'headers' (expected table)");
    }
    int has_logger = lua_getfield(L, 1, "logger") == LUA_TFUNCTION;
    int has_retry = lua_getfield(L, 1, "retry") == LUA_TFUNCTION;
    if (!has_logger && !lua_isnil(L, -2))
        return luaL_error(L, "bad option 'logger' (expected function)");
    if (!has_retry && !lua_isnil(L, -1))
        return luaL_error(L, "bad option 'retry' (expected function)");
    int ty = lua_getfield(L, 1, "thread");
    if (ty != LUA_TNIL && ty != LUA_TBOOLEAN)
        return luaL_error(L, "bad option 'thread' (expected boolean, got %s)", lua_typename(L, ty));
    int threaded = lua_toboolean(L, -1);
    lua_pop(L, 1);
    /* A Lua retry function would have to answer from inside libcurl's
     * completion handling, on the transport thread, where no Lua runs. */
    if (threaded && has_retry)
        return luaL_error(L, "bad option 'retry' (a function cannot be used with thread = true; "
                             "give a table of the default policy's knobs)");

    lclient *lc = lua_newuserdatauv(L, sizeof *lc, UV_COUNT);
    memset(lc, 0, sizeof *lc);
    luaL_setmetatable(L, EIDKIT_CLIENT_MT);
    lua_pushvalue(L, -3);
    lua_setiuservalue(L, -2, UV_LOGGER);
    lua_pushvalue(L, -2);
    lua_setiuservalue(L, -2, UV_RETRY);
    if (threaded) {
        /* Owned by the userdata from here, so __gc frees it on any error. */
        lc->t = eidkit_transport_new();
        if (lc->t == NULL)
            return eidkit_push_fail(L, "internal", "cannot make the transport thread's queues");
    }
    if (has_logger) {
        o.logger = threaded ? eidkit_transport_logger() : on_log;
        o.logger_ud = threaded ? (void *)lc->t : (void *)lc;
    }
    if (has_retry) {
        o.retry = on_retry;
        o.retry_ud = lc;
    }
    eid_error err = {0};
    eid_status st = eid_client_new(&o, &lc->c, &err);
    if (st == EID_E_INVALID_ARG)
        return luaL_error(L, "bad option '%s' (%s)", err.field, err.message);
    if (st != EID_OK) return eidkit_push_status(L, st, err.message);
    if (lc->t && eidkit_transport_start(lc->t, lc->c) != 0) {
        eidkit_transport_free(lc->t);
        lc->t = NULL;
        eid_client_free(lc->c);
        lc->c = NULL;
        return eidkit_push_fail(L, "internal", "cannot start the transport thread");
    }
    return 1;
}

/* c:set_credentials(secret_id, secret_key [, token]) */
static int l_set_credentials(lua_State *L) {
    lclient *lc = check_client(L, 1);
    size_t klen;
    const char *id = luaL_checkstring(L, 2);
    const char *key = luaL_checklstring(L, 3, &klen);
    const char *tok = luaL_optstring(L, 4, NULL);
    eid_error err = {0};
    lock_client(lc);
    eid_status st = eid_client_set_credentials(lc->c, id, key, klen, tok, &err);
    unlock_client(lc);
    if (st != EID_OK) return luaL_error(L, "bad credentials (%s)", err.message);
    lua_pushboolean(L, 1);
    return 1;
}

/* The error table of a failed result (no secrets: the C result has none). */
static void push_err(lua_State *L, const eid_result *r) {
    lua_createtable(L, 0, 10);
    set_str(L, "code", r->code);
    set_str(L, "message", r->message);
    if (r->request_id[0]) set_str(L, "request_id", r->request_id);
    set_str(L, "trace_id", r->trace_id);
    if (r->http_status) set_int(L, "http_status", r->http_status);
    set_int(L, "attempts", r->attempts);
    lua_pushboolean(L, r->retryable);
    lua_setfield(L, -2, "retryable");
    lua_pushboolean(L, r->sent);
    lua_setfield(L, -2, "sent");
    set_num(L, "elapsed", r->elapsed);
    if (r->received) {
        lua_pushlstring(L, r->received, r->received_len);
        lua_setfield(L, -2, "received");
    }
    luaL_setmetatable(L, EIDKIT_ERROR_MT);
}

/* Push (response_text, attempts) or (nil, err). Frees r. */
static int push_result(lua_State *L, eid_result *r) {
    int n;
    if (r->status == EID_OK) {
        lua_pushlstring(L, r->response, r->response_len);
        lua_pushinteger(L, r->attempts);
        n = 2;
    } else {
        lua_pushnil(L);
        push_err(L, r);
        n = 2;
    }
    eid_result_free(r);
    return n;
}

/* The error of a call whose result the transport thread had no memory for. */
static void push_nomem(lua_State *L) {
    eid_result fake;
    memset(&fake, 0, sizeof fake);
    fake.status = EID_E_NOMEM;
    snprintf(fake.code, sizeof fake.code, "%s", eid_status_code(EID_E_NOMEM));
    snprintf(fake.message, sizeof fake.message, "out of memory for the call's result");
    push_err(L, &fake);
}

/* push_result, or nil and push_nomem's error for a NULL result. */
static int push_result_of(lua_State *L, eid_result *r) {
    if (r) return push_result(L, r);
    lua_pushnil(L);
    push_nomem(L);
    return 2;
}

/* Threaded: take what the transport thread has finished, in order: each
 * logger event goes to the logger now (the caller is between enter and
 * relay), each result onto the ready list for c:next. */
static void take_items(lclient *lc) {
    eidkit_titem *it = eidkit_transport_take(lc->t);
    while (it) {
        eidkit_titem *nx = it->next;
        if (it->is_event) {
            on_log(lc, &it->ev);
            free(it);
        } else {
            eidkit_titem_append(&lc->ready_head, &lc->ready_tail, it);
            lc->n_ready++;
        }
        it = nx;
    }
}

/* Threaded: unlink the ready item with this id (any, for id 0), or NULL. */
static eidkit_titem *unready(lclient *lc, lua_Integer id) {
    for (eidkit_titem **p = &lc->ready_head, *prev = NULL; *p; prev = *p, p = &(*p)->next) {
        eidkit_titem *it = *p;
        if (id != 0 && it->id != id) continue;
        *p = it->next;
        if (lc->ready_tail == it) lc->ready_tail = prev;
        lc->n_ready--;
        lc->pending--;
        it->next = NULL;
        return it;
    }
    return NULL;
}

static const char *check_action(lua_State *L, int idx) {
    size_t len;
    const char *a = luaL_checklstring(L, idx, &len);
    luaL_argcheck(L, len > 0 && strlen(a) == len, idx, "action: expected a non-empty name");
    return a;
}

/* c:call(action, body) -> response_json, attempts | nil, err */
static int l_call(lua_State *L) {
    lclient *lc = check_client(L, 1);
    const char *action = check_action(L, 2);
    size_t blen;
    const char *body = luaL_checklstring(L, 3, &blen);
    eid_result *r = NULL;
    eid_error err = {0};
    if (lc->t) {
        /* Submit and wait for this call; the others' results stay ready. */
        lua_Integer id = lc->last_id + 1;
        eid_status st = eidkit_transport_submit(lc->t, action, body, blen, id, &err);
        if (st == EID_E_INVALID_ARG) return luaL_error(L, "%s", err.message);
        if (st != EID_OK) return eidkit_push_status(L, st, err.message);
        lc->last_id = id;
        lc->pending++;
        enter(lc, L, 1);
        eidkit_titem *it;
        while ((it = unready(lc, id)) == NULL) {
            eidkit_transport_wait(lc->t, 1000);
            take_items(lc);
        }
        r = it->result;
        free(it);
        if (lc->failed) eid_result_free(r);
        relay(lc);
        return push_result_of(L, r);
    }
    enter(lc, L, 1);
    eid_status st = eid_client_call(lc->c, action, body, blen, &r, &err);
    if (r == NULL) {
        relay(lc);
        if (st == EID_E_INVALID_ARG) return luaL_error(L, "%s", err.message);
        return eidkit_push_status(L, st, err.message);
    }
    if (lc->failed) eid_result_free(r);
    relay(lc); /* raises a callback's error */
    return push_result(L, r);
}

/* out[i] = the response text, or the error table (push_nomem's for a NULL
 * result); frees r. */
static void set_batch_result(lua_State *L, int out, lua_Integer i, eid_result *r) {
    if (r == NULL)
        push_nomem(L);
    else if (r->status == EID_OK)
        lua_pushlstring(L, r->response, r->response_len);
    else
        push_err(L, r);
    eid_result_free(r);
    lua_rawseti(L, out, i);
}

/* c:batch(list) with list[i] = {action, body}: runs all at once and returns
 * a list whose [i] is the response JSON text or an error table. */
static int l_batch(lua_State *L) {
    lclient *lc = check_client(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    if (lc->pending > 0) /* batch would take their results */
        return luaL_error(L, "eidkit.Client: batch while submitted calls are pending");
    lua_Integer n = (lua_Integer)lua_rawlen(L, 2);
    for (lua_Integer i = 1; i <= n; i++) {
        if (lua_rawgeti(L, 2, i) != LUA_TTABLE)
            return luaL_error(L, "bad argument #1 to 'batch' (entry %d: expected {action, body})",
                              (int)i);
        if (lua_rawgeti(L, -1, 1) != LUA_TSTRING || lua_rawgeti(L, -2, 2) != LUA_TSTRING)
            return luaL_error(L, "bad argument #1 to 'batch' (entry %d: expected {action, body})",
                              (int)i);
        lua_pop(L, 3);
    }
    lua_createtable(L, (int)n, 0);
    int out = lua_gettop(L);
    enter(lc, L, 1);
    lua_Integer submitted = 0;
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, 2, i);
        lua_rawgeti(L, -1, 1);
        lua_rawgeti(L, -2, 2);
        size_t blen;
        const char *action = lua_tostring(L, -2);
        const char *body = lua_tolstring(L, -1, &blen);
        eid_error err = {0};
        eid_status st;
        if (lc->t) {
            st = eidkit_transport_submit(lc->t, action, body, blen, lc->last_id + i, &err);
        } else {
            st = eid_client_submit(lc->c, action, body, blen, (void *)(intptr_t)i, &err);
        }
        lua_pop(L, 3);
        if (st != EID_OK) {
            eid_result fake;
            memset(&fake, 0, sizeof fake);
            fake.status = st;
            snprintf(fake.code, sizeof fake.code, "%s", eid_status_code(st));
            snprintf(fake.message, sizeof fake.message, "%s", err.message);
            push_err(L, &fake);
            lua_rawseti(L, out, i);
        } else {
            submitted++;
        }
    }
    lua_Integer done = 0;
    if (lc->t) {
        lua_Integer base = lc->last_id;
        lc->last_id += n;
        lc->pending += submitted;
        while (done < submitted) {
            eidkit_titem *it = unready(lc, 0);
            if (it == NULL) {
                eidkit_transport_wait(lc->t, 1000);
                take_items(lc);
                continue;
            }
            eid_result *r = it->result;
            lua_Integer i = it->id - base;
            free(it);
            set_batch_result(L, out, i, r);
            done++;
        }
    }
    while (done < submitted) {
        eid_client_perform(lc->c, 1000);
        void *ud;
        eid_result *r;
        while (eid_client_next(lc->c, &ud, &r)) {
            set_batch_result(L, out, (lua_Integer)(intptr_t)ud, r);
            done++;
        }
    }
    relay(lc);
    lua_settop(L, out);
    return 1;
}

/* c:submit(action, body) -> id: start a call and return at once; its
 * outcome comes from c:next. */
static int l_submit(lua_State *L) {
    lclient *lc = check_client(L, 1);
    const char *action = check_action(L, 2);
    size_t blen;
    const char *body = luaL_checklstring(L, 3, &blen);
    eid_error err = {0};
    lua_Integer id = lc->last_id + 1;
    eid_status st;
    if (lc->t) {
        st = eidkit_transport_submit(lc->t, action, body, blen, id, &err);
    } else {
        st = eid_client_submit(lc->c, action, body, blen, (void *)(intptr_t)id, &err);
    }
    if (st == EID_E_INVALID_ARG) return luaL_error(L, "%s", err.message);
    if (st != EID_OK) return eidkit_push_status(L, st, err.message);
    lc->last_id = id;
    lc->pending++;
    lua_pushinteger(L, id);
    return 1;
}

/* c:perform([timeout_ms]) -> calls still unfinished: drive the submitted
 * calls (0, the default: handle what is ready and return). The logger and
 * the retry policy run here; an error of theirs is raised here. */
static int l_perform(lua_State *L) {
    lclient *lc = check_client(L, 1);
    lua_Integer t = luaL_optinteger(L, 2, 0);
    luaL_argcheck(L, t >= 0 && t <= 86400000, 2, "timeout_ms: expected 0..86400000");
    if (lc->t) {
        if (t > 0 && lc->ready_head == NULL) eidkit_transport_wait(lc->t, (long)t);
        enter(lc, L, 1);
        take_items(lc);
        relay(lc);
        lua_pushinteger(L, lc->pending - lc->n_ready);
        return 1;
    }
    enter(lc, L, 1);
    size_t left = eid_client_perform(lc->c, (long)t);
    relay(lc);
    lua_pushinteger(L, (lua_Integer)left);
    return 1;
}

/* c:next() -> id, response_json, attempts | id, nil, err | nil: one
 * finished submitted call, with what c:call would have returned. */
static int l_next(lua_State *L) {
    lclient *lc = check_client(L, 1);
    if (lc->t) {
        eidkit_titem *it = unready(lc, 0);
        if (it == NULL) {
            lua_pushnil(L);
            return 1;
        }
        lua_pushinteger(L, it->id);
        eid_result *r = it->result;
        free(it);
        return 1 + push_result_of(L, r);
    }
    void *ud;
    eid_result *r;
    if (!eid_client_next(lc->c, &ud, &r)) {
        lua_pushnil(L);
        return 1;
    }
    lc->pending--;
    lua_pushinteger(L, (lua_Integer)(intptr_t)ud);
    return 1 + push_result(L, r);
}

/* c:fd() -> the client's epoll descriptor (readable when a socket is). */
static int l_fd(lua_State *L) {
    lclient *lc = check_client(L, 1);
    lua_pushinteger(L, lc->t ? eidkit_transport_fd(lc->t) : eid_client_fd(lc->c));
    return 1;
}

/* c:timeout() -> ms until c:perform(0) is due anyway; -1: nothing submitted
 * (threaded: the transport thread keeps the timers and the descriptor says
 * when there is something, so 0 while results wait for c:next, else -1). */
static int l_timeout(lua_State *L) {
    lclient *lc = check_client(L, 1);
    if (lc->t) {
        lua_pushinteger(L, lc->ready_head ? 0 : -1);
        return 1;
    }
    lua_pushinteger(L, (lua_Integer)eid_client_timeout(lc->c));
    return 1;
}

static int l_skew(lua_State *L) {
    lclient *lc = check_client(L, 1);
    lock_client(lc);
    int64_t skew = eid_client_skew(lc->c);
    unlock_client(lc);
    lua_pushinteger(L, (lua_Integer)skew);
    return 1;
}

static int l_stats(lua_State *L) {
    lclient *lc = check_client(L, 1);
    uint64_t req, conn;
    lock_client(lc);
    eid_client_stats(lc->c, &req, &conn);
    unlock_client(lc);
    lua_createtable(L, 0, 2);
    set_int(L, "requests", (lua_Integer)req);
    set_int(L, "connects", (lua_Integer)conn);
    return 1;
}

static int l_close(lua_State *L) {
    lclient *lc = luaL_checkudata(L, 1, EIDKIT_CLIENT_MT);
    if (lc->busy)
        return luaL_error(L, "eidkit.Client is busy (called from one of its own callbacks)");
    /* The thread first: it is the client's user until joined. */
    eidkit_transport_free(lc->t);
    lc->t = NULL;
    eidkit_titems_free(lc->ready_head);
    lc->ready_head = lc->ready_tail = NULL;
    lc->n_ready = 0;
    eid_client_free(lc->c);
    lc->c = NULL;
    return 0;
}

static int l_tostring(lua_State *L) {
    lclient *lc = luaL_checkudata(L, 1, EIDKIT_CLIENT_MT);
    lua_pushfstring(L, "eidkit.Client (%s%p)", lc->c ? "" : "closed, ", (void *)lc);
    return 1;
}

/* core.http_get(url, timeout_s [, max_bytes]) and core.http_request(method,
 * url, body|nil, timeout_s [, max_bytes]) -> status, body | nil, err: plain,
 * unsigned, never via a proxy (eid_http_request), for local services such as
 * the metadata service and a simulator's control API. */
static int http_common(lua_State *L, const char *method, int ui) {
    const char *url = luaL_checkstring(L, ui);
    size_t req_len = 0;
    const char *req = luaL_optlstring(L, ui + 1, NULL, &req_len);
    lua_Number t = luaL_checknumber(L, ui + 2);
    lua_Integer max = luaL_optinteger(L, ui + 3, 65536);
    luaL_argcheck(L, t > 0 && t <= 3600, ui + 2, "timeout: expected 0 < seconds <= 3600");
    luaL_argcheck(L, max > 0 && max <= (1 << 26), ui + 3, "max: expected 1..64 MiB");
    char *body = NULL;
    size_t len = 0;
    long status = 0;
    eid_error err = {0};
    eid_status st = eid_http_request(method, url, req, req_len, (long)(t * 1000), (size_t)max,
                                     &body, &len, &status, &err);
    if (st == EID_E_INVALID_ARG)
        return luaL_argerror(L, strcmp(err.field, "method") == 0 ? 1 : ui, err.message);
    if (st != EID_OK) {
        /* err.message is "code: detail" from eid__fail */
        const char *msg = err.message;
        size_t fl = strlen(err.field);
        if (fl && strncmp(msg, err.field, fl) == 0 && msg[fl] == ':') msg += fl + 2;
        return eidkit_push_fail(L, err.field[0] ? err.field : "transport", msg);
    }
    lua_pushinteger(L, status);
    lua_pushlstring(L, body, len);
    free(body);
    return 2;
}

static int l_http_get(lua_State *L) {
    /* (url, timeout, max): no body slot, so shift the arguments by one */
    lua_settop(L, 3);
    lua_pushnil(L);
    lua_insert(L, 2);
    return http_common(L, "GET", 1);
}

static int l_http_request(lua_State *L) {
    const char *method = luaL_checkstring(L, 1);
    return http_common(L, method, 2);
}

/* core.is_transport_code(s) -> boolean (eid_client_is_transport_code). */
static int l_is_transport_code(lua_State *L) {
    size_t len = 0;
    const char *s = lua_type(L, 1) == LUA_TSTRING ? lua_tolstring(L, 1, &len) : NULL;
    lua_pushboolean(L, s && strlen(s) == len && eid_client_is_transport_code(s));
    return 1;
}

static int l_set_skew(lua_State *L) {
    lclient *lc = check_client(L, 1);
    lua_Integer s = luaL_checkinteger(L, 2);
    luaL_argcheck(L, s >= -(INT64_C(1) << 40) && s <= (INT64_C(1) << 40), 2, "skew out of range");
    lock_client(lc);
    eid_client_set_skew(lc->c, (int64_t)s);
    unlock_client(lc);
    return 0;
}

void eidkit_open_client(lua_State *L) {
    static const luaL_Reg methods[] = {
        {"set_credentials", l_set_credentials},
        {"call", l_call},
        {"batch", l_batch},
        {"submit", l_submit},
        {"perform", l_perform},
        {"next", l_next},
        {"fd", l_fd},
        {"timeout", l_timeout},
        {"skew", l_skew},
        {"set_skew", l_set_skew},
        {"stats", l_stats},
        {"close", l_close},
        {NULL, NULL},
    };
    static const luaL_Reg meta[] = {
        {"__gc", l_close},
        {"__close", l_close},
        {"__tostring", l_tostring},
        {NULL, NULL},
    };
    eidkit_new_class(L, EIDKIT_CLIENT_MT, meta, methods);
    lua_pop(L, 1);
    lua_pushcfunction(L, l_client_new);
    lua_setfield(L, -2, "client_new");
    lua_pushcfunction(L, l_http_get);
    lua_setfield(L, -2, "http_get");
    lua_pushcfunction(L, l_http_request);
    lua_setfield(L, -2, "http_request");
    /* The transport codes (eidkit/client.h): core.transport_codes maps each
     * name to true; "http_NNN" codes are the others, core.transport_code_prefix
     * followed by the status. core.is_transport_code(s) tells both apart. */
    lua_newtable(L);
    for (size_t i = 0; eid_client_transport_code(i) != NULL; i++) {
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, eid_client_transport_code(i));
    }
    lua_setfield(L, -2, "transport_codes");
    lua_pushliteral(L, EID_HTTP_CODE_PREFIX);
    lua_setfield(L, -2, "transport_code_prefix");
    lua_pushcfunction(L, l_is_transport_code);
    lua_setfield(L, -2, "is_transport_code");
    eidkit_open_retry(L);
}
