-- expect: exit=0 stdout~"^contained 3$" stdout!~"AFTER"
local n = 0
if not pcall(setmetatable, {}, { __gc = function() print("AFTER END"); while true do end end }) then n = n + 1 end
-- a non-function __gc still marks the object; swapping in a function later would run it
local mt = { __gc = true }
if not pcall(setmetatable, {}, mt) then n = n + 1 end
mt.__gc = function() print("AFTER END") end
if not pcall(setmetatable, {}, { __gc = false }) then n = n + 1 end
print("contained " .. n)
