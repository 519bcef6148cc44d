-- Picks the template for the caller's language. The tenant lists per-language templates as usage types
-- such as "SignIn_en" (and "Generic_en" for any usage); a request with locale "en-US" takes them, any
-- other language (or none) keeps the usage's default template.

function on_send(req)
  local lang = req.locale and req.locale:match("^(%a%a)")
  if lang == nil then
    return
  end
  lang = lang:lower()
  local templates = smsgate.tenant.templates
  local id = templates[req.usage .. "_" .. lang] or templates["Generic_" .. lang]
  if id then
    req.template_id = id
  end
end
