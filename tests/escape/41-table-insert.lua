-- expect: exit=1 stderr~"timed out"
table.insert(setmetatable({}, { __len = function() return math.maxinteger - 1 end }), 1, "x")
