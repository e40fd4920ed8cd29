/*
 * eidkit: what a Lua host needs from C besides signing, in one place for
 * both hosts: the clocks, a sleep, and the ledger's named limits and codes. The Lua 5.4
 * module (eidkit.core.now/monotonic/sleep/limits) and the LuaJIT FFI
 * (eidkit.host through eidkit.ffi) call these same functions, so a limit or
 * a clock is defined once.
 *
 * Plain data and system calls, no state: every function is thread-safe and
 * allocates nothing.
 */
#ifndef EIDKIT_HOST_H
#define EIDKIT_HOST_H

#include "eidkit.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Unix time in seconds with sub-second resolution (CLOCK_REALTIME). */
EID_API double eid_clock_now(void);

/* Seconds on a clock that never jumps (CLOCK_MONOTONIC), for intervals. */
EID_API double eid_clock_monotonic(void);

/* Blocks the calling thread for seconds (0..86400, resumed after signals).
 * EID_E_INVALID_ARG for a value outside that range or NaN, nothing slept.
 * Blocks: never call it from an event loop (nginx uses ngx.sleep). */
EID_API eid_status eid_sleep(double seconds);

/* One named value of a C macro: name is the macro's name without its
 * prefix, in lower case ("token_max" for EID_LEDGER_TOKEN_MAX). */
typedef struct eid_named_value {
    const char *name;
    int64_t value;
} eid_named_value;

/* The ledger's input limits and defaults (eidkit/ledger.h), as a static
 * table; *n receives its length. Never NULL. */
EID_API const eid_named_value *eid_limits(size_t *n);

/* Tencent's Text.ErrCodes the ledger gives a meaning to (EID_ERRCODE_* in
 * eidkit/ledger.h: "expired", "pending"), as a static table; *n receives its
 * length. Never NULL. */
EID_API const eid_named_value *eid_errcode_names(size_t *n);

#ifdef __cplusplus
}
#endif

#endif /* EIDKIT_HOST_H */
