-- Premium-rate and other costly prefixes (E.164, "+" and digits) that must never receive a code: a
-- classic SMS-pumping target. Matched by plain prefix on the number the gateway would send to.

local BLOCKED = {
  "+1900", "+1976", -- North America: premium rate
  "+449", -- United Kingdom: 09 premium rate
  "+49900", -- Germany: 0900
  "+3389", -- France: 089 premium
  "+61190", -- Australia: 190
}

local function blocked_prefix(phone)
  for i = 1, #BLOCKED do
    local prefix = BLOCKED[i]
    if phone:sub(1, #prefix) == prefix then
      return prefix
    end
  end
end

function on_send(req)
  if req.phone == nil then
    return
  end
  local prefix = blocked_prefix(req.phone)
  if prefix then
    smsgate.log("warn", "blocked a premium-rate prefix " .. prefix)
    return { reject = "This number cannot receive verification codes." }
  end
end
