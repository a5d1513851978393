-- expect: exit=0 stdout~"^WALK-END$"
-- Walks the environment: pairs over _G/_ENV (every global, the read-only ones included),
-- every table reachable from them recursively (through the read-only proxies' __pairs), and a
-- probe of every name a full Lua 5.4 has. run.sh diffs the ENV lines against the families
-- registry (`rbl check --list-globals`).
local names, seen = {}, {}
local function add(n) if not seen[n] then seen[n] = true; names[#names + 1] = n end end
local function walk(prefix, t, depth)
  if depth > 4 then return end
  for k, v in pairs(t) do
    local n = prefix .. tostring(k)
    add(n)
    -- tenants and params are data (the run's tenant names and parameters), not capabilities
    if type(v) == "table" and n ~= "_G" and n ~= "tenants" and n ~= "params" then walk(n .. ".", v, depth + 1) end
  end
end
walk("", _G, 0)
walk("", _ENV, 0)
assert(seen.exec and seen.log and seen.step, "pairs(_G) must list the read-only globals")
local probe = { "_G", "_VERSION", "_ENV", "assert", "collectgarbage", "dofile", "error", "getmetatable",
  "ipairs", "load", "loadfile", "loadstring", "next", "pairs", "pcall", "print", "rawequal", "rawget",
  "rawlen", "rawset", "require", "select", "setmetatable", "tonumber", "tostring", "type", "warn",
  "xpcall", "unpack", "module", "setfenv", "getfenv", "newproxy", "gcinfo",
  "coroutine", "debug", "io", "math", "os", "package", "string", "table", "utf8", "bit32", "ffi", "jit",
  "log", "sleep", "parallel", "each", "each_tenant", "exec", "detect_runtime", "docker_exec", "docker",
  "kube", "kube_patch", "drift_compare", "verify_isolation", "iac", "secret", "json", "runbook", "step",
  "tenant", "tenants", "incident", "params", "dry_run", "host", "rbl", "prim", "proc", "http" }
for _, n in ipairs(probe) do
  local v = _G[n]
  if v ~= nil then
    add(n)
    if type(v) == "table" and n ~= "_G" and n ~= "tenants" and n ~= "params" then walk(n .. ".", v, 1) end
  end
end
-- every member of the full standard libraries, whether or not pairs shows it
local std = {
  string = { "byte", "char", "dump", "find", "format", "gmatch", "gsub", "len", "lower", "match", "pack",
    "packsize", "rep", "reverse", "sub", "unpack", "upper" },
  table = { "concat", "insert", "move", "pack", "remove", "sort", "unpack" },
  os = { "clock", "date", "difftime", "execute", "exit", "getenv", "remove", "rename", "setlocale", "time",
    "tmpname" },
  coroutine = { "close", "create", "isyieldable", "resume", "running", "status", "wrap", "yield" },
  math = { "abs", "acos", "asin", "atan", "ceil", "cos", "deg", "exp", "floor", "fmod", "huge", "log", "max",
    "maxinteger", "min", "mininteger", "modf", "pi", "rad", "random", "randomseed", "sin", "sqrt", "tan",
    "tointeger", "type", "ult", "pow", "ldexp", "frexp", "cosh", "sinh", "tanh", "log10", "atan2" },
  utf8 = { "char", "charpattern", "codepoint", "codes", "len", "offset" },
}
for lib, members in pairs(std) do
  local t = _G[lib]
  if type(t) == "table" then
    for _, m in ipairs(members) do if t[m] ~= nil then add(lib .. "." .. m) end end
  end
end
table.sort(names)
for _, n in ipairs(names) do print("ENV " .. n) end
print("WALK-END")
