-- Sign a GetEidResult call the way a merchant server would, and print the
-- headers. Run: TENCENTCLOUD_SECRET_ID=... TENCENTCLOUD_SECRET_KEY=... \
--               build/eidkit run examples/sign.lua [EidToken]
local eidkit = require "eidkit"
local cjson = require "cjson"

local token = arg[1] or "CE661F1A-0F1E-45BD-BE13-34C05CEA7681"
local body = cjson.encode { EidToken = token, InfoType = "0" }

local headers = eidkit.sign {
  secret_id = assert(os.getenv("TENCENTCLOUD_SECRET_ID"), "set TENCENTCLOUD_SECRET_ID"),
  secret_key = assert(os.getenv("TENCENTCLOUD_SECRET_KEY"), "set TENCENTCLOUD_SECRET_KEY"),
  action = "GetEidResult",
  body = body,  -- sign exactly the bytes you will POST
}

local names = {}
for name in pairs(headers) do names[#names + 1] = name end
table.sort(names)
for _, name in ipairs(names) do print(name .. ": " .. headers[name]) end
print()
print(body)
