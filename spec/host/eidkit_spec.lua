-- The eidkit program as a subprocess: commands, exit codes, output.
local scratch = require "support.scratch"
local proc = require "support.proc"
local vectors = require "support.vectors"
local cjson = require "cjson"

local bin = proc.bin()
local run = proc.run

local FAKE_ID = "AKIDEXAMPLEFAKEFAKEFAKEFAKEFAKE00000"
local FAKE_KEY = "FakeSecretKeyForTestVectors000000"
local creds = { TENCENTCLOUD_SECRET_ID = FAKE_ID, TENCENTCLOUD_SECRET_KEY = FAKE_KEY }

local function vector(name)
  for _, v in ipairs(vectors.vectors) do
    if v.name == name then return v end
  end
  error("no vector " .. name)
end

local function script(text)
  local path = scratch.file()
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

describe("eidkit program", function()
  describe("version", function()
    it("prints eidkit's, Lua's and OpenSSL's versions", function()
      local r = run { bin, "version" }
      assert.equals(0, r.code)
      assert.matches("^eidkit %d+%.%d+%.%d+\nLua 5%.4%.%d+\nOpenSSL 3", r.stdout)
      assert.same(r, run { bin, "--version" })
    end)
  end)

  describe("help", function()
    it("lists every command", function()
      local r = run { bin, "help" }
      assert.equals(0, r.code)
      for _, c in ipairs { "run", "sign", "version", "help" } do
        assert.matches("\n  " .. c .. " ", r.stdout)
      end
    end)

    it("documents every option the sign command accepts", function()
      local r = run { bin, "help", "sign" }
      assert.equals(0, r.code)
      for _, opt in ipairs { "secret-id", "secret-key-file", "secret-key", "token", "host", "service",
        "action", "version", "region", "language", "timestamp", "content-type", "body",
        "body-file", "signed-header", "explain", "json", "reveal-token" } do
        assert.truthy(r.stdout:find("--" .. opt .. " ", 1, true) or r.stdout:find("--" .. opt .. "\n", 1, true),
          "help lacks --" .. opt)
      end
      assert.equals(r.stdout, run { bin, "sign", "--help" }.stdout)
    end)

    it("fails with usage on an unknown command", function()
      local r = run { bin, "sgin" }
      assert.equals(2, r.code)
      assert.matches("unknown command 'sgin'", r.stderr)
      assert.equals(2, run { bin }.code)
      assert.equals(2, run { bin, "help", "nope" }.code)
    end)
  end)

  describe("run", function()
    it("builds arg as lua5.4 does and passes arguments as ...", function()
      local path = script [[
        local n = select("#", ...)
        local a, b = ...
        print(arg[0] == a and "bad" or "ok", n, a, b, arg[-1], arg[1], arg[2], #arg)
        print(type(require("eidkit").sign), package.preload["eidkit.core"] ~= nil)
      ]]
      local r = run { bin, "run", path, "a", "b c" }
      os.remove(path)
      assert.equals(0, r.code, r.stderr)
      assert.equals("ok\t2\ta\tb c\trun\ta\tb c\t2\nfunction\ttrue\n", r.stdout)
    end)

    it("runs a script given directly, as busted --lua does", function()
      local path = script [[ print(arg[0]:match("[^/]+$") == "x" or arg[0] ~= nil, arg[1]) ]]
      local r = run { bin, path, "--flag" }
      os.remove(path)
      assert.equals(0, r.code, r.stderr)
      assert.equals("true\t--flag\n", r.stdout)
    end)

    it("reads the script from stdin with -", function()
      local r = run({ bin, "run", "-" }, { stdin = "print(1 + 1)" })
      assert.equals("2\n", r.stdout)
    end)

    it("prints the message and a traceback for an uncaught error, and exits 1", function()
      local path = script [[
        local function inner() error("boom in merchant code") end
        inner()
      ]]
      local r = run { bin, "run", path }
      os.remove(path)
      assert.equals(1, r.code)
      assert.matches("boom in merchant code", r.stderr)
      assert.matches("stack traceback:", r.stderr)
      assert.matches("in %a* ?%a* ?'?inner'?", r.stderr)
    end)

    it("reports a missing script and a syntax error without a crash", function()
      local r = run { bin, "run", "/nonexistent/script.lua" }
      assert.equals(1, r.code)
      assert.matches("cannot open /nonexistent/script.lua", r.stderr)
      local path = script "local = 1"
      r = run { bin, "run", path }
      os.remove(path)
      assert.equals(1, r.code)
      assert.matches("expected near '='", r.stderr)
      assert.equals(2, run { bin, "run" }.code)
    end)

    it("refuses precompiled chunks", function()
      local path = scratch.file()
      local f = assert(io.open(path, "wb"))
      f:write(string.dump(function() return 1 end))
      f:close()
      local r = run { bin, "run", path }
      os.remove(path)
      assert.equals(1, r.code)
      assert.matches("attempt to load a binary chunk", r.stderr)
    end)
  end)

  describe("examples/sign.lua", function()
    it("runs and prints signed headers for the body it prints", function()
      local r = run({ bin, "run", "examples/sign.lua", "TOKEN-1" }, { env = creds })
      assert.equals(0, r.code, r.stderr)
      local body = r.stdout:match("\n\n(.-)\n$")
      -- lua-cjson's key order follows the hash table, so compare decoded.
      assert.same({ EidToken = "TOKEN-1", InfoType = "0" }, cjson.decode(body))
      local ts = tonumber(r.stdout:match("X%-TC%-Timestamp: (%d+)"))
      local want = require("eidkit").sign { secret_id = FAKE_ID, secret_key = FAKE_KEY,
        action = "GetEidResult", body = body, timestamp = ts }
      assert.truthy(r.stdout:find("Authorization: " .. want.Authorization .. "\n", 1, true))
    end)
  end)

  describe("sign", function()
    local v = vector "faceid-GetEidToken"

    it("prints the headers for a request, body from a flag", function()
      local r = run({ bin, "sign", "--action", "GetEidToken", "--timestamp", "1700000000", "--body", v.body },
        { env = creds })
      assert.equals(0, r.code, r.stderr)
      assert.equals(
        "Authorization: TC3-HMAC-SHA256 Credential=" .. FAKE_ID ..
        "/2023-11-14/faceid/tc3_request, SignedHeaders=content-type;host, Signature=" .. v.signature .. "\n" ..
        "Content-Type: application/json\nHost: faceid.tencentcloudapi.com\nX-TC-Action: GetEidToken\n" ..
        "X-TC-Version: 2018-03-01\nX-TC-Timestamp: 1700000000\n", r.stdout)
      assert.equals("", r.stderr)
    end)

    it("reads the body from stdin and from a file, with the same result", function()
      local a = run({ bin, "sign", "--action", "GetEidToken", "--timestamp", "1700000000" },
        { env = creds, stdin = v.body })
      local path = script(v.body)
      local b = run({ bin, "sign", "--action=GetEidToken", "--timestamp=1700000000", "--body-file", path },
        { env = creds })
      os.remove(path)
      assert.equals(0, a.code, a.stderr)
      assert.equals(a.stdout, b.stdout)
      assert.truthy(a.stdout:find(v.signature, 1, true))
    end)

    it("takes every vector's inputs as flags", function()
      for _, vec in ipairs(vectors.vectors) do
        local argv = { bin, "sign", "--secret-id", vec.secret_id, "--secret-key", vec.secret_key,
          "--service", vec.service, "--host", vec.host, "--action", vec.action, "--version", vec.version,
          "--timestamp", ("%d"):format(vec.timestamp), "--content-type", vec.content_type, "--body", vec.body }
        if vec.region then argv[#argv + 1] = "--region=" .. vec.region end
        for i = 3, #vec.signed_headers do argv[#argv + 1] = "--signed-header=" .. vec.signed_headers[i] end
        local r = run(argv)
        assert.equals(0, r.code, r.stderr)
        assert.truthy(r.stdout:find("Signature=" .. vec.signature, 1, true), vec.name)
      end
    end)

    it("explains: canonical request and string to sign", function()
      local r = run({ bin, "sign", "--explain", "--action", "GetEidToken", "--timestamp", "1700000000",
        "--body", v.body }, { env = creds })
      assert.equals(0, r.code, r.stderr)
      assert.truthy(r.stdout:find("POST\n/\n\ncontent-type:application/json\nhost:faceid.tencentcloudapi.com\n\ncontent-type;host\n" ..
        v.hashed_payload .. "\n", 1, true))
      assert.truthy(r.stdout:find("TC3-HMAC-SHA256\n1700000000\n2023-11-14/faceid/tc3_request\n" ..
        v.hashed_canonical_request .. "\n", 1, true))
      assert.truthy(r.stdout:find("# Body: 214 bytes", 1, true))
    end)

    it("redacts the session token unless asked, and never prints the secret key", function()
      local token = "SESSIONTOKEN0123456789abcdef"
      local argv = { bin, "sign", "--explain", "--action", "GetEidToken", "--timestamp", "1700000000",
        "--body", "{}", "--token", token, "--signed-header", "x-tc-token" }
      local r = run(argv, { env = creds })
      assert.equals(0, r.code, r.stderr)
      assert.is_nil(r.stdout:find(token, 1, true))
      assert.is_nil(r.stdout:find(token:lower(), 1, true))
      assert.is_nil((r.stdout .. r.stderr):find(FAKE_KEY, 1, true))
      assert.truthy(r.stdout:find("X-TC-Token: <redacted: 28 bytes", 1, true))
      argv[#argv + 1] = "--reveal-token"
      local shown = run(argv, { env = creds })
      assert.truthy(shown.stdout:find("X-TC-Token: " .. token .. "\n", 1, true))
      -- Redaction changes what is shown, never what is signed.
      assert.equals(r.stdout:match("Signature=(%x+)"), shown.stdout:match("Signature=(%x+)"))
    end)

    it("prints JSON with --json", function()
      local r = run({ bin, "sign", "--json", "--explain", "--action", "GetEidToken", "--timestamp",
        "1700000000", "--body", v.body }, { env = creds })
      assert.equals(0, r.code, r.stderr)
      local doc = cjson.decode(r.stdout)
      assert.equals(v.signature, doc.signature)
      assert.equals(v.hashed_canonical_request, doc.hashed_canonical_request)
      assert.equals("1700000000", doc.headers["X-TC-Timestamp"])
      assert.equals(214, doc.body_bytes)
    end)

    it("reads the secret key from a file", function()
      local path = script(FAKE_KEY .. "\n")
      local r = run({ bin, "sign", "--secret-id", FAKE_ID, "--secret-key-file", path, "--action",
        "GetEidToken", "--timestamp", "1700000000", "--body", v.body })
      os.remove(path)
      assert.equals(0, r.code, r.stderr)
      assert.truthy(r.stdout:find(v.signature, 1, true))
    end)

    local bad = {
      { "no action", { "--body", "{}" }, "--action is required" },
      { "no credentials", { "--action", "X", "--body", "{}" }, "no SecretId", {} },
      { "bad timestamp", { "--action", "X", "--body", "{}", "--timestamp", "soon" }, "--timestamp: expected Unix seconds, got 'soon'" },
      { "timestamp out of range", { "--action", "X", "--body", "{}", "--timestamp", "999999999999" }, "timestamp: must be Unix seconds" },
      { "unknown signed header", { "--action", "X", "--body", "{}", "--signed-header", "x-foo" }, "signed_headers: unknown header 'x-foo'" },
      { "unknown option", { "--action", "X", "--frobnicate" }, "unknown option '--frobnicate'" },
      { "missing option value", { "--action" }, "option '--action' needs a value" },
      { "missing body file", { "--action", "X", "--body-file", "/nonexistent/body.json" }, "--body-file: /nonexistent/body.json" },
      { "two bodies", { "--action", "X", "--body", "{}", "--body-file", "x" }, "not both" },
    }
    for _, c in ipairs(bad) do
      it("fails clearly on " .. c[1], function()
        local argv = { bin, "sign" }
        for _, a in ipairs(c[2]) do argv[#argv + 1] = a end
        local r = run(argv, { env = c[4] or creds })
        assert.equals(2, r.code)
        assert.equals("", r.stdout)
        assert.truthy(r.stderr:find("eidkit sign: ", 1, true), r.stderr)
        assert.truthy(r.stderr:find(c[3], 1, true), r.stderr)
        assert.is_nil(r.stderr:find(FAKE_KEY, 1, true))
      end)
    end
  end)
end)
