-- expect: exit=1 stderr~"timed out" stdout!~"done"
-- string and utf8 functions are O(n) in C: each call polls the limits.
local s = string.rep("a", 1e7)
for _ = 1, 3000 do s:upper() utf8.len(s) end
print("done")
