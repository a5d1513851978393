-- expect: exit=1 stderr~"working directory /nonexistent/rbl-escape does not exist"
-- A failed spawn closes its process handle: no assertion in libuv at exit.
exec({ "/bin/echo", "x" }, { cwd = "/nonexistent/rbl-escape" })
