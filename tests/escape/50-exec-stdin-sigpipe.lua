-- expect: exit=0 stdout~"^contained$" xfail="SIGPIPE: writing exec stdin to a program that exits without reading kills rbl (exit 141)"
pcall(exec, { "/bin/echo", "ok" }, { stdin = ("z"):rep(1 << 20), timeout = 1 })
print("contained")
