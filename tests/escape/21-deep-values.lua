-- expect: exit=0 stdout~"^contained 7/7$"
local deep = {}
local cur = deep
for _ = 1, 10000 do cur[1] = {}; cur = cur[1] end
local selfref = {}; selfref.me = selfref; selfref[1] = selfref
local n = 0
local function refused(f, ...) local ok, r = pcall(f, ...); if not ok or r == nil then n = n + 1 end end
refused(json.encode, deep)
refused(json.encode, selfref)
refused(exec, { "/bin/echo", deep })
refused(exec, { "/bin/echo" }, { env = selfref })
refused(json.decode, string.rep("[", 200000) .. string.rep("]", 200000))
refused(json.decode, string.rep('{"a":', 100000) .. "1" .. string.rep("}", 100000))
log("%s %s", deep, selfref) -- formats as "table: 0x..."
refused(exec, { "/bin/echo", selfref })
print("contained " .. n .. "/7")
