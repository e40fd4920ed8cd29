-- core.poller (bindings/poller.c): one wait over descriptors and signals.
local core = require "eidkit.core"

describe("core.poller", function()
  it("waits until a watched descriptor is readable, or the timeout", function()
    local p <close> = core.poller()
    local srv = core.http_server { handler = function() return {} end }
    p:add(srv:fd())
    p:add(srv:fd()) -- again: no change
    local t0 = core.monotonic()
    assert.equals(0, p:wait(50))
    assert.is_true(core.monotonic() - t0 >= 0.04)
    os.execute("curl -s -o /dev/null http://127.0.0.1:" .. srv:port() .. "/ & ")
    assert.equals(1, p:wait(5000)) -- the connection makes MHD's set readable
    p:remove(srv:fd())
    p:remove(srv:fd())
    srv:close()
  end)

  it("reads watched signals through its set, so none is lost between a check and the wait", function()
    local p = core.poller()
    p:signals({ "USR1", "HUP" }, { "USR2" })
    assert.is_nil(p:signal())
    os.execute("kill -USR1 $PPID; kill -USR2 $PPID") -- the shell's parent: this process
    assert.equals(1, p:wait(2000))
    assert.equals("USR1", p:signal())
    assert.is_nil(p:signal())
    assert.equals(0, p:wait(0)) -- USR2 was ignored, not queued
    assert.has_error(function() p:signals { "HUP" } end, "eidkit.Poller:signals: already called")
    p:close()
    p:close()
    assert.equals("eidkit.Poller (closed)", tostring(p))
    assert.has_error(function() p:wait(0) end, "attempt to use a closed eidkit.Poller")
  end)

  it("sees a signal that came after its last wait at the next wait, not before", function()
    local p <close> = core.poller()
    p:signals({ "USR1" })
    assert.equals(0, p:wait(0))
    os.execute("kill -USR1 $PPID")
    -- p:signal reads the signalfd only after a wait saw it readable (a read
    -- on every turn of a busy loop was a system call for nothing).
    assert.is_nil(p:signal())
    assert.equals(1, p:wait(2000))
    assert.equals("USR1", p:signal())
    assert.is_nil(p:signal())
    assert.equals(0, p:wait(0))
  end)

  it("raises on misuse", function()
    local p <close> = core.poller()
    assert.has_error(function() p:add(-1) end)
    assert.has_error(function() p:wait(-2) end)
    assert.has_error(function() p:signals { "NOPE" } end)
    assert.has_error(function() p:add(999999) end) -- not open: EBADF
  end)
end)
