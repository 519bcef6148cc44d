-- Mainland China numbers written without a usable country code: bare 11 digits (13800138000), 0086… or
-- 86… without "+". Some clients send these through Logto, which then reads them as another country's
-- number (or not at all). The hook sees the number as written in req.raw_phone and sets req.phone.
-- Meant for tenants whose users are in mainland China: an 11-digit North American number written as
-- 1 + area code + number, without "+", would be read as a mainland mobile here.

local MOBILE = "1[3-9]%d%d%d%d%d%d%d%d%d" -- mainland mobiles: 11 digits, 13x to 19x

local function mainland_national(raw)
  local s = raw:gsub("[%s%-]", "")
  return s:match("^(" .. MOBILE .. ")$")
    or s:match("^0086(" .. MOBILE .. ")$")
    or s:match("^%+?86(" .. MOBILE .. ")$")
end

function on_send(req)
  local national = mainland_national(req.raw_phone)
  if national then
    local e164 = smsgate.parse_phone("+86" .. national)
    if e164 and e164 ~= req.phone then
      smsgate.log("info", "read the number as a mainland mobile")
      req.phone = e164
    end
  end
end
