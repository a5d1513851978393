-- expect: exit=0 stdout~"^contained 2$"
local n, i = 0, 0
local chunks = { "\27Lua", "\84\0", "" }
local ok, f = pcall(load, function() i = i + 1; return chunks[i] end)
if not ok or f == nil then n = n + 1 end
ok, f = pcall(load, function() i = 0; return nil end, "x", "bt")
if not ok or f == nil then n = n + 1 end
print("contained " .. n)
