-- expect: exit=0 stdout~"^contained$"
pcall(exec, { "/bin/echo", "ok" }, { stdin = ("z"):rep(1 << 20), timeout = 1 })
print("contained")
