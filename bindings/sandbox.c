/* Limits for merchant policy scripts (issue 6): instruction budget, memory
 * cap, wall clock. Filled in by the sandbox work; registered here so the
 * module's wiring is stable. */
#include "eidkit_lua.h"

void eidkit_open_sandbox(lua_State *L) { (void)L; }
