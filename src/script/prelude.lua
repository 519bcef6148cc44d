-- Trusted setup, run once per Lua state before the tenant's script. It builds the only environment the
-- script ever sees: safe base functions, read-only views of string/table/math/utf8, and the smsgate API.
-- The real globals table (with the functions removed below) is never reachable from the script.
local spent, emit, parse_phone, settings = ...
local G = _G
local error, next, pairs, ipairs, rawget, setmetatable, type, tostring, pcall, xpcall =
  error, next, pairs, ipairs, rawget, setmetatable, type, tostring, pcall, xpcall

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

-- An exhausted instruction budget must end the call: pcall may not swallow it.
local function rethrow_overrun(ok, ...)
  if not ok and spent() then error((...), 0) end
  return ok, ...
end
B.pcall = function(f, ...) return rethrow_overrun(pcall(f, ...)) end
B.xpcall = function(f, handler, ...) return rethrow_overrun(xpcall(f, handler, ...)) end

-- Finalizers would run at GC time, outside any call's budget and context.
B.setmetatable = function(t, mt)
  if type(mt) == "table" and rawget(mt, "__gc") ~= nil then
    error("__gc metamethods are not available in hooks", 2)
  end
  -- Through pcall so that an error (a protected metatable) points at the script's line, not this one.
  local ok, result = pcall(setmetatable, t, mt)
  if not ok then error(result, 2) end
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
return D, DM, EM
