/* eidkit.Ledger: the token ledger (core/include/eidkit/ledger.h) for Lua.
 *
 * Every operation is a job in three steps (eidkit_lua.h): read the Lua
 * arguments into C inputs, run the C call, push the C results as Lua
 * values. A method here does the three at once; eidkit.LedgerPool
 * (ledger_pool.c) runs the middle one on a worker thread. */
#include "eidkit/ledger.h"

#include "eidkit_lua.h"

#define EIDKIT_LEDGER_MT "eidkit.Ledger"

#include <stdlib.h>
#include <string.h>

#define PAGE 256

typedef struct lledger {
    eid_ledger *l;        /* NULL once closed */
    int64_t now;          /* read from the Lua clock before each call */
    int omit_request_ids; /* opened with request_ids = false */
} lledger;

static int64_t lua_clock(void *ud) { return ((lledger *)ud)->now; }

/* A Lua clock is read on the Lua thread before the C call, never from inside
 * it (an error in it would longjmp past the ledger's lock, or happen on a
 * pool's worker thread). */
void eidkit_ledger_read_clock(lua_State *L, int idx, int64_t *now) {
    if (lua_getiuservalue(L, idx, 1) == LUA_TFUNCTION) {
        lua_call(L, 0, 1);
        int isnum = 0;
        lua_Integer t = lua_tointegerx(L, -1, &isnum);
        if (!isnum || lua_type(L, -1) != LUA_TNUMBER || t < 0 || t > EID_TIMESTAMP_MAX)
            luaL_error(L, "eidkit.Ledger clock must return integer Unix seconds");
        *now = (int64_t)t;
    }
    lua_pop(L, 1);
}

static lledger *check_ledger(lua_State *L, int idx) {
    lledger *ll = luaL_checkudata(L, idx, EIDKIT_LEDGER_MT);
    if (ll->l == NULL) luaL_error(L, "attempt to use a closed eidkit.Ledger");
    eidkit_ledger_read_clock(L, idx, &ll->now);
    return ll;
}

static void set_int(lua_State *L, const char *k, int64_t v) {
    lua_pushinteger(L, (lua_Integer)v);
    lua_setfield(L, -2, k);
}

static void set_time(lua_State *L, const char *k, int64_t v) {
    if (v) set_int(L, k, v);
}

static void push_entry(lua_State *L, const eid_ledger_entry *r, int omit_request_ids) {
    lua_createtable(L, 0, 22);
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
    lua_pushboolean(L, r->intention);
    lua_setfield(L, -2, "intention");
    if (r->has_late_err_code) set_int(L, "late_ErrCode", r->late_err_code);
    if (r->state == EID_LEDGER_CONSUMED) set_int(L, "settled_billable", r->settled_billable);
    if (r->retry_later) {
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "retry_later");
    }
    if (r->open) {
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "open");
    }
    if (r->late_pass) {
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "late");
    }
    lua_pushboolean(L, r->has_payload);
    lua_setfield(L, -2, "has_payload");
    /* Up to 32 strings per entry, on every claim and record of a host that
     * never reads them (the flow): the largest part of eidkit serve's
     * per-request work once a polled token had collected its 32. */
    if (omit_request_ids) return;
    int n = *r->request_ids ? 1 : 0;
    for (const char *p = r->request_ids; *p; p++)
        n += *p == ',';
    lua_createtable(L, n, 0); /* sized once: this runs for every claim and record */
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

/* Digest a GetEidResult response (the Response object, or the whole body
 * with a Response member) into an outcome. JSON null (cjson.null, a light
 * userdata) counts as absent. */
static int is_absent(lua_State *L, int idx) {
    int t = lua_type(L, idx);
    return t == LUA_TNIL || t == LUA_TLIGHTUSERDATA;
}

/* t[field] as text cut to cap - 1 bytes, control bytes dropped ("" when
 * not a string). */
static void detail_text(lua_State *L, int t, const char *field, char *dst, size_t cap) {
    size_t len = 0, n = 0;
    const char *s = lua_getfield(L, t, field) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : "";
    for (size_t i = 0; i < len && n + 1 < cap; i++)
        if ((unsigned char)s[i] >= 0x20 && s[i] != 0x7f) dst[n++] = s[i];
    dst[n] = '\0';
    lua_pop(L, 1);
}

/* t[field] as an integer: a number, or a string of digits (Tencent sends
 * ReqTime as one). */
static int detail_integer(lua_State *L, int t, const char *field, int64_t *v) {
    int ok = 0;
    lua_getfield(L, t, field);
    if (lua_type(L, -1) == LUA_TNUMBER || lua_type(L, -1) == LUA_TSTRING) {
        int isnum = 0;
        lua_Integer i = lua_tointegerx(L, -1, &isnum);
        if (isnum) {
            *v = (int64_t)i;
            ok = 1;
        }
    }
    lua_pop(L, 1);
    return ok;
}

/* One LivenessDetail entry (the table at -1) into a; its Name and Idcard
 * are never read. A Seq that is not text leaves a->seq empty: not stored. */
static void read_detail(lua_State *L, eid_ledger_attempt *a) {
    int t = lua_gettop(L);
    memset(a, 0, sizeof *a);
    if (lua_getfield(L, t, "Seq") == LUA_TSTRING) {
        size_t len;
        const char *seq = lua_tolstring(L, -1, &len);
        if (len <= EID_LEDGER_SEQ_MAX && strlen(seq) == len) memcpy(a->seq, seq, len + 1);
    }
    lua_pop(L, 1);
    if (!detail_integer(L, t, "ReqTime", &a->req_time_ms) || a->req_time_ms < 0) a->req_time_ms = 0;
    a->has_err_code = detail_integer(L, t, "Errcode", &a->err_code);
    a->has_liveness_mode = detail_integer(L, t, "LivenessMode", &a->liveness_mode);
    lua_getfield(L, t, "IsNeedCharge");
    a->is_need_charge = lua_type(L, -1) == LUA_TBOOLEAN && lua_toboolean(L, -1);
    lua_pop(L, 1);
    detail_text(L, t, "Sim", a->sim, sizeof a->sim);
    detail_text(L, t, "CompareLibType", a->compare_lib_type, sizeof a->compare_lib_type);
}

/* Leaves a userdata holding the details on the stack (it must live as long
 * as the outcome that points into it). */
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
    lua_getfield(L, resp, "IsVerifyIntention");
    o->intention = lua_type(L, -1) == LUA_TBOOLEAN && lua_toboolean(L, -1);
    lua_pop(L, 1);
    eid_ledger_attempt *details = NULL;
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
            /* The last EID_LEDGER_DETAILS_MAX entries are the ones stored. */
            lua_Integer first = n > EID_LEDGER_DETAILS_MAX ? n - EID_LEDGER_DETAILS_MAX + 1 : 1;
            if (n) {
                details = lua_newuserdatauv(L, sizeof *details * (size_t)(n - first + 1), 0);
                lua_insert(L, text); /* below Text: stays on the stack when this returns */
                text++;
            }
            for (lua_Integer i = 1; i <= n; i++) {
                if (lua_rawgeti(L, -1, i) != LUA_TTABLE)
                    luaL_argerror(L, arg, "Text.LivenessDetail: expected a list of objects");
                lua_getfield(L, -1, "IsNeedCharge");
                if (lua_toboolean(L, -1) && lua_type(L, -1) == LUA_TBOOLEAN) o->billable++;
                lua_pop(L, 1);
                if (i >= first) read_detail(L, &details[i - first]);
                lua_pop(L, 1);
            }
            o->details = details;
            o->n_details = n ? (size_t)(n - first + 1) : 0;
        } else if (!is_absent(L, -1)) {
            luaL_argerror(L, arg, "Text.LivenessDetail: expected array");
        }
        lua_pop(L, 1);
    } else if (!is_absent(L, -1)) {
        luaL_argerror(L, arg, "Text: expected table");
    }
    lua_pop(L, 1);
}

/* A response given as JSON text: digested by the same C code the FFI ledgers
 * use (eid_ledger_digest_json). What the outcome points to is left on the
 * stack, as read_outcome leaves it: the details in a userdata, the RequestId
 * in a string. */
static void read_outcome_text(lua_State *L, int arg, eid_ledger_outcome *o) {
    size_t len;
    const char *json = lua_tolstring(L, arg, &len);
    eid_ledger_digest *d = NULL;
    eid_error err = {0};
    eid_status st = eid_ledger_digest_json(json, len, &d, &err);
    if (st == EID_E_INVALID_ARG) luaL_argerror(L, arg, err.message);
    if (st != EID_OK) luaL_error(L, "record: out of memory");
    const eid_ledger_outcome *from = eid_ledger_digest_outcome(d);
    *o = *from;
    o->request_id = NULL;
    o->details = NULL;
    if (from->n_details) {
        size_t size = sizeof *o->details * from->n_details;
        eid_ledger_attempt *details = lua_newuserdatauv(L, size, 0);
        memcpy(details, from->details, size);
        o->details = details;
    }
    if (from->request_id) o->request_id = lua_pushstring(L, from->request_id);
    eid_ledger_digest_free(d);
}

/* ------------------------------------------------------------ the jobs */

static const char *const op_names[] = {"issue", "claim",    "consume", "get",   "record",
                                       "due",   "export",   "expire",  "stats", "payload",
                                       "take",  "attempts", "give"};

const char *eidkit_ledger_op_name(eidkit_ledger_op op) { return op_names[op]; }

static void read_issue(lua_State *L, eidkit_ledger_job *j) {
    luaL_checktype(L, 2, LUA_TTABLE);
    static const char *const known[] = {"EidToken",   "MerchantId", "subject",   "Extra",
                                        "created_at", "expires_at", "intention", NULL};
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
    j->issue = (eid_ledger_issue_params){
        .token = field_string(L, 2, "EidToken", 2),
        .merchant_id = field_string(L, 2, "MerchantId", 2),
        .subject = field_string(L, 2, "subject", 2),
        .extra = field_string(L, 2, "Extra", 2),
        .created_at = field_integer(L, 2, "created_at", 2),
        .expires_at = field_integer(L, 2, "expires_at", 2),
    };
    int t = lua_getfield(L, 2, "intention");
    if (t != LUA_TNIL && t != LUA_TBOOLEAN) luaL_argerror(L, 2, "intention: expected boolean");
    j->issue.intention = lua_toboolean(L, -1);
    lua_pop(L, 1);
}

/* ledger:record(token, response [, payload]) */
static void read_record(lua_State *L, eidkit_ledger_job *j) {
    j->token = check_cstring(L, 2);
    const char *payload = NULL;
    size_t payload_len = 0;
    int text = lua_type(L, 3) == LUA_TSTRING;
    if (!lua_isnoneornil(L, 4)) {
        payload = luaL_checklstring(L, 4, &payload_len);
    } else {
        lua_settop(L, 3);
        if (lua_getiuservalue(L, 1, 2) == LUA_TFUNCTION) {
            /* Opened with payload_encoder (keep_payloads): store every
             * response, text as given (as the FFI ledgers store it), a
             * table encoded. Called before any ledger work, so an error
             * here changes nothing. The result stays at index 4. */
            lua_pushvalue(L, 3);
            if (text)
                lua_replace(L, 4);
            else
                lua_call(L, 1, 1);
            if (lua_type(L, 4) != LUA_TSTRING)
                luaL_error(L, "payload_encoder must return a string, got %s", luaL_typename(L, 4));
            payload = lua_tolstring(L, 4, &payload_len);
        }
    }
    if (text)
        read_outcome_text(L, 3, &j->outcome);
    else
        read_outcome(L, 3, &j->outcome);
    j->outcome.payload = payload;
    j->outcome.payload_len = payload_len;
}

void eidkit_ledger_job_read(lua_State *L, eidkit_ledger_op op, eidkit_ledger_job *j) {
    int64_t now = j->now;
    memset(j, 0, sizeof *j);
    j->op = op;
    j->now = now;
    switch (op) {
    case EIDKIT_LEDGER_ISSUE: read_issue(L, j); break;
    case EIDKIT_LEDGER_CLAIM:
    case EIDKIT_LEDGER_CONSUME:
        j->token = check_cstring(L, 2);
        j->subject = check_cstring(L, 3);
        break;
    case EIDKIT_LEDGER_GET:
    case EIDKIT_LEDGER_ATTEMPTS:
    case EIDKIT_LEDGER_PAYLOAD: j->token = check_cstring(L, 2); break;
    case EIDKIT_LEDGER_RECORD: read_record(L, j); break;
    case EIDKIT_LEDGER_DUE: {
        lua_Integer limit = luaL_optinteger(L, 2, 100);
        luaL_argcheck(L, limit >= 1 && limit <= 100000, 2, "limit must be 1..100000");
        j->limit = (size_t)limit;
        break;
    }
    case EIDKIT_LEDGER_EXPORT:
        /* As in C, an end that is absent or 0 is open: no table at all
         * exports every token. eid_ledger_export refuses from > to. */
        if (!lua_isnoneornil(L, 2)) {
            luaL_checktype(L, 2, LUA_TTABLE);
            j->from = field_integer(L, 2, "from", 2);
            j->to = field_integer(L, 2, "to", 2);
        }
        break;
    case EIDKIT_LEDGER_EXPIRE: {
        lua_Integer at = luaL_optinteger(L, 2, 0);
        luaL_argcheck(L, at >= 0 && at <= EID_TIMESTAMP_MAX, 2, "now: out of range");
        j->at = (int64_t)at;
        break;
    }
    case EIDKIT_LEDGER_STATS: break;
    case EIDKIT_LEDGER_TAKE:
    case EIDKIT_LEDGER_GIVE: {
        j->key = check_cstring(L, 2);
        j->rate = (double)luaL_checknumber(L, 3);
        j->burst = (double)luaL_checknumber(L, 4);
        lua_Integer at = luaL_optinteger(L, 5, 0);
        luaL_argcheck(L, at >= 0 && at <= EID_TIMESTAMP_MAX * 1000, 5, "now_ms: out of range");
        j->now_ms = (int64_t)at;
        break;
    }
    }
}

/* Copies of the strings in one block: n strings, lengths in len[]. */
int eidkit_ledger_job_own(eidkit_ledger_job *j) {
    const char **str[] = {
        &j->token,         &j->subject,     &j->issue.token,        &j->issue.merchant_id,
        &j->issue.subject, &j->issue.extra, &j->outcome.request_id, &j->key};
    enum { N = sizeof str / sizeof str[0] };
    /* The details first: the block's start is aligned for them. */
    size_t dlen = j->outcome.n_details * sizeof *j->outcome.details;
    size_t len[N], total = dlen + j->outcome.payload_len;
    for (size_t i = 0; i < N; i++) {
        len[i] = *str[i] ? strlen(*str[i]) + 1 : 0;
        total += len[i];
    }
    char *block = malloc(total ? total : 1), *p = block;
    if (block == NULL) return -1;
    if (dlen) {
        memcpy(p, j->outcome.details, dlen);
        j->outcome.details = (const eid_ledger_attempt *)(void *)p;
        p += dlen;
    }
    for (size_t i = 0; i < N; i++)
        if (*str[i]) {
            memcpy(p, *str[i], len[i]);
            *str[i] = p;
            p += len[i];
        }
    if (j->outcome.payload) {
        memcpy(p, j->outcome.payload, j->outcome.payload_len);
        j->outcome.payload = p;
    }
    free(j->owned);
    j->owned = block;
    return 0;
}

static void run_export(eid_ledger *l, eidkit_ledger_job *j) {
    size_t cap = 0;
    int64_t after = 0;
    char last[EID_LEDGER_TOKEN_MAX + 1] = "";
    size_t n;
    do {
        if (j->n + PAGE > cap) {
            size_t ncap = cap ? 2 * cap : PAGE;
            eid_ledger_entry *grown = realloc(j->list, ncap * sizeof *grown);
            if (grown == NULL) {
                j->st = EID_E_NOMEM;
                snprintf(j->err.message, sizeof j->err.message, "out of memory");
                return;
            }
            j->list = grown;
            cap = ncap;
        }
        j->st =
            eid_ledger_export(l, j->from, j->to, after, last, j->list + j->n, PAGE, &n, &j->err);
        if (j->st) return;
        j->n += n;
        if (n) {
            after = j->list[j->n - 1].created_at;
            memcpy(last, j->list[j->n - 1].token, sizeof last);
        }
    } while (n == PAGE);
}

static void run_payload(eid_ledger *l, eidkit_ledger_job *j) {
    size_t len = 0;
    j->st = eid_ledger_payload(l, j->token, NULL, 0, &len, &j->err);
    if (j->st != EID_E_BUFFER_TOO_SMALL && j->st != EID_OK) return;
    j->bytes = malloc(len ? len : 1);
    if (j->bytes == NULL) {
        j->st = EID_E_NOMEM;
        snprintf(j->err.message, sizeof j->err.message, "out of memory");
        return;
    }
    j->st = eid_ledger_payload(l, j->token, j->bytes, len, &j->len, &j->err);
}

static void run_attempts(eid_ledger *l, eidkit_ledger_job *j) {
    size_t n = 0;
    j->st = eid_ledger_attempts(l, j->token, NULL, 0, &n, &j->err);
    if (j->st != EID_E_BUFFER_TOO_SMALL) return; /* an error, or none stored */
    j->attempts = malloc(n * sizeof *j->attempts);
    if (j->attempts == NULL) {
        j->st = EID_E_NOMEM;
        snprintf(j->err.message, sizeof j->err.message, "out of memory");
        return;
    }
    /* Attempts only grow: one more arriving in between is left for next time. */
    size_t got = 0;
    j->st = eid_ledger_attempts(l, j->token, j->attempts, n, &got, &j->err);
    if (j->st == EID_E_BUFFER_TOO_SMALL) j->st = EID_OK;
    j->n = got < n ? got : n;
}

void eidkit_ledger_job_run(eid_ledger *l, eidkit_ledger_job *j) {
    memset(&j->err, 0, sizeof j->err);
    switch (j->op) {
    case EIDKIT_LEDGER_ISSUE: j->st = eid_ledger_issue(l, &j->issue, &j->err); break;
    case EIDKIT_LEDGER_CLAIM:
        j->st = eid_ledger_claim(l, j->token, j->subject, &j->entry, &j->err);
        break;
    case EIDKIT_LEDGER_CONSUME:
        j->st = eid_ledger_consume(l, j->token, j->subject, &j->entry, &j->err);
        break;
    case EIDKIT_LEDGER_GET: j->st = eid_ledger_get(l, j->token, &j->entry, &j->err); break;
    case EIDKIT_LEDGER_RECORD:
        j->st = eid_ledger_record(l, j->token, &j->outcome, &j->entry, &j->err);
        break;
    case EIDKIT_LEDGER_DUE:
        j->list = malloc(j->limit * sizeof *j->list);
        if (j->list == NULL) {
            j->st = EID_E_NOMEM;
            snprintf(j->err.message, sizeof j->err.message, "out of memory");
            break;
        }
        j->st = eid_ledger_due(l, j->list, j->limit, &j->n, &j->err);
        break;
    case EIDKIT_LEDGER_EXPORT: run_export(l, j); break;
    case EIDKIT_LEDGER_EXPIRE:
        j->st = eid_ledger_expire(l, j->at, &j->expired, &j->abandoned, &j->err);
        break;
    case EIDKIT_LEDGER_STATS: j->st = eid_ledger_stats(l, &j->counts, &j->err); break;
    case EIDKIT_LEDGER_PAYLOAD: run_payload(l, j); break;
    case EIDKIT_LEDGER_ATTEMPTS: run_attempts(l, j); break;
    case EIDKIT_LEDGER_TAKE:
        j->st = eid_ledger_take(l, j->key, j->rate, j->burst, j->now_ms, &j->allowed,
                                &j->retry_after, &j->err);
        break;
    case EIDKIT_LEDGER_GIVE:
        j->st = eid_ledger_give(l, j->key, j->rate, j->burst, j->now_ms, &j->err);
        break;
    }
}

/* A malformed token given to a lookup is simply not in the ledger (it
 * usually comes from a user): not misuse. */
static int is_lookup(eidkit_ledger_op op) {
    return op == EIDKIT_LEDGER_CLAIM || op == EIDKIT_LEDGER_CONSUME || op == EIDKIT_LEDGER_GET ||
           op == EIDKIT_LEDGER_RECORD || op == EIDKIT_LEDGER_PAYLOAD ||
           op == EIDKIT_LEDGER_ATTEMPTS;
}

int eidkit_ledger_job_misuse(const eidkit_ledger_job *j, char *msg, size_t cap) {
    if (j->st != EID_E_INVALID_ARG) return 0;
    const char *field = j->err.field;
    if (is_lookup(j->op) && strcmp(field, "token") == 0) return 0;
    snprintf(msg, cap, "%s", j->err.message);
    switch (j->op) {
    case EIDKIT_LEDGER_ISSUE: {
        /* Name the field as the caller spelt it. */
        static const char *const names[][2] = {
            {"token", "EidToken"}, {"merchant_id", "MerchantId"}, {"extra", "Extra"}};
        for (size_t i = 0; i < 3; i++)
            /* A message cut at cap still reads; the check keeps -O3's
             * -Wformat-truncation quiet. */
            if (strcmp(field, names[i][0]) == 0 &&
                snprintf(msg, cap, "%s%s", names[i][1], j->err.message + strlen(names[i][0])) < 0)
                msg[0] = '\0';
        return 2;
    }
    case EIDKIT_LEDGER_CLAIM:
    case EIDKIT_LEDGER_CONSUME: return strcmp(field, "subject") == 0 ? 3 : 2;
    case EIDKIT_LEDGER_RECORD:
        return strcmp(field, "payload") == 0 ? 4 : strcmp(field, "token") == 0 ? 2 : 3;
    case EIDKIT_LEDGER_STATS: return 1;
    case EIDKIT_LEDGER_TAKE:
    case EIDKIT_LEDGER_GIVE:
        return strcmp(field, "rate") == 0 ? 3 : strcmp(field, "burst") == 0 ? 4 : 2;
    default: return 2;
    }
}

static int push_counts(lua_State *L, const eid_ledger_counts *s) {
    lua_createtable(L, 0, EID_LEDGER_STATES + 3);
    uint64_t total = 0;
    for (int i = 0; i < EID_LEDGER_STATES; i++) {
        set_int(L, eid_ledger_state_name((eid_ledger_state)i), (int64_t)s->count[i]);
        total += s->count[i];
    }
    set_int(L, "total", (int64_t)total);
    set_int(L, "billable", (int64_t)s->billable);
    set_int(L, "due", (int64_t)s->due);
    return 1;
}

/* One stored attempt, with Tencent's LivenessDetail names. */
static void push_attempt(lua_State *L, const eid_ledger_attempt *a) {
    lua_createtable(L, 0, 7);
    lua_pushstring(L, a->seq);
    lua_setfield(L, -2, "Seq");
    set_int(L, "ReqTime", a->req_time_ms);
    if (a->has_err_code) set_int(L, "Errcode", a->err_code);
    lua_pushboolean(L, a->is_need_charge);
    lua_setfield(L, -2, "IsNeedCharge");
    lua_pushstring(L, a->sim);
    lua_setfield(L, -2, "Sim");
    if (a->has_liveness_mode) set_int(L, "LivenessMode", a->liveness_mode);
    lua_pushstring(L, a->compare_lib_type);
    lua_setfield(L, -2, "CompareLibType");
}

/* Under lua_pcall: (job). Pushes the results. */
static int push_results(lua_State *L) {
    eidkit_ledger_job *j = lua_touserdata(L, 1);
    if (j->st != EID_OK) {
        eid_status st = j->st == EID_E_INVALID_ARG ? EID_E_LEDGER_UNKNOWN : j->st;
        return eidkit_push_status(L, st, j->err.message);
    }
    switch (j->op) {
    case EIDKIT_LEDGER_ISSUE:
    case EIDKIT_LEDGER_GIVE: lua_pushboolean(L, 1); break;
    case EIDKIT_LEDGER_DUE:
    case EIDKIT_LEDGER_EXPORT:
        lua_createtable(L, (int)j->n, 0);
        for (size_t i = 0; i < j->n; i++) {
            push_entry(L, &j->list[i], j->omit_request_ids);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        break;
    case EIDKIT_LEDGER_EXPIRE:
        lua_createtable(L, 0, 2);
        set_int(L, "expired", (int64_t)j->expired);
        set_int(L, "abandoned", (int64_t)j->abandoned);
        break;
    case EIDKIT_LEDGER_STATS: push_counts(L, &j->counts); break;
    case EIDKIT_LEDGER_PAYLOAD: lua_pushlstring(L, j->bytes, j->len); break;
    case EIDKIT_LEDGER_ATTEMPTS:
        lua_createtable(L, (int)j->n, 0);
        for (size_t i = 0; i < j->n; i++) {
            push_attempt(L, &j->attempts[i]);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        break;
    case EIDKIT_LEDGER_TAKE:
        lua_pushboolean(L, j->allowed);
        if (j->allowed) break;
        lua_pushnumber(L, (lua_Number)j->retry_after);
        return 2;
    default: push_entry(L, &j->entry, j->omit_request_ids); break;
    }
    return 1;
}

static void clear_outputs(eidkit_ledger_job *j) {
    free(j->list);
    j->list = NULL;
    j->n = 0;
    free(j->bytes);
    j->bytes = NULL;
    free(j->attempts);
    j->attempts = NULL;
}

void eidkit_ledger_job_clear(eidkit_ledger_job *j) {
    clear_outputs(j);
    free(j->owned);
    j->owned = NULL;
}

int eidkit_ledger_job_push(lua_State *L, eidkit_ledger_job *j) {
    int top = lua_gettop(L);
    lua_pushcfunction(L, push_results);
    lua_pushlightuserdata(L, j);
    int rc = lua_pcall(L, 1, LUA_MULTRET, 0);
    clear_outputs(j);
    if (rc != LUA_OK) lua_error(L);
    return lua_gettop(L) - top;
}

/* --------------------------------------------------------------- methods */

/* Read, run and push one job on the Lua thread. */
static int call(lua_State *L, eidkit_ledger_op op) {
    lledger *ll = check_ledger(L, 1);
    eidkit_ledger_job j;
    j.now = 0;
    eidkit_ledger_job_read(L, op, &j);
    j.omit_request_ids = ll->omit_request_ids;
    eidkit_ledger_job_run(ll->l, &j);
    char msg[sizeof j.err.message + 32];
    int arg = eidkit_ledger_job_misuse(&j, msg, sizeof msg);
    if (arg) {
        clear_outputs(&j);
        return luaL_argerror(L, arg, msg);
    }
    return eidkit_ledger_job_push(L, &j);
}

/* ledger:issue{EidToken=, MerchantId=, subject=, Extra=, created_at=, expires_at=} -> true */
static int l_issue(lua_State *L) { return call(L, EIDKIT_LEDGER_ISSUE); }
/* ledger:claim(token, subject), ledger:consume(token, subject) -> entry */
static int l_claim(lua_State *L) { return call(L, EIDKIT_LEDGER_CLAIM); }
static int l_consume(lua_State *L) { return call(L, EIDKIT_LEDGER_CONSUME); }
/* ledger:get(token) -> entry */
static int l_get(lua_State *L) { return call(L, EIDKIT_LEDGER_GET); }
/* ledger:record(token, response [, payload]) -> entry. The response (the
 * Response object, or the whole body with a Response member) is digested
 * into an outcome; JSON null counts as absent. */
static int l_record(lua_State *L) { return call(L, EIDKIT_LEDGER_RECORD); }
/* ledger:due(limit) -> {entry...} */
static int l_due(lua_State *L) { return call(L, EIDKIT_LEDGER_DUE); }
/* ledger:export([{from = t0, to = t1}]) -> {entry...}, created in [from, to) */
static int l_export(lua_State *L) { return call(L, EIDKIT_LEDGER_EXPORT); }
/* ledger:expire([now]) -> {expired = n, abandoned = n} */
static int l_expire(lua_State *L) { return call(L, EIDKIT_LEDGER_EXPIRE); }
/* ledger:stats() -> {issued =, ..., total =, billable =, due =} */
static int l_stats(lua_State *L) { return call(L, EIDKIT_LEDGER_STATS); }
/* ledger:payload(token) -> the decrypted payload */
static int l_payload(lua_State *L) { return call(L, EIDKIT_LEDGER_PAYLOAD); }
/* ledger:take(key, rate, burst [, now_ms]) -> true | false, retry_after_s:
 * one token from the bucket key (eid_ledger_take); now_ms 0 or absent: the
 * ledger's clock. */
static int l_take(lua_State *L) { return call(L, EIDKIT_LEDGER_TAKE); }
/* ledger:give(key, rate, burst [, now_ms]) -> true: one token back into the
 * bucket key, never above burst (eid_ledger_give). */
static int l_give(lua_State *L) { return call(L, EIDKIT_LEDGER_GIVE); }
/* ledger:attempts(token) -> {attempt...}: the stored LivenessDetail entries,
 * by ReqTime then Seq ({Seq, ReqTime (ms), Errcode, IsNeedCharge, Sim,
 * LivenessMode, CompareLibType}) */
static int l_attempts(lua_State *L) { return call(L, EIDKIT_LEDGER_ATTEMPTS); }

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

int eidkit_ledger_read_request_ids(lua_State *L, int idx) {
    if (lua_isnoneornil(L, idx)) return 1;
    int t = lua_getfield(L, idx, "request_ids");
    int v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    luaL_argcheck(L, t == LUA_TNIL || t == LUA_TBOOLEAN, idx, "request_ids: expected a boolean");
    return t == LUA_TNIL || v;
}

void eidkit_ledger_read_options(lua_State *L, int idx, eid_ledger_options *o, int *has_clock,
                                int *has_encoder) {
    memset(o, 0, sizeof *o);
    *has_clock = *has_encoder = 0;
    if (lua_isnoneornil(L, idx)) return;
    luaL_checktype(L, idx, LUA_TTABLE);
    o->token_ttl = field_integer(L, idx, "token_ttl", idx);
    o->result_window = field_integer(L, idx, "result_window", idx);
    o->retention = field_integer(L, idx, "retention", idx);
    int64_t t = field_integer(L, idx, "timeout_ms", idx);
    luaL_argcheck(L, t <= 600000, idx, "timeout_ms: must be 1..600000");
    o->timeout_ms = (int)t;
    if (lua_getfield(L, idx, "payload_key") != LUA_TNIL) {
        size_t len;
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_argerror(L, idx, "payload_key: expected a 32-byte string");
        o->payload_key = (const unsigned char *)lua_tolstring(L, -1, &len);
        o->payload_key_len = len; /* kept alive by the options table */
    }
    lua_pop(L, 1);
    if (lua_getfield(L, idx, "clock") != LUA_TNIL) {
        luaL_argcheck(L, lua_isfunction(L, -1), idx, "clock: expected function");
        *has_clock = 1;
    }
    lua_pop(L, 1);
    if (lua_getfield(L, idx, "payload_encoder") != LUA_TNIL) {
        luaL_argcheck(L, lua_isfunction(L, -1), idx, "payload_encoder: expected function");
        luaL_argcheck(L, o->payload_key != NULL, idx, "payload_encoder: needs payload_key");
        *has_encoder = 1;
    }
    lua_pop(L, 1);
}

int eidkit_ledger_open_failed(lua_State *L, eid_status st, const eid_error *err) {
    if (st == EID_E_INVALID_ARG)
        return luaL_argerror(L, strcmp(err->field, "url") == 0 ? 1 : 2, err->message);
    return eidkit_push_status(L, st, err->message);
}

/* core.ledger_open(url [, {token_ttl=, result_window=, retention=,
 *   timeout_ms=, payload_key=, payload_encoder=, clock=}]) -> ledger | nil, err
 * payload_encoder(response) -> string: with it, record stores every
 * response it is given (encrypted) when no payload is passed. */
static int l_open(lua_State *L) {
    const char *url = check_cstring(L, 1);
    eid_ledger_options o;
    int has_clock, has_encoder;
    eidkit_ledger_read_options(L, 2, &o, &has_clock, &has_encoder);
    /* Uservalues: 1 the clock, 2 the payload encoder. */
    int request_ids = eidkit_ledger_read_request_ids(L, 2);
    lledger *ll = lua_newuserdatauv(L, sizeof *ll, 2);
    ll->l = NULL;
    ll->now = 0;
    ll->omit_request_ids = !request_ids;
    luaL_setmetatable(L, EIDKIT_LEDGER_MT);
    int self = lua_gettop(L);
    if (has_clock) {
        lua_getfield(L, 2, "clock");
        lua_setiuservalue(L, self, 1);
        int isnum = 0;
        lua_getfield(L, 2, "clock");
        lua_call(L, 0, 1);
        ll->now = (int64_t)lua_tointegerx(L, -1, &isnum);
        lua_pop(L, 1);
        if (!isnum) luaL_argerror(L, 2, "clock: must return integer Unix seconds");
        o.clock.now = lua_clock;
        o.clock.ud = ll;
    }
    if (has_encoder) {
        lua_getfield(L, 2, "payload_encoder");
        lua_setiuservalue(L, self, 2);
    }
    eid_error err = {0};
    eid_status st = eid_ledger_open(url, &o, &ll->l, &err);
    if (st) return eidkit_ledger_open_failed(L, st, &err);
    return 1;
}

/* core.ledger_check_open_claim(bound_subject, expires_at, subject, now)
 * -> true | nil, err: eid_ledger_check_claim for a token known to be open
 * (issued, no verdict consumed): may `subject` claim it at `now`? The same
 * rule and error table as ledger:claim, for a caller that already knows the
 * token's binding (eidkit.flow's claim cache). */
static int l_check_open_claim(lua_State *L) {
    const char *bound = luaL_checkstring(L, 1);
    lua_Integer expires_at = luaL_checkinteger(L, 2);
    const char *subject = luaL_checkstring(L, 3);
    lua_Integer now = luaL_checkinteger(L, 4);
    eid_error err = {0};
    eid_status st = eid_ledger_check_claim(bound, EID_LEDGER_ISSUED, (int64_t)expires_at, subject,
                                           (int64_t)now, &err);
    if (st == EID_E_INVALID_ARG) return luaL_error(L, "ledger_check_open_claim: %s", err.message);
    if (st != EID_OK) return eidkit_push_status(L, st, err.message);
    lua_pushboolean(L, 1);
    return 1;
}

/* core.ledger_check_url(url) -> true | nil, message: eid_ledger_check_url,
 * for a host to refuse a bad --ledger before it opens anything. */
static int l_check_url(lua_State *L) {
    const char *url = luaL_checkstring(L, 1);
    eid_error err = {0};
    if (eid_ledger_check_url(url, &err) != EID_OK) {
        lua_pushnil(L);
        lua_pushstring(L, err.message);
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

void eidkit_open_ledger(lua_State *L) {
    static const luaL_Reg methods[] = {
        {"issue", l_issue},     {"claim", l_claim},       {"record", l_record},
        {"consume", l_consume}, {"get", l_get},           {"due", l_due},
        {"export", l_export},   {"expire", l_expire},     {"stats", l_stats},
        {"payload", l_payload}, {"backend", l_backend},   {"close", l_close},
        {"take", l_take},       {"attempts", l_attempts}, {"give", l_give},
        {NULL, NULL},
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
    lua_pushcfunction(L, l_check_open_claim);
    lua_setfield(L, -2, "ledger_check_open_claim");
    lua_pushcfunction(L, l_check_url);
    lua_setfield(L, -2, "ledger_check_url");
}
