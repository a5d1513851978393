-- expect: exit=0 stdout~"^contained 3$"
local n = 0
if string.dump == nil then n = n + 1 end
if ("").dump == nil then n = n + 1 end
local ok = pcall(function() return load(string.dump(function() return 1 end)) end)
if not ok then n = n + 1 end
print("contained " .. n)
