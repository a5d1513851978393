-- expect: exit=0 stdout~"^(x{300}	){99}x{300}$"
local t = {}
for i = 1, 100 do t[i] = ("x"):rep(300) end
print(table.unpack(t))
