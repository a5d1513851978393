-- expect: exit=0 stdout~"^contained 5$"
local n = 0
local bc = "\27Lua\84\0\25\147\13\10\26\10\4\8\8\120\86\0\0\0\0\0\0\0\0\0\0\0\40\119\64\1"
local f, e = load("return 1", "x", "b"); if f == nil and tostring(e):find("binary") then n = n + 1 end
f, e = load(bc, "x", "b"); if f == nil then n = n + 1 end
f, e = load(bc, "x", "bt"); if f == nil and tostring(e):find("binary") then n = n + 1 end
f, e = load(bc); if f == nil then n = n + 1 end
f, e = load("\27Lua"); if f == nil then n = n + 1 end
print("contained " .. n)
