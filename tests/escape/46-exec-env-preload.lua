-- expect: exit=0 stdout!~"preloaded" xfail="exec passes LD_PRELOAD/LD_LIBRARY_PATH from opts.env to allowed programs"
local r = exec({ "/bin/echo", "x" }, { env = { LD_PRELOAD = "/nonexistent/rbl_escape.so" } })
print("stderr: " .. r.stderr)
