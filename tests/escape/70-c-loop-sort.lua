-- expect: exit=1 stderr~"timed out"
-- table.sort runs in C: 150 sorts in one loop never reach the count hook; the sort polls.
local t = {}
for i = 1, 1e6 do t[i] = (i * 7919) % 1000003 end
for _ = 1, 150 do table.sort(t) end
print("sorted")
