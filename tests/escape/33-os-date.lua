-- expect: exit=0 stdout~"^contained 5/5$"
local n = 0
for _, a in ipairs { { "%Ez" }, { "%" }, { "%Q" }, { "*t", 1 << 60 }, { "%c", -(1 << 62) } } do
  if not pcall(os.date, a[1], a[2]) then n = n + 1 end
end
local long = os.date(("%c"):rep(10000))
assert(type(long) == "string")
print("contained " .. n .. "/5")
