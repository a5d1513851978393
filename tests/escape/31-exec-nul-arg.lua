-- expect: exit=1 stderr~"NUL" xfail="proc.c truncates argv/env strings at NUL silently (echo prints 'a')"
local r = exec({ "/bin/echo", "a\0b" })
print("echo printed: " .. r.stdout)
