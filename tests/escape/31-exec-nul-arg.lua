-- expect: exit=1 stderr~"NUL"
local r = exec({ "/bin/echo", "a\0b" })
print("echo printed: " .. r.stdout)
