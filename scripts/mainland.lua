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

-- smsgate.parse_phone guards the rewrite: a well-formed number that only looks like a mainland mobile
-- (a North American 1 + area code + number) is left as the caller wrote it.
function on_send(req)
  local national = mainland_national(req.raw_phone)
  if national then
    local candidate = "+86" .. national
    if candidate ~= req.phone and smsgate.parse_phone(candidate) then
      smsgate.log("debug", "read the number as a mainland mobile")
      req.phone = candidate
    end
  end
end
