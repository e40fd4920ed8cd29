/* Shared by the files of the Lua 5.4 module eidkit.core (one file per class). */
#ifndef EIDKIT_LUA_H
#define EIDKIT_LUA_H

#include "eidkit/eidkit.h"

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
void eidkit_open_httpd(lua_State *L);
void eidkit_open_ledger(lua_State *L);  /* eidkit.Ledger, core.ledger_open */
void eidkit_open_client(lua_State *L);  /* eidkit.Client, core.client_new */
void eidkit_open_sandbox(lua_State *L); /* core.sandbox_*: limits for merchant scripts */
void eidkit_open_process(lua_State *L); /* core.spawn: child processes for eidkit.testing */
void eidkit_open_poller(lua_State *L);  /* core.poller: one wait over fds and signals */

#endif
