-- expect: exit=0 stdout~"^contained 0 0 0$"
print("contained " .. #string.rep("", math.maxinteger) .. " " .. #(""):rep(1 << 62) .. " " .. #string.rep("", 1 << 62, ""))
