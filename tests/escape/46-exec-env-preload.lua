-- expect: exit=3 stderr~"LD_PRELOAD"
local r = exec({ "/bin/echo", "x" }, { env = { LD_PRELOAD = "/nonexistent/rbl_escape.so" } })
print("stderr: " .. r.stderr)
