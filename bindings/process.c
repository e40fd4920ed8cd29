/* Child processes (posix_spawn) for eidkit.testing: start eidkit sim, signal
 * it, wait for it. Filled in by the testing-kit work. */
#include "eidkit_lua.h"

void eidkit_open_process(lua_State *L) { (void)L; }
