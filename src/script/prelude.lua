-- Trusted setup, run once per Lua state before the tenant's script. It builds the only environment the
-- script ever sees: safe base functions, read-only views of string/table/math/utf8 (their costly functions
-- already replaced by charged ones, see strlib.rs), and the smsgate API. The real globals table (with the
-- functions removed below) is never reachable from the script.
-- `c_select` is Lua's own select, for the params the host passes the trampoline (at most 16: each door caps them).
local spent, plain, emit, parse_phone, settings, c_select = ...
local G = _G
local error, next, pairs, ipairs, rawget, rawequal, rawlen, select, setmetatable, type, tostring, pcall, xpcall =
  error, next, pairs, ipairs, rawget, rawequal, rawlen, select, setmetatable, type, tostring, pcall, xpcall
local mtype, min, sub, unpack = math.type, math.min, string.sub, table.unpack

local function readonly(t)
  local proxy = {}
  setmetatable(proxy, {
    __index = t,
    __newindex = function(_, k)
      error("attempt to modify a read-only table (field '" .. tostring(k) .. "')", 2)
    end,
    __len = function() return #t end,
    -- Iterates the real table without handing it out.
    __pairs = function() return function(_, k) return next(t, k) end, proxy, nil end,
    __metatable = false,
  })
  return proxy
end

-- string.dump is useless without load and the real string table stays reachable through the string
-- metatable, so it goes from the real table; the metatable itself is hidden.
string.dump = nil
getmetatable("").__metatable = false

local B = {}
for _, name in ipairs({ "assert", "error", "getmetatable", "ipairs", "next", "pairs", "rawequal", "rawget",
  "rawlen", "select", "tonumber", "tostring", "type", "_VERSION" }) do
  B[name] = G[name]
end
B.string, B.table, B.math, B.utf8 = readonly(string), readonly(table), readonly(math), readonly(utf8)

-- table.sort compares in C, where a comparison costs no instruction: every comparison goes through a Lua
-- function, so the count hook charges it (and a C function given as the comparator cannot escape that).
do
  local sort = table.sort
  local function lt(a, b) return a < b end
  table.sort = function(t, comp)
    if comp == nil then return sort(t, lt) end
    if type(comp) ~= "function" then return sort(t, comp) end
    return sort(t, function(a, b) return comp(a, b) end)
  end
end

-- A spent budget, a passed deadline or exhausted memory must end the call: pcall and xpcall may not
-- swallow it, and an xpcall message handler does not run for it. (Once the call is cut off, the count
-- hook fails before every instruction anyway; the handler check matters because Lua runs a message handler
-- with hooks off when the error came from the hook itself.) Errors of the host's library functions reach
-- the script as plain strings, like those of Lua's own C functions.
local function settle(ok, ...)
  if ok then return true, ... end
  local e = ...
  if spent(e) then error(e, 0) end
  if type(e) == "userdata" then e = plain(e) end
  return false, e
end
B.pcall = function(f, ...) return settle(pcall(f, ...)) end
B.xpcall = function(f, handler, ...)
  if type(handler) ~= "function" then
    error("bad argument #2 to 'xpcall' (function expected, got " .. type(handler) .. ")", 2)
  end
  return settle(xpcall(f, function(e)
    if spent(e) then return e end
    if type(e) == "userdata" then e = plain(e) end
    return handler(e)
  end, ...))
end

-- Two metamethods run where no budget reaches: __gc (at collection time, with hooks off) and __close
-- (while an error raised by the count hook unwinds, Lua closes the variables of the frame it stopped in
-- with hooks off). Both are refused, and a metatable is copied when it is set, so neither can be added to
-- it later: a value can never become closable, so `local x <close>` and the generic for's closing value
-- only ever hold nil or false. getmetatable still answers the table passed in; changes made to that table
-- afterwards do not apply.
local rawset = rawset
local weak = { __mode = "k" }
local copy_of = setmetatable({}, weak) -- table -> the copy set as its metatable
local protected = setmetatable({}, weak) -- copies of metatables that had their own __metatable field
B.setmetatable = function(t, mt)
  if type(t) ~= "table" or (mt ~= nil and type(mt) ~= "table") then
    -- Through pcall so that the argument error points at the script's line, not this one.
    local ok, result = pcall(setmetatable, t, mt)
    if not ok then error(result, 2) end
    return result
  end
  local copy = nil
  if mt ~= nil then
    if rawget(mt, "__gc") ~= nil then error("__gc metamethods are not available in hooks", 2) end
    if rawget(mt, "__close") ~= nil then error("__close metamethods are not available in hooks", 2) end
    copy = {}
    for k, v in next, mt do copy[k] = v end
    if rawget(mt, "__metatable") == nil then copy.__metatable = mt else protected[copy] = true end
  end
  local current, saved = copy_of[t], nil
  if current then
    -- Its metatable is one of these copies: replaceable unless the script protected it.
    if protected[current] then error("cannot change a protected metatable", 2) end
    saved = rawget(current, "__metatable")
    rawset(current, "__metatable", nil)
  end
  local ok, result = pcall(setmetatable, t, copy)
  if not ok then
    if current then rawset(current, "__metatable", saved) end
    error(result, 2)
  end
  copy_of[t] = copy
  return result
end

local LEVELS = { trace = true, debug = true, info = true, warn = true, error = true }
local function log(level, msg)
  if not LEVELS[level] then
    error("smsgate.log: level must be one of trace, debug, info, warn, error", 2)
  end
  if type(msg) ~= "string" then msg = tostring(msg) end
  emit(level, msg)
end

local function parse(s, default_country)
  if type(s) ~= "string" then error("smsgate.parse_phone: the number must be a string", 2) end
  if default_country ~= nil and (type(default_country) ~= "string" or not default_country:match("^%u%u$")) then
    error("smsgate.parse_phone: default_country must be an ISO code such as CN", 2)
  end
  return parse_phone(s, default_country)
end

local s = {}
for k, v in pairs(settings) do s[k] = v end
s.templates = readonly(settings.templates)
B.smsgate = readonly({ log = log, parse_phone = parse, tenant = readonly(s) })

-- The script's environment D stays empty: reads fall through to the table its metatable names, writes land
-- there. While the script loads that is B (its functions and constants); for each call the host points it
-- at a fresh table whose reads fall through to B, so globals a call sets die with the call.
local D, DM = {}, { __index = B, __newindex = B, __metatable = false }
setmetatable(D, DM)
B._G = D
local EM = { __index = B, __metatable = false }

for _, name in ipairs({ "dofile", "loadfile", "load", "loadstring", "collectgarbage", "print", "require", "rawset" }) do
  G[name] = nil
end

-- One call of the hook, host side: building `req` and reading it back here costs one crossing between
-- Rust and Lua per request instead of dozens. Returns a status (0 unchanged, 1 changed, 2 reject, 3 the
-- hook's error) and the values; the host checks what the values mean (a number that parses, a template the
-- tenant has). `arm` puts the heap limit in force for the script's own code only.
local KNOWN = { tenant = true, phone = true, raw_phone = true, country = true, usage = true, code = true,
  params = true, ip = true, locale = true, template_id = true, sign_name = true, region = true, providers = true,
  provider = true }
local WRITABLE = "; the hook may set phone, usage, params, template_id, sign_name, region, provider"

-- `req.providers`: the send's candidate providers in order, read-only, one shared list per order. The host
-- passes them as a small number (two bits a provider, `index + 1`, 0 ends the list).
-- Every list is built here, once per state: a call only looks its list up.
local PROVIDER_NAMES = { "tencent", "aliyun", "twilio" }
local provider_lists = {}
for code = 0, 63 do
  local names, c = {}, code
  while c > 0 and #names < 3 do
    local name = PROVIDER_NAMES[c % 4]
    if name == nil then break end
    names[#names + 1] = name
    c = c // 4
  end
  provider_lists[code] = readonly(names)
end
local EMPTY_PROVIDERS = provider_lists[0]
local function providers_of(code)
  return provider_lists[code] or EMPTY_PROVIDERS
end
local SHAPE = ' (return nothing, req, or {reject = "message"})'
local MAX_PARAMS = 17 -- one more than allowed, so that the host sees and refuses too many

-- A field the hook may set to a string (an integer is written as digits): value, or nil and the problem.
local function text(req, field)
  local v = rawget(req, field)
  if v == nil or type(v) == "string" then return v end
  if mtype(v) == "integer" then return tostring(v) end
  return nil, "req." .. field .. " must be a string, not a " .. type(v)
end

local function make_invoke(on_send, tenant, arm, disarm)
  return function(phone, raw_phone, country, usage, code, ip, locale, candidates, ...)
    local env = setmetatable({}, EM)
    DM.__index, DM.__newindex = env, env
    local n = c_select("#", ...)
    local providers = providers_of(candidates)
    local req = { tenant = tenant, phone = phone, raw_phone = raw_phone, country = country, usage = usage,
      code = code, params = { ... }, ip = ip, locale = locale, providers = providers }
    arm()
    local ok, r = pcall(on_send, req)
    disarm()
    if not ok then
      -- A string is the script's message (file and line included); an error of a host function goes to the
      -- host as it is; any other value is named by its type, never converted by its own metamethods.
      if spent(r) then error(r, 0) end
      if type(r) == "string" then return 3, r end
      if type(r) == "userdata" then error(r, 0) end
      if mtype(r) then return 3, tostring(r) end
      return 3, "(error object is a " .. type(r) .. " value)"
    end
    if r ~= nil and not rawequal(r, req) then
      if type(r) == "table" then
        local reject = rawget(r, "reject")
        if type(reject) == "string" then return 2, reject end
        return 3, "on_send returned a table without a string `reject`" .. SHAPE
      end
      return 3, "on_send returned a " .. (mtype(r) and "number" or type(r)) .. SHAPE
    end
    for k in next, req do
      if not KNOWN[k] then
        local name = type(k) == "string" and "req." .. sub(k, 1, 32) or "a " .. type(k) .. " key"
        return 3, "on_send set " .. name .. WRITABLE
      end
    end
    if rawget(req, "tenant") ~= tenant then return 3, "req.tenant is read-only" end
    if rawget(req, "raw_phone") ~= raw_phone then return 3, "req.raw_phone is read-only" end
    if rawget(req, "country") ~= country then return 3, "req.country is read-only" end
    if rawget(req, "code") ~= code then return 3, "req.code is read-only" end
    if rawget(req, "ip") ~= ip then return 3, "req.ip is read-only" end
    if rawget(req, "locale") ~= locale then return 3, "req.locale is read-only" end
    if not rawequal(rawget(req, "providers"), providers) then return 3, "req.providers is read-only" end
    local new_phone = rawget(req, "phone")
    if new_phone == nil and phone ~= nil then return 3, "on_send cleared req.phone" end
    if new_phone ~= nil and type(new_phone) ~= "string" then
      return 3, "req.phone must be a string, not a " .. type(new_phone)
    end
    local new_usage = rawget(req, "usage")
    if type(new_usage) ~= "string" then return 3, "req.usage must be a string, not a " .. type(new_usage) end
    local template_id, e1 = text(req, "template_id")
    if e1 then return 3, e1 end
    local sign_name, e2 = text(req, "sign_name")
    if e2 then return 3, e2 end
    local region, e3 = text(req, "region")
    if e3 then return 3, e3 end
    local provider, e4 = text(req, "provider")
    if e4 then return 3, e4 end
    local params = rawget(req, "params")
    if type(params) ~= "table" then return 3, "req.params must be a list of strings, not a " .. type(params) end
    local m = min(rawlen(params), MAX_PARAMS)
    local changed = m ~= n
    local out = {}
    for i = 1, m do
      local v = rawget(params, i)
      if mtype(v) == "integer" then
        v = tostring(v)
      elseif type(v) ~= "string" then
        return 3, "req.params[" .. i .. "] must be a string, not a " .. type(v)
      end
      out[i] = v
      if not changed and v ~= c_select(i, ...) then changed = true end
    end
    if new_phone == phone and new_usage == usage and not changed and template_id == nil and sign_name == nil
        and region == nil and provider == nil then
      return 0
    end
    if new_phone == phone then new_phone = nil end
    if new_usage == usage then new_usage = nil end
    if not changed then
      return 1, new_phone, new_usage, template_id, sign_name, region, provider, false
    end
    return 1, new_phone, new_usage, template_id, sign_name, region, provider, true, unpack(out, 1, m)
  end
end

return D, make_invoke
