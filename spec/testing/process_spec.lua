-- core.spawn and eidkit.Process (bindings/process.c): child processes without
-- a shell, for eidkit.testing.
local scratch = require "support.scratch"
local core = require "eidkit.core"
local read = require("support.proc").read

-- A child that exited but was not reaped shows as state Z in /proc.
local function zombie_or_alive(pid)
  local stat = read("/proc/" .. pid .. "/stat")
  return stat ~= nil
end

describe("core.spawn", function()
  local tmp
  before_each(function() tmp = scratch.file() end)
  after_each(function()
    for _, ext in ipairs { "", ".out", ".err", ".in" } do os.remove(tmp .. ext) end
  end)

  it("runs a program from PATH and reports its exit status", function()
    local p = assert(core.spawn { "sh", "-c", "exit 3" })
    assert.is_true(math.type(p:pid()) == "integer" and p:pid() > 0)
    assert.same({ 3, "exit" }, { p:wait(5) })
    assert.same({ 3, "exit" }, { p:wait() }) -- the status is kept
    assert.matches("^eidkit.Process %(pid %d+, exited, status 3%)$", tostring(p))
    p:close()
  end)

  it("redirects stdin, stdout and stderr to files", function()
    local f = assert(io.open(tmp .. ".in", "wb"))
    f:write("hello\n")
    f:close()
    local p = assert(core.spawn({ "sh", "-c", "read x; echo out:$x; echo err >&2" },
      { stdin = tmp .. ".in", stdout = tmp .. ".out", stderr = tmp .. ".err" }))
    assert.same({ 0, "exit" }, { p:wait(5) })
    assert.equal("out:hello\n", read(tmp .. ".out"))
    assert.equal("err\n", read(tmp .. ".err"))
  end)

  it("adds, overrides and removes environment variables, or starts empty", function()
    local p = assert(core.spawn({ "sh", "-c", 'echo "$EIDKIT_T1|${HOME-unset}|${PATH:+path}"' },
      { env = { EIDKIT_T1 = "one two", HOME = false }, stdout = tmp .. ".out" }))
    assert.same({ 0, "exit" }, { p:wait(5) })
    assert.equal("one two|unset|path\n", read(tmp .. ".out"))
    p = assert(core.spawn({ "/usr/bin/env" },
      { clear_env = true, env = { A = "a" }, stdout = tmp .. ".out" }))
    assert.same({ 0, "exit" }, { p:wait(5) })
    assert.equal("A=a\n", read(tmp .. ".out"))
  end)

  it("returns nil, err for a program that cannot run or a path that cannot open", function()
    local p, err = core.spawn { "eidkit-no-such-program-xyz" }
    assert.is_nil(p)
    assert.equal("spawn", err.code)
    assert.equal("spawn: cannot run 'eidkit-no-such-program-xyz': No such file or directory",
      tostring(err))
    p, err = core.spawn({ "true" }, { stdout = "/nonexistent-dir/x" })
    assert.is_nil(p)
    assert.equal("stdout: /nonexistent-dir/x: No such file or directory", err.message)
  end)

  it("raises on misuse", function()
    local cases = {
      { { {} }, "argv: expected a non-empty list of strings" },
      { { { "sh", 1 } }, "argv[2]: expected string, got number" },
      { { { "" } }, "argv[1]: expected a program name" },
      { { { "sh" }, { bogus = 1 } }, "unknown option 'bogus'" },
      { { { "sh" }, { stdout = 1 } }, "stdout: expected a file path, got number" },
      { { { "sh" }, { env = { A = 1 } } }, "env.A: expected a string or false" },
      { { { "sh" }, { env = { ["A=B"] = "x" } } }, "env: bad variable name 'A=B'" },
    }
    for _, c in ipairs(cases) do
      local ok, msg = pcall(core.spawn, table.unpack(c[1]))
      assert.is_false(ok)
      assert.truthy(msg:find(c[2], 1, true), msg)
    end
  end)
end)

describe("eidkit.Process", function()
  it("times out a wait, then kills by name or number", function()
    local p = assert(core.spawn { "sleep", "30" })
    local t0 = core.monotonic()
    local st, err = p:wait(0.1)
    assert.is_nil(st)
    assert.equal("timeout", err.code)
    assert.is_true(core.monotonic() - t0 < 2)
    assert.is_true(p:running())
    assert.is_true(p:kill("SIGUSR1"))
    assert.same({ 10, "signal" }, { p:wait(5) })
    assert.is_false(p:running())
    local again, e2 = p:kill "TERM" -- never signals a reaped (maybe reused) pid
    assert.is_nil(again)
    assert.equal("exited", e2.code)
    local q = assert(core.spawn { "sleep", "30" })
    assert.is_true(q:kill(9))
    assert.same({ 9, "signal" }, { q:wait(5) })
    assert.has_error(function() q:kill "NOPE" end,
      "bad argument #1 to 'kill' (unknown signal 'NOPE')")
  end)

  it("close sends TERM, then KILL after the grace period, and reaps", function()
    local p = assert(core.spawn { "sleep", "30" })
    local pid = p:pid()
    assert.same({ 15, "signal" }, { p:close() })
    assert.is_false(zombie_or_alive(pid))
    assert.same({ 15, "signal" }, { p:close() }) -- idempotent
    assert.has_error(function() p:wait() end, "attempt to use a closed eidkit.Process")
    assert.matches("closed", tostring(p))

    local stubborn = assert(core.spawn { "sh", "-c", "trap '' TERM; sleep 30" })
    core.sleep(0.2) -- let the shell install its trap
    local t0 = core.monotonic()
    assert.same({ 9, "signal" }, { stubborn:close(0.2) })
    assert.is_true(core.monotonic() - t0 < 2)
  end)

  it("reaps on __close and __gc: no zombies left", function()
    local pids = {}
    do
      local p <close> = assert(core.spawn { "sleep", "30" })
      pids[1] = p:pid()
    end
    assert.is_false(zombie_or_alive(pids[1]))
    local quick = assert(core.spawn { "true" })
    pids[2] = quick:pid()
    core.sleep(0.1)
    assert.is_true(zombie_or_alive(pids[2])) -- exited, not yet reaped
    quick = nil -- luacheck: ignore 311
    collectgarbage()
    collectgarbage()
    assert.is_false(zombie_or_alive(pids[2]))
  end)
end)

describe("die_with_parent", function()
  local proc = require "support.proc"

  local function state(pid)
    local stat = read("/proc/" .. pid .. "/stat")
    return stat and stat:match("^%d+ %b() (%a)")
  end

  it("starts the child like the default path: redirections, env, exit status", function()
    local out = scratch.file()
    local p = assert(core.spawn({ "sh", "-c", 'echo "$EIDKIT_T2"; exit 4' },
      { env = { EIDKIT_T2 = "linked" }, stdout = out, die_with_parent = true }))
    assert.same({ 4, "exit" }, { p:wait(5) })
    assert.equal("linked\n", read(out))
    os.remove(out)
    local q, err = core.spawn({ "eidkit-no-such-program-xyz" }, { die_with_parent = true })
    assert.is_nil(q)
    assert.equal("spawn: cannot run 'eidkit-no-such-program-xyz': No such file or directory",
      tostring(err))
  end)

  it("stops the child when the parent is killed without closing it", function()
    local script, pidfile = scratch.file(), scratch.file()
    local f = assert(io.open(script, "wb"))
    f:write(([[
      local core = require "eidkit.core"
      local c = assert(core.spawn({ "sleep", "30" }, { die_with_parent = true }))
      local f = assert(io.open(%q, "wb")) f:write(c:pid(), "\n") f:close()
      core.sleep(30)
    ]]):format(pidfile))
    f:close()
    local parent = assert(core.spawn({ proc.bin(), "run", script }, { stdout = "/dev/null" }))
    local child
    for _ = 1, 200 do
      child = tonumber((read(pidfile) or ""):match("^(%d+)\n"))
      if child then break end
      core.sleep(0.01)
    end
    assert.is_number(child)
    -- The child is alive and asleep in sleep(1): wait for that state, since
    -- right after the pid is written it may still be running (R) its exec.
    local seen
    for _ = 1, 500 do
      seen = state(child)
      if seen == "S" then break end
      core.sleep(0.01)
    end
    assert.equal("S", seen)
    assert.is_true(parent:kill("KILL"))
    assert.same({ 9, "signal" }, { parent:wait(5) })
    local gone = false
    for _ = 1, 200 do
      local st = state(child)
      if st == nil or st == "Z" then gone = true break end -- dead (reaped or awaiting its new parent)
      core.sleep(0.01)
    end
    assert.is_true(gone)
    os.remove(script)
    os.remove(pidfile)
  end)
end)

describe("core.executable", function()
  it("names the running program", function()
    local path = assert(core.executable())
    assert.matches("^/", path)
    if package.preload["eidkit.core"] then assert.matches("eidkit$", path) end
  end)
end)
