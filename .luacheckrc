-- luacheck configuration: the pure-Lua modules must not create globals.
std = "lua54"
max_line_length = false  -- table-driven specs keep one case per line
files["spec/"] = { std = "+busted" }
exclude_files = { "build*/", "node/" }
