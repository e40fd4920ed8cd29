/* Limits for merchant policy scripts (issue 6): instruction budget, memory
 * cap, wall clock. The pure-Lua side (lua/eidkit/sandbox.lua) builds the
 * environments; this file enforces the limits of one box:call.
 * Design and limits: docs/internals/sandbox.md. */
#define _POSIX_C_SOURCE 200809L

#include "eidkit_lua.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SB_MT    "eidkit.SandboxLimits"
#define SB_STEP  1000 /* instructions between two hook calls while nothing tripped */
#define SB_NONE  INT64_MAX
#define SB_STOP  "eidkit.sandbox: call stopped (limit exceeded)"
#define SB_ERRTB 3 /* fields of the message handler's table: value, message, traceback */

enum { SB_OK, SB_INSTRUCTIONS, SB_MEMORY, SB_TIME };
static const char *const sb_codes[] = {"ok", "instructions", "memory", "time"};

/* Registry keys (their addresses). */
static char sb_state_key, sb_stop_key, sb_skip_key;

/* One running box:call; frames nest (a hook calling a host function that
 * calls another box) and live on the C stack of l_call. */
typedef struct sb_frame {
    struct sb_frame *prev;
    lua_State *L;      /* the thread box:call runs on */
    lua_Integer left;  /* instructions left (LUA_MAXINTEGER: no budget) */
    int64_t deadline;  /* ns on the coarse monotonic clock (SB_NONE: none) */
    size_t limit;      /* bytes in use allowed (SIZE_MAX: no cap) */
    int tripped;       /* SB_INSTRUCTIONS, SB_MEMORY, SB_TIME or 0 */
    int capped;        /* bit per limit narrowed by an enclosing call */
    lua_Hook old_hook; /* the thread's hook before the call, chained for line/call events */
    char where[LUA_IDSIZE + 24];
} sb_frame;

/* One per lua_State, installed as the allocator's ud the first time a box
 * is made; malloc'd so it outlives every Lua object (see sb_state_gc). */
typedef struct sb_state {
    lua_Alloc orig;
    void *orig_ud;
    size_t in_use;    /* bytes Lua holds, from the sizes it passes us */
    size_t limit;     /* growth beyond this is refused (SIZE_MAX outside calls) */
    sb_frame *top;    /* innermost running call */
    const char *skip; /* source of eidkit/sandbox.lua: not where a script stopped */
} sb_state;

/* The limits of one box (core.sandbox_limits); the uservalue is the table
 * strings index during a call (the box's safe string library). */
typedef struct sb_limits {
    lua_Integer instructions; /* 0: none */
    size_t memory;            /* 0: none */
    int64_t time_ns;          /* 0: none */
} sb_limits;

static int64_t coarse_ns(void) {
    struct timespec ts;
#ifdef CLOCK_MONOTONIC_COARSE
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
#else
    clock_gettime(CLOCK_MONOTONIC, &ts);
#endif
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void sb_hook(lua_State *L, lua_Debug *ar);

/* Stop the frame: from now on the hook fires on every instruction of its
 * thread and raises, so a pcall in the script cannot swallow the stop. */
static void sb_trip(sb_frame *f, int why) {
    if (!f->tripped) f->tripped = why;
    if (lua_gethook(f->L) == sb_hook)
        lua_sethook(f->L, sb_hook, lua_gethookmask(f->L) | LUA_MASKCOUNT, 1);
}

/* The allocator wrapper: counts bytes and refuses growth past the current
 * call's cap. Blocks carry no header, so blocks allocated before it was
 * installed are freed and resized through the original allocator as usual.
 * Shrinking and freeing never fail, as Lua requires. */
static void *sb_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    sb_state *S = ud;
    size_t old = ptr ? osize : 0;
    if (nsize == 0) {
        S->orig(S->orig_ud, ptr, osize, 0);
        S->in_use = S->in_use > old ? S->in_use - old : 0;
        return NULL;
    }
    if (nsize > old && S->top != NULL &&
        (S->in_use >= S->limit || nsize - old > S->limit - S->in_use)) {
        sb_trip(S->top, SB_MEMORY);
        return NULL;
    }
    void *p = S->orig(S->orig_ud, ptr, osize, nsize);
    if (p != NULL) S->in_use = (S->in_use > old ? S->in_use - old : 0) + nsize;
    return p;
}

static sb_state *sb_state_of(lua_State *L) {
    void *ud;
    if (lua_getallocf(L, &ud) == sb_alloc) return ud;
    /* Someone wrapped the allocator after us: the registry still knows. */
    sb_state *S = NULL;
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &sb_state_key) == LUA_TUSERDATA)
        S = *(sb_state **)lua_touserdata(L, -1);
    lua_pop(L, 1);
    return S;
}

/* At lua_close (the anchor is only collected then): hand the state back to
 * the original allocator, unless another wrapper sits on top of ours, in
 * which case ours must stay valid for it and is left allocated. */
static int sb_state_gc(lua_State *L) {
    sb_state **pS = lua_touserdata(L, 1);
    void *ud;
    if (*pS != NULL && lua_getallocf(L, &ud) == sb_alloc && ud == *pS) {
        lua_setallocf(L, (*pS)->orig, (*pS)->orig_ud);
        free(*pS);
    }
    *pS = NULL;
    return 0;
}

/* Install the allocator wrapper once per lua_State. */
static sb_state *sb_state_install(lua_State *L) {
    sb_state *S = sb_state_of(L);
    if (S != NULL) return S;
    sb_state **pS = lua_newuserdatauv(L, sizeof *pS, 0);
    *pS = NULL;
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, sb_state_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_pushliteral(L, SB_STOP); /* raised by the hook: preallocated, so raising needs no memory */
    lua_rawsetp(L, LUA_REGISTRYINDEX, &sb_stop_key);
    S = malloc(sizeof *S);
    if (S == NULL) luaL_error(L, "not enough memory");
    S->orig = lua_getallocf(L, &S->orig_ud);
    S->in_use = (size_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024 + (size_t)lua_gc(L, LUA_GCCOUNTB, 0);
    S->limit = SIZE_MAX;
    S->top = NULL;
    S->skip = NULL;
    *pS = S;
    lua_rawsetp(L, LUA_REGISTRYINDEX, &sb_state_key);
    lua_setallocf(L, sb_alloc, S);
    return S;
}

/* Raise the stop value: a string made at install time, so this works when
 * the memory cap refuses every allocation. */
static int sb_raise_stop(lua_State *L) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &sb_stop_key);
    return lua_error(L);
}

/* Record where the script was when it stopped: the innermost Lua line that
 * is not the sandbox module's own plumbing (its copies and wrappers). */
static void sb_where(lua_State *L, sb_state *S, sb_frame *f) {
    lua_Debug ar;
    for (int level = 0; f->where[0] == '\0' && lua_getstack(L, level, &ar); level++)
        if (lua_getinfo(L, "Sl", &ar) && ar.currentline > 0 && ar.source != S->skip)
            snprintf(f->where, sizeof f->where, "%s:%d", ar.short_src, ar.currentline);
}

/* The count hook: charge the instructions run, check the wall clock every
 * SB_STEP instructions, and once tripped raise on every instruction. Line
 * and call events belong to the hook the host had (a debugger, coverage). */
static void sb_hook(lua_State *L, lua_Debug *ar) {
    sb_state *S = sb_state_of(L);
    sb_frame *f = S ? S->top : NULL;
    if (ar->event != LUA_HOOKCOUNT) {
        if (f != NULL && f->L == L && f->old_hook != NULL) f->old_hook(L, ar);
        return;
    }
    if (f == NULL) return; /* a sandbox coroutine resumed outside any call */
    if (!f->tripped) {
        int n = lua_gethookcount(L);
        f->left -= n;
        if (f->left <= 0)
            f->tripped = SB_INSTRUCTIONS;
        else if (f->deadline != SB_NONE && coarse_ns() >= f->deadline)
            f->tripped = SB_TIME;
        else {
            int want = f->left < SB_STEP ? (int)f->left : SB_STEP;
            if (want != n) lua_sethook(L, sb_hook, lua_gethookmask(L), want);
            return;
        }
    }
    sb_where(L, S, f);
    lua_sethook(L, sb_hook, lua_gethookmask(L) | LUA_MASKCOUNT, 1);
    sb_trip(f, f->tripped);
    sb_raise_stop(L);
}

/* core.sandbox_limits(instructions, memory, time, string_methods): the
 * limits of one box (0 for none); sandbox.lua validates the options. */
static int l_limits(lua_State *L) {
    lua_Integer instructions = luaL_checkinteger(L, 1);
    lua_Number memory = luaL_checknumber(L, 2);
    lua_Number seconds = luaL_checknumber(L, 3);
    luaL_checktype(L, 4, LUA_TTABLE);
    luaL_argcheck(L, instructions >= 0, 1, "expected a count >= 0");
    luaL_argcheck(L, memory >= 0 && memory <= 1e18, 2, "expected bytes >= 0");
    luaL_argcheck(L, seconds >= 0 && seconds <= 1e9, 3, "expected seconds >= 0");
    sb_state_install(L);
    sb_limits *lim = lua_newuserdatauv(L, sizeof *lim, 1);
    lim->instructions = instructions;
    lim->memory = (size_t)memory;
    lim->time_ns = (int64_t)(seconds * 1e9);
    if (seconds > 0 && lim->time_ns == 0) lim->time_ns = 1;
    lua_pushvalue(L, 4);
    lua_setiuservalue(L, -2, 1);
    luaL_setmetatable(L, SB_MT);
    return 1;
}

/* The message handler of box:call: {value, message, traceback}. Nothing of
 * the script runs here (no __tostring), and nothing is built once a limit
 * tripped, when allocation may be refused. */
static int sb_msgh(lua_State *L) {
    sb_state *S = sb_state_of(L);
    if (S != NULL && S->top != NULL && S->top->tripped) {
        sb_where(L, S, S->top); /* a memory stop is often never seen by the hook */
        return 1;
    }
    const char *msg;
    if (lua_type(L, 1) == LUA_TSTRING || lua_type(L, 1) == LUA_TNUMBER) {
        lua_pushvalue(L, 1); /* converted in place for a number: keep the value as it was */
        msg = lua_tostring(L, -1);
    } else if (lua_getmetatable(L, 1) && (luaL_getmetatable(L, EIDKIT_ERROR_MT), 1) &&
               lua_rawequal(L, -1, -2)) {
        lua_pushliteral(L, "message"); /* an eidkit error raised by a host function */
        msg = lua_rawget(L, 1) == LUA_TSTRING ? lua_tostring(L, -1) : "(eidkit error)";
    } else {
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    lua_createtable(L, SB_ERRTB, 0);
    lua_pushvalue(L, 1);
    lua_rawseti(L, -2, 1);
    lua_pushstring(L, msg);
    lua_rawseti(L, -2, 2);
    luaL_traceback(L, L, NULL, 1);
    lua_rawseti(L, -2, 3);
    return 1;
}

/* core.sandbox_call(limits, fn, ...) -> true, results...
 *   | false, code, message, where, traceback, capped
 * Runs fn(...) under the limits. code is "instructions", "memory", "time"
 * or "error"; message is the error's text for "error". The thread's hook,
 * the allocator's cap and the strings' __index are as before on return. */
static int l_call(lua_State *L) {
    sb_limits *lim = luaL_checkudata(L, 1, SB_MT);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    sb_state *S = sb_state_install(L);
    int nargs = lua_gettop(L) - 2;
    luaL_checkstack(L, 8, "sandbox call");

    /* Below fn: the handler, the string metatable and its __index. */
    lua_pushcfunction(L, sb_msgh);
    lua_pushliteral(L, "");
    if (!lua_getmetatable(L, -1)) lua_pushnil(L);
    lua_remove(L, -2);
    if (lua_istable(L, -1)) {
        lua_getfield(L, -1, "__index");
        lua_getiuservalue(L, 1, 1);
        lua_setfield(L, -3, "__index");
    } else {
        lua_pushnil(L);
    }
    lua_rotate(L, 2, 3); /* box, msgh, mt, old __index, fn, args... */
    const int base = 5;

    sb_frame f;
    memset(&f, 0, sizeof f);
    f.prev = S->top;
    f.L = L;
    f.left = lim->instructions > 0 ? lim->instructions : LUA_MAXINTEGER;
    f.deadline = lim->time_ns > 0 ? coarse_ns() + lim->time_ns : SB_NONE;
    f.limit = SIZE_MAX;
    if (lim->memory > 0)
        f.limit = S->in_use < SIZE_MAX - lim->memory ? S->in_use + lim->memory : SIZE_MAX;
    if (f.prev != NULL) {
        /* Restoring the enclosing call's hook afterwards restarts its count,
         * so it pays a full step now (never less than it ran), and its wall
         * clock is checked here as its hook may not fire between calls. */
        if (lua_gethook(L) == sb_hook) f.prev->left -= lua_gethookcount(L);
        if (f.prev->left <= 0) sb_trip(f.prev, SB_INSTRUCTIONS);
        if (f.prev->deadline != SB_NONE && coarse_ns() >= f.prev->deadline)
            sb_trip(f.prev, SB_TIME);
        f.tripped = f.prev->tripped;
        if (f.prev->left < f.left) f.left = f.prev->left, f.capped |= 1 << SB_INSTRUCTIONS;
        if (f.prev->deadline < f.deadline) f.deadline = f.prev->deadline, f.capped |= 1 << SB_TIME;
        if (S->limit < f.limit) f.limit = S->limit, f.capped |= 1 << SB_MEMORY;
    }
    lua_Integer start_left = f.left;

    lua_Hook old_hook = lua_gethook(L);
    int old_mask = lua_gethookmask(L), old_count = lua_gethookcount(L);
    f.old_hook = old_hook == sb_hook ? NULL : old_hook;
    size_t old_limit = S->limit;
    S->top = &f;
    S->limit = f.limit;
    if (!f.tripped && f.left <= 0) f.tripped = SB_INSTRUCTIONS;
    lua_sethook(L, sb_hook, (old_mask & ~LUA_MASKCOUNT) | LUA_MASKCOUNT,
                f.tripped ? 1 : (f.left < SB_STEP ? (int)f.left : SB_STEP));

    int status = lua_pcall(L, nargs, LUA_MULTRET, 2);

    S->top = f.prev;
    S->limit = old_limit;
    int ours = lua_gethook(L) == sb_hook;
    if (ours) lua_sethook(L, old_hook, old_mask, old_count);
    if (lua_istable(L, 3)) { /* put the strings' __index back */
        lua_pushliteral(L, "__index");
        lua_pushvalue(L, 4);
        lua_rawset(L, 3);
    }
    if (f.prev != NULL) { /* the enclosing call pays for what this one ran */
        f.prev->left -= start_left - (f.left > 0 ? f.left : 0);
        if (f.prev->left <= 0) sb_trip(f.prev, SB_INSTRUCTIONS);
    }

    if (status == LUA_OK) {
        lua_pushboolean(L, 1);
        lua_replace(L, base - 1);
        return lua_gettop(L) - base + 2;
    }
    if (!ours && !f.tripped) {
        /* Another hook replaced ours mid-call (the host's SIGINT handler
         * raising "interrupted!"): that error is the host's, pass it on. */
        if (lua_istable(L, -1)) lua_rawgeti(L, -1, 1);
        return lua_error(L);
    }
    int err = lua_gettop(L);
    lua_pushboolean(L, 0);
    if (f.tripped) {
        lua_pushstring(L, sb_codes[f.tripped]);
        lua_pushnil(L);
    } else if (status == LUA_ERRMEM) {
        lua_pushliteral(L, "memory");
        lua_pushliteral(L, "not enough memory");
    } else {
        lua_pushliteral(L, "error");
        if (lua_istable(L, err))
            lua_rawgeti(L, err, 2);
        else if (lua_type(L, err) == LUA_TSTRING)
            lua_pushvalue(L, err); /* e.g. "error in error handling" */
        else
            lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, err));
    }
    if (f.where[0] != '\0')
        lua_pushstring(L, f.where);
    else
        lua_pushnil(L);
    if (!f.tripped && lua_istable(L, err))
        lua_rawgeti(L, err, 3);
    else
        lua_pushnil(L);
    lua_pushboolean(L, f.tripped && (f.capped & (1 << f.tripped)));
    return 6;
}

/* core.sandbox_arm(co [, force]): called by the sandbox's coroutine functions before
 * a thread runs; gives it the count hook and refuses to run it once the
 * current call tripped. Outside a call it does nothing. */
static int l_arm(lua_State *L) {
    lua_State *co = lua_tothread(L, 1);
    luaL_argexpected(L, co != NULL, 1, "thread");
    sb_state *S = sb_state_of(L);
    sb_frame *f = S ? S->top : NULL;
    if (f == NULL) return 0;
    if (f->tripped) {
        lua_sethook(L, sb_hook, lua_gethookmask(L) | LUA_MASKCOUNT, 1);
        return sb_raise_stop(L);
    }
    /* A thread the script made gets our hook even if a coverage tool gave
     * it one; a thread from elsewhere keeps a hook it has. */
    lua_Hook h = lua_gethook(co);
    if (h == NULL || (h != sb_hook && lua_toboolean(L, 2)))
        lua_sethook(co, sb_hook, LUA_MASKCOUNT, SB_STEP);
    return 0;
}

/* core.sandbox_skip(fn): fn's chunk is the sandbox module itself, whose
 * lines are never reported as where a script stopped. */
static int l_skip(lua_State *L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    sb_state *S = sb_state_install(L);
    lua_Debug ar;
    lua_pushvalue(L, 1);
    lua_getinfo(L, ">S", &ar);
    S->skip = ar.source;
    lua_pushvalue(L, 1); /* anchored, so the source string stays alive */
    lua_rawsetp(L, LUA_REGISTRYINDEX, &sb_skip_key);
    return 0;
}

/* core.sandbox_tripped() -> whether the innermost call hit a limit. The
 * sandbox's xpcall asks before running the script's handler: when the hook
 * raised, the handler would run with hooks off, out of reach of the limits. */
static int l_tripped(lua_State *L) {
    sb_state *S = sb_state_of(L);
    lua_pushboolean(L, S != NULL && S->top != NULL && S->top->tripped);
    return 1;
}

/* core.sandbox_info() -> {in_use = bytes, depth = calls running, limit =
 * bytes or nil}: for tests and for the host's diagnostics. */
static int l_info(lua_State *L) {
    sb_state *S = sb_state_of(L);
    lua_createtable(L, 0, 3);
    if (S == NULL) return 1;
    lua_pushinteger(L, (lua_Integer)S->in_use);
    lua_setfield(L, -2, "in_use");
    int depth = 0;
    for (sb_frame *f = S->top; f != NULL; f = f->prev)
        depth++;
    lua_pushinteger(L, depth);
    lua_setfield(L, -2, "depth");
    if (S->limit != SIZE_MAX) {
        lua_pushinteger(L, (lua_Integer)S->limit);
        lua_setfield(L, -2, "limit");
    }
    lua_pushboolean(L, lua_gethook(L) == sb_hook);
    lua_setfield(L, -2, "hooked");
    return 1;
}

/* Deeper than cjson decodes by default: no host value nests further, and
 * the copy recurses on the C stack. */
#define COPY_MAX_DEPTH 1000

/* Replace the table at the top of the stack with its copy; seen (an
 * absolute index) maps each table copied so far to its copy. */
static void copy_table(lua_State *L, int seen, int depth) {
    if (depth > COPY_MAX_DEPTH)
        luaL_error(L, "sandbox: a table nested deeper than %d levels", COPY_MAX_DEPTH);
    luaL_checkstack(L, 8, "sandbox copy");
    int src = lua_gettop(L);
    lua_pushvalue(L, src);
    if (lua_rawget(L, seen) != LUA_TNIL) { /* shared or cyclic: its one copy */
        lua_replace(L, src);
        return;
    }
    lua_pop(L, 1);
    /* Sized from the source: filling an empty table rehashed it at 1, 2, 4,
     * ... entries, most of what the copy cost in Lua. */
    lua_Unsigned narr = lua_rawlen(L, src);
    int nrec = 0;
    lua_pushnil(L);
    while (lua_next(L, src)) {
        nrec++;
        lua_pop(L, 1);
    }
    int na = narr > (lua_Unsigned)nrec ? nrec : (int)narr;
    lua_createtable(L, na, nrec - na);
    int dst = src + 1;
    lua_pushvalue(L, src);
    lua_pushvalue(L, dst);
    lua_rawset(L, seen);
    lua_pushnil(L);
    while (lua_next(L, src)) { /* key, value */
        lua_pushvalue(L, -2);
        if (lua_type(L, -1) == LUA_TTABLE) copy_table(L, seen, depth + 1);
        lua_pushvalue(L, -2);
        if (lua_type(L, -1) == LUA_TTABLE) copy_table(L, seen, depth + 1);
        lua_rawset(L, dst);
        lua_pop(L, 1); /* the value; the key stays for lua_next */
    }
    lua_replace(L, src);
}

/* core.sandbox_copy(v) -> v, or for a table a copy: tables inside (keys and
 * values) copied too, shared and cyclic ones kept shared and cyclic, no
 * metatables (a script cannot change or hook the host's tables), other
 * values as they are. What crosses into every box call; in C because a
 * request view crosses on every authorize of eidkit serve. */
static int l_copy(lua_State *L) {
    luaL_checkany(L, 1);
    lua_settop(L, 1);
    if (lua_type(L, 1) != LUA_TTABLE) return 1;
    lua_createtable(L, 0, 4); /* seen, at 2 */
    lua_pushvalue(L, 1);
    copy_table(L, 2, 1);
    return 1;
}

void eidkit_open_sandbox(lua_State *L) {
    if (luaL_newmetatable(L, SB_MT)) {
        lua_pushliteral(L, "locked");
        lua_setfield(L, -2, "__metatable");
    }
    lua_pop(L, 1);
    static const luaL_Reg funcs[] = {
        {"sandbox_limits", l_limits},   {"sandbox_call", l_call},
        {"sandbox_arm", l_arm},         {"sandbox_skip", l_skip},
        {"sandbox_tripped", l_tripped}, {"sandbox_info", l_info},
        {"sandbox_copy", l_copy},       {NULL, NULL},
    };
    luaL_setfuncs(L, funcs, 0);
}
