-- expect: exit=0 stdout~"^contained 6/6$"
local n = 0
for _, v in ipairs { 0 / 0, -1, 1e300, math.huge, -math.huge, "1" } do
  if not pcall(sleep, v) then n = n + 1 end
end
sleep(0)
print("contained " .. n .. "/6")
