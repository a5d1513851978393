-- expect: exit=1 stderr~"timed out"
table.move({}, 1, math.maxinteger - 1, 2)
