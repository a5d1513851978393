-- expect: exit=0 stdout~"^contained 7/7$"
local n = 0
for _, o in ipairs { "stop", "restart", "incremental", "generational", "setpause", "setstepmul", "isrunning" } do
  if not pcall(collectgarbage, o, 0) then n = n + 1 end
end
assert(type(collectgarbage("count")) == "number")
collectgarbage()
print("contained " .. n .. "/7")
