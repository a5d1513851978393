-- expect: exit=0 stdout~"^contained 3/3 t1$"
local n = 0
if not pcall(load("tenant = 'evil'")) then n = n + 1 end
if not pcall(load("rawset(_ENV, 'incident', 'evil')")) then n = n + 1 end
local f = load("return io, debug, package", "=x", "t")
if select("#", f()) == 3 and f() == nil then n = n + 1 end
print("contained " .. n .. "/3 " .. tenant)
