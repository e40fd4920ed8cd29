-- The client without blocking, as a host's event loop drives it: the C
-- object's submit/perform/next/fd/timeout (bindings/client.c, with
-- eid_client_fd/eid_client_timeout) and eidkit.client's one seam, `await`.
-- Against a real `eidkit sim` on loopback; each part twice, the second time
-- with thread = true (libcurl on the client's own thread).
local core = require "eidkit.core"
local client_mod = require "eidkit.client"
local simproc = require "support.simproc"
local simctl = require "support.simctl"
local sim_mod = require "eidkit.sim"

local demo = sim_mod.demo
local TOKEN_BODY = '{"MerchantId":"' .. demo.MerchantId .. '"}'

local threaded -- set by each pass of the loop below, for the specs it defines

local function raw_client(s, extra)
  local o = { endpoint = s.url, max_attempts = 1, thread = threaded }
  for k, v in pairs(extra or {}) do o[k] = v end
  local c = core.client_new(o)
  c:set_credentials(demo.SecretId, demo.SecretKey)
  return c
end

-- Drive c until n results came back; returns them by id: {text, attempts} or {nil, err}.
local function collect(c, n, limit)
  local p <close> = core.poller()
  p:add(c:fd())
  local out, got, t0 = {}, 0, core.monotonic()
  while got < n do
    assert(core.monotonic() - t0 < (limit or 10), "the calls did not finish in time")
    p:wait(c:timeout())
    c:perform(0)
    while true do
      local id, a, b = c:next()
      if not id then break end
      out[id] = { a, b }
      got = got + 1
    end
  end
  return out
end

for _, thread in ipairs { false, true } do
  describe(thread and "eidkit.Client{thread = true} without blocking" or "eidkit.Client without blocking", function()
    local s
    before_each(function() threaded = thread end)
    lazy_setup(function() s = simproc.start { "--seed", "11" } end)
    lazy_teardown(function() if s then simproc.stop(s) end end)
    after_each(function() simctl.clear(s) end)

    describe("submit, perform, next", function()
      it("returns what call returns, under increasing ids", function()
        local c = raw_client(s)
        local ok_id = c:submit("GetEidToken", TOKEN_BODY)
        local bad_id = c:submit("GetEidResult", '{"EidToken":"nope"}')
        assert.same({ 1, 2 }, { ok_id, bad_id })
        local out = collect(c, 2)
        assert.matches('"EidToken"', out[ok_id][1])
        assert.equals(1, out[ok_id][2])
        local sync_text, sync_err = c:call("GetEidResult", '{"EidToken":"nope"}')
        assert.is_nil(out[bad_id][1])
        assert.is_nil(sync_text)
        for _, k in ipairs { "code", "http_status", "attempts", "retryable" } do
          assert.equals(sync_err[k], out[bad_id][2][k])
        end
        assert.equals("eidkit.Error", getmetatable(out[bad_id][2]).__name)
        assert.is_nil(c:next())
        c:close()
      end)

      it("runs 20 slow calls at once: about one latency, not twenty", function()
        simctl.faults(s, { { Action = "GetEidToken", Kind = "latency", Ms = 400 } })
        local c = raw_client(s)
        local t0 = core.monotonic()
        for _ = 1, 20 do c:submit("GetEidToken", TOKEN_BODY) end
        local out = collect(c, 20)
        local elapsed = core.monotonic() - t0
        for id = 1, 20 do assert.is_string(out[id][1]) end
        assert.is_true(elapsed >= 0.35 and elapsed < 0.4 * 5, "took " .. elapsed .. " s")
        c:close()
      end)

      it("tells an outer loop when to step: timeout -1 idle, 0 with a call to start, a fd to wait on", function()
        local c = raw_client(s)
        assert.is_true(math.type(c:fd()) == "integer" and c:fd() >= 0)
        assert.equals(-1, c:timeout())
        c:submit("GetEidToken", TOKEN_BODY)
        if thread then
          -- the transport thread keeps the timers: the fd alone says when
          assert.equals(-1, c:timeout())
          local p <close> = core.poller()
          p:add(c:fd())
          assert.equals(1, p:wait(5000))
          c:perform(0)
          assert.equals(0, c:timeout()) -- a result waits for next
          assert.is_string(select(2, c:next()))
        else
          assert.equals(0, c:timeout())
          collect(c, 1)
        end
        assert.equals(-1, c:timeout())
        c:close()
      end)

      it("blocks in perform(ms) until a result is there, and close drops calls still in flight", function()
        simctl.faults(s, { { Action = "GetEidToken", Kind = "latency", Ms = 300 } })
        local c = raw_client(s)
        c:submit("GetEidToken", TOKEN_BODY)
        local t0 = core.monotonic()
        local left = c:perform(2000)
        assert.is_true(core.monotonic() - t0 >= 0.25, "perform returned early")
        assert.equals(0, left)
        assert.is_string(select(2, c:next()))
        for _ = 1, 5 do c:submit("GetEidToken", TOKEN_BODY) end
        c:close() -- with five calls on the wire: nothing leaks (the ASan and valgrind runs)
      end)

      it("refuses a batch while submitted calls are pending, and misuse", function()
        local c = raw_client(s)
        c:submit("GetEidToken", TOKEN_BODY)
        assert.has_error(function() c:batch { { "GetEidToken", TOKEN_BODY } } end,
          "eidkit.Client: batch while submitted calls are pending")
        collect(c, 1)
        assert.equals(1, #c:batch { { "GetEidToken", TOKEN_BODY } })
        assert.has_error(function() c:submit("Get-Token", "{}") end)
        assert.has_error(function() c:perform(-1) end)
        c:close()
        assert.has_error(function() c:next() end, "attempt to use a closed eidkit.Client")
      end)

      it("relays a logger's error from perform, and keeps the result for next", function()
        local c = core.client_new { endpoint = s.url, thread = threaded,
          logger = function() error("logger broke") end }
        c:set_credentials(demo.SecretId, demo.SecretKey)
        local id = c:submit("GetEidToken", TOKEN_BODY)
        local p <close> = core.poller()
        p:add(c:fd())
        local raised
        for _ = 1, 200 do
          p:wait(c:timeout())
          local ok, err = pcall(c.perform, c, 0)
          if not ok then raised = err break end
        end
        assert.matches("logger broke", raised)
        local got
        for _ = 1, 200 do
          got = c:next()
          if got then break end
          p:wait(c:timeout())
          pcall(c.perform, c, 0)
        end
        assert.equals(id, got)
        c:close()
      end)
    end)

    describe("eidkit.client{await = ...}", function()
      local function client(await)
        return client_mod.new { endpoint = s.url, secret_id = demo.SecretId, secret_key = demo.SecretKey,
          await = await, thread = threaded }
      end

      it("sends every typed call through await, and decodes and reports as without it", function()
        local seen = {}
        local c = client(function(cobj, action, body)
          seen[#seen + 1] = action
          return cobj:call(action, body)
        end)
        local res = assert(c:get_eid_token { MerchantId = demo.MerchantId })
        assert.is_string(res.EidToken)
        local r2, err = c:get_eid_result { EidToken = "nope" }
        assert.is_nil(r2)
        assert.equals("InvalidParameterValue.BizTokenIllegal", err.code)
        assert.truthy(c:check_eid_token_status { EidToken = res.EidToken })
        assert.same({ "GetEidToken", "GetEidResult", "CheckEidTokenStatus" }, seen)
      end)

      it("turns what await returns into results: an error table as is, bad text as bad_response", function()
        local c = client(function() return "not json", 1 end)
        local res, err = c:get_eid_result { EidToken = "x" }
        assert.is_nil(res)
        assert.same({ "bad_response", 200, 1 }, { err.code, err.http_status, err.attempts })
        local own = setmetatable({ code = "timeout", message = "m" }, core.error_mt)
        c = client(function() return nil, own end)
        assert.same({ nil, own }, { c:get_eid_result { EidToken = "x" } })
        -- parameter checks stay before await
        assert.has_error(function() c:get_eid_result {} end,
          "bad argument #1 to 'get_eid_result' (EidToken: expected a non-empty string)")
      end)

      it("lets a coroutine wait on submit while the caller drives the client", function()
        local waiting = {}
        local c = client(function(cobj, action, body)
          waiting[cobj:submit(action, body)] = coroutine.running()
          return coroutine.yield()
        end)
        simctl.faults(s, { { Action = "GetEidToken", Kind = "latency", Ms = 300 } })
        local results = {}
        for i = 1, 5 do
          local co = coroutine.create(function()
            results[i] = assert(c:get_eid_token { MerchantId = demo.MerchantId }).EidToken
          end)
          assert(coroutine.resume(co))
          assert.equals("suspended", coroutine.status(co))
        end
        local p <close> = core.poller()
        p:add(c.c:fd())
        local t0 = core.monotonic()
        while next(waiting) do
          assert(core.monotonic() - t0 < 5)
          p:wait(c.c:timeout())
          c.c:perform(0)
          while true do
            local id, text, attempts = c.c:next()
            if not id then break end
            local co = waiting[id]
            waiting[id] = nil
            assert(coroutine.resume(co, text, attempts))
          end
        end
        assert.equals(5, #results)
        assert.is_true(core.monotonic() - t0 < 0.3 * 3)
      end)

      it("refuses an await that is not a function", function()
        assert.has_error(function() client(5) end, "bad option 'await' (expected function(c, action, body))")
      end)
    end)

    -- A connection curl keeps between calls stays in the client's epoll set
    -- (core/src/client.c, sock_state). When its server closes it, the client
    -- must take it out there, or the level-triggered set would stay readable
    -- and a host's loop would spin; and the next call must find a new one.
    it("lets go of a kept connection its server closed, and reconnects", function()
      local srv = core.http_server {
        connection_timeout = 1, -- libmicrohttpd closes a connection idle for 1 s
        handler = function() return { body = '{"Response":{"RequestId":"r"}}' } end,
      }
      local c = core.client_new { endpoint = "http://127.0.0.1:" .. srv:port(), max_attempts = 1,
        thread = threaded }
      c:set_credentials("a", "b")
      local p <close> = core.poller()
      p:add(c:fd())
      local function one_call()
        local id = c:submit("GetEidResult", '{"EidToken":"x"}')
        local t0 = core.monotonic()
        while true do
          assert(core.monotonic() - t0 < 5, "the call did not finish")
          srv:step(1)
          c:perform(0)
          local got, text = c:next()
          if got then
            assert.equals(id, got)
            return text
          end
        end
      end
      assert.matches('"RequestId":"r"', one_call())
      assert.same({ requests = 1, connects = 1 }, c:stats())
      local t0 = core.monotonic()
      repeat -- the server closes the idle connection after its 1 s
        assert(core.monotonic() - t0 < 10, "the server kept the idle connection")
        srv:step(20)
        c:perform(0)
      until srv:stats().connections == 0
      c:perform(0) -- the client sees the close (the host's loop would: its fd is readable)
      assert.equals(0, p:wait(100)) -- nothing left readable in the client's set
      assert.matches('"RequestId":"r"', one_call())
      assert.same({ requests = 2, connects = 2 }, c:stats())
      c:close()
      srv:close()
    end)
  end)
end
