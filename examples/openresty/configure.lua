-- The gateway's settings, from the EIDKIT_* environment variables that
-- examples/openresty/run sets (nginx.conf names each in an `env` line, or
-- nginx would hide it): nginx.conf's init_by_lua_file, in the master, so a
-- mistake stops nginx from starting (or fails a reload). `run --check` runs
-- the same file under plain LuaJIT: nginx -t does not run init_by_lua.
-- In your own config, write the values in (docs/OPENRESTY.md).
local env = os.getenv
-- token_params and result_fields: JSON, from a --config file's tables.
local function json_env(name)
  local text = env(name)
  if text == nil or text == "" then return nil end
  return require("cjson").decode(text)
end
require("eidkit.openresty.gateway").configure {
  endpoint = env("EIDKIT_ENDPOINT"),
  secret_id = env("EIDKIT_SECRET_ID"),
  secret_key = env("EIDKIT_SECRET_KEY"),
  merchant_id = env("EIDKIT_MERCHANT_ID"),
  ledger = env("EIDKIT_LEDGER"),
  policy = env("EIDKIT_POLICY"),
  demo_authorize = env("EIDKIT_DEMO_AUTHORIZE") == "1",
  limits = env("EIDKIT_LIMITS"),
  token_limit = env("EIDKIT_TOKEN_LIMIT"),
  upstream_rate = env("EIDKIT_UPSTREAM_RATE"),
  token_fields = env("EIDKIT_TOKEN_FIELDS"),
  token_params = json_env("EIDKIT_TOKEN_PARAMS"),
  result_fields = json_env("EIDKIT_RESULT_FIELDS"),
  h5_return_url = env("EIDKIT_H5_RETURN_URL"),
  upstream_timeout = env("EIDKIT_UPSTREAM_TIMEOUT"),
  upstream_deadline = env("EIDKIT_UPSTREAM_DEADLINE"),
  sweep_interval = env("EIDKIT_SWEEP_INTERVAL"),
  sweep_max = env("EIDKIT_SWEEP_MAX"),
  sweep_socket = env("EIDKIT_SWEEP_SOCKET"),
  access_log = env("EIDKIT_ACCESS_LOG"),
}
