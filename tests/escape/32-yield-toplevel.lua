-- expect: exit=1 stderr~"yield outside a coroutine"
coroutine.yield(1, 2, 3)
