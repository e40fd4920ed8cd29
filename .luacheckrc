-- luacheck configuration: the pure-Lua modules must not create globals.
std = "lua54"
max_line_length = false  -- table-driven specs keep one case per line
files["spec/"] = { std = "+busted" }
exclude_files = { "build*/", "node/" }
-- Files OpenResty loads: only globals that Lua 5.1-5.4 and LuaJIT all have.
for _, f in ipairs { "lua/eidkit/gateway.lua", "lua/eidkit/metrics.lua", "lua/eidkit/limiter.lua",
    "lua/eidkit/compat.lua", "lua/eidkit/ffi.lua", "lua/eidkit/client_params.lua",
    "lua/eidkit/gateway/settings.lua" } do
  files[f] = { std = "min" }
end
-- require "eidkit" and the flow with its policy, under LuaJIT too (issue 15).
for _, f in ipairs { "lua/eidkit/init.lua", "lua/eidkit/host.lua", "lua/eidkit/flow.lua",
    "lua/eidkit/policy.lua", "lua/eidkit/errors.lua", "lua/eidkit/policy/", "lua/eidkit/credentials/" } do
  files[f] = { std = "min" }
end
-- Served by nginx (content_by_lua_file) in bench/openresty/sign.
files["bench/openresty/sign_worker.lua"] = { std = "min", read_globals = { "ngx", "jit" } }
-- LuaJIT only, FFI: eidkit.ffi.retry and the runner that drives it.
files["lua/eidkit/ffi/retry.lua"] = { std = "min" }
files["spec/ffi/retry_cases_ffi.lua"] = { std = "min", read_globals = { "jit" } }
-- Run inside nginx workers: the nginx API is the `ngx` global there.
files["lua/eidkit/openresty/"] = { std = "min", globals = { "ngx" } } -- ngx.var and ngx.ctx are written
-- Run under LuaJIT by spec/openresty/flow_luajit_spec.lua (and in nginx).
files["spec/openresty/flow_luajit_check.lua"] = { std = "min", read_globals = { "jit" } }
files["spec/support/memledger.lua"] = { std = "min" }
-- Run under LuaJIT by spec/openresty/gateway_settings_spec.lua.
files["spec/openresty/gateway_settings_check.lua"] = { std = "min", read_globals = { "jit" } }
-- The OpenResty ledger (issue 15): LuaJIT in an nginx worker only.
files["lua/eidkit/openresty/ledger.lua"] = { std = "luajit", read_globals = { "ngx" } }
files["spec/support/orledger_worker.lua"] = { std = "luajit", globals = { "ngx" } }
