/*
 * libFuzzer: the simulator's request handling from any bytes, in an embedded
 * Lua 5.4 with the real eidkit.sim and eidkit.core. The first byte picks the
 * action (or a control-API path); the rest is the JSON body, signed with the
 * simulator's demo credential so that parameter validation is what is
 * reached. Properties (spec/fuzz/sim_check.lua): sim:handle never fails
 * inside (no 500), answers API calls 200 with a JSON Response carrying a
 * RequestId, and control calls with JSON.
 */
#define CHECK_FILE "sim_check.lua"
#include "lua_harness.h"
