/* Shared by the files of the Lua 5.4 module eidkit.core (one file per class). */
#ifndef EIDKIT_LUA_H
#define EIDKIT_LUA_H

#include "eidkit/eidkit.h"
#include "eidkit/ledger.h"

#include <lauxlib.h>
#include <lua.h>

#if defined(__GNUC__)
#define EIDKIT_LUA_EXPORT __attribute__((visibility("default")))
#else
#define EIDKIT_LUA_EXPORT
#endif

#define EIDKIT_SIGNER_MT "eidkit.Signer"
#define EIDKIT_ERROR_MT  "eidkit.Error"

/* The module's entry point; the eidkit program preloads it. */
EIDKIT_LUA_EXPORT int luaopen_eidkit_core(lua_State *L);

/* Push a runtime-failure value: nil, {code=, message=} with __tostring.
 * Returns 2 (the number of values pushed). */
int eidkit_push_fail(lua_State *L, const char *code, const char *message);

/* eidkit_push_fail for a failed eid_status: code is eid_status_code(st), the
 * one mapping the C core defines (core.status_codes exports it); message
 * NULL or "" stands for eid_strerror(st). EID_E_LEDGER_UNAVAILABLE is
 * retryable. Returns 2. */
int eidkit_push_status(lua_State *L, eid_status st, const char *message);

/* Create the class `name` once per state: its metatable gets the meta
 * functions (__gc, __close, __tostring, ...) and __index = a table of the
 * methods. Leaves the metatable on the stack. */
void eidkit_new_class(lua_State *L, const char *name, const luaL_Reg *meta,
                      const luaL_Reg *methods);

/* Register the signer class and the module-level sign functions into the
 * module table at the top of the stack. */
void eidkit_open_signer(lua_State *L);
void eidkit_open_ledger_pool(lua_State *L); /* eidkit.LedgerPool, core.ledger_pool */
void eidkit_open_httpd(lua_State *L);
void eidkit_open_ledger(lua_State *L);  /* eidkit.Ledger, core.ledger_open */
void eidkit_open_client(lua_State *L);  /* eidkit.Client, core.client_new */
void eidkit_open_retry(lua_State *L);   /* core.retry_decide (opened by eidkit_open_client) */
void eidkit_open_sandbox(lua_State *L); /* core.sandbox_*: limits for merchant scripts */
void eidkit_open_process(lua_State *L); /* core.spawn: child processes for eidkit.testing */
void eidkit_open_poller(lua_State *L);  /* core.poller: one wait over fds and signals */
void eidkit_open_crypto(lua_State *L);  /* eidkit.Key, core.key_load, ciphers, base64 */

/* ---------------------------------------------------------- ledger jobs
 * One ledger operation in three steps, shared by eidkit.Ledger (all three at
 * once, on the Lua thread) and eidkit.LedgerPool (read and push on the Lua
 * thread, run on a worker): bindings/ledger.c has the one copy of how Lua
 * arguments become C inputs and C results become Lua values. */
typedef enum eidkit_ledger_op {
    EIDKIT_LEDGER_ISSUE,
    EIDKIT_LEDGER_CLAIM,
    EIDKIT_LEDGER_CONSUME,
    EIDKIT_LEDGER_GET,
    EIDKIT_LEDGER_RECORD,
    EIDKIT_LEDGER_DUE,
    EIDKIT_LEDGER_EXPORT,
    EIDKIT_LEDGER_EXPIRE,
    EIDKIT_LEDGER_STATS,
    EIDKIT_LEDGER_PAYLOAD,
    EIDKIT_LEDGER_TAKE,
    EIDKIT_LEDGER_ATTEMPTS,
    EIDKIT_LEDGER_GIVE
} eidkit_ledger_op;

typedef struct eidkit_ledger_job {
    eidkit_ledger_op op;
    int64_t now; /* the Lua clock when read (0: none, the ledger's own) */
    /* Inputs: pointers into the Lua arguments, or into `owned` once
     * eidkit_ledger_job_own copied them. */
    const char *token, *subject;
    eid_ledger_issue_params issue;
    eid_ledger_outcome outcome;
    size_t limit;
    int64_t from, to, at;
    const char *key; /* take: the bucket */
    double rate, burst;
    int64_t now_ms;
    /* Outputs, set by eidkit_ledger_job_run. */
    eid_status st;
    eid_error err;
    eid_ledger_entry entry;
    eid_ledger_entry *list; /* due, export: malloc'd */
    size_t n;
    eid_ledger_counts counts;
    uint64_t expired, abandoned;
    int allowed; /* take */
    double retry_after;
    char *bytes;                  /* payload: malloc'd */
    eid_ledger_attempt *attempts; /* attempts: malloc'd, n of them */
    size_t len;
    char *owned;
    int omit_request_ids; /* the ledger was opened with request_ids = false */
} eidkit_ledger_job;

/* The Lua method name of op ("claim"). */
const char *eidkit_ledger_op_name(eidkit_ledger_op op);

/* Read the Lua clock of the object at idx (its first user value, when a
 * function) into *now; raises when it returns anything but Unix seconds. */
void eidkit_ledger_read_clock(lua_State *L, int idx, int64_t *now);

/* Check op's arguments (index 2 on, the object at 1) and fill j's inputs;
 * misuse raises naming the argument. record calls the object's payload
 * encoder (its second user value) here. */
/* opts.request_ids at idx: 0 when the option is false (entries then come
 * without their RequestIds list), else 1. */
int eidkit_ledger_read_request_ids(lua_State *L, int idx);
void eidkit_ledger_job_read(lua_State *L, eidkit_ledger_op op, eidkit_ledger_job *j);

/* Copy j's inputs into one allocation of its own, so the job outlives the
 * Lua arguments. 0, or -1 without memory. */
int eidkit_ledger_job_own(eidkit_ledger_job *j);

/* Run j on l: plain C, no Lua; any thread that owns l. */
void eidkit_ledger_job_run(eid_ledger *l, eidkit_ledger_job *j);

/* When j failed with misuse the C ledger found (a token or field it
 * refuses): the argument position at fault, counted as the method receives
 * it (the object is 1), with the message naming the field as the caller
 * wrote it in msg. 0 otherwise. */
int eidkit_ledger_job_misuse(const eidkit_ledger_job *j, char *msg, size_t cap);

/* Push j's results as the method returns them (1 value, or nil, err) and
 * free its outputs, also when pushing raises. */
int eidkit_ledger_job_push(lua_State *L, eidkit_ledger_job *j);

/* Free what j owns (inputs copied by _own, outputs); j stays valid. */
void eidkit_ledger_job_clear(eidkit_ledger_job *j);

/* The options of core.ledger_open(url, opts) at idx into *o; *has_clock and
 * *has_encoder tell whether opts has a clock and a payload_encoder. The
 * payload key stays valid while opts does. Raises on misuse. */
void eidkit_ledger_read_options(lua_State *L, int idx, eid_ledger_options *o, int *has_clock,
                                int *has_encoder);

/* The error an eid_ledger_open failure raises or returns, as ledger_open does. */
int eidkit_ledger_open_failed(lua_State *L, eid_status st, const eid_error *err);

#endif
