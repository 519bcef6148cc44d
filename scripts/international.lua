-- Numbers outside mainland China need Tencent's international templates and sign name. The tenant lists
-- them as extra usage types ("SignIn_intl", "Generic_intl"); this hook picks the one for the request's
-- usage and refuses regions it has no template for.

local INTERNATIONAL_SIGN = "Acme"

function on_send(req)
  if req.phone == nil or req.country == "CN" then
    return
  end
  local templates = smsgate.tenant.templates
  local id = templates[req.usage .. "_intl"] or templates.Generic_intl
  if id == nil then
    return { reject = "SMS to this country or region is not available." }
  end
  req.template_id = id
  req.sign_name = INTERNATIONAL_SIGN
end
