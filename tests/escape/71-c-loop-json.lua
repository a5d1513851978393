-- expect: exit=1 stderr~"timed out" stdout!~"decoded"
-- json.decode in C (cJSON parse, then the tree pushed) in a loop the count hook never sees.
local s = "[" .. string.rep("1,", 2e5) .. "1]"
for _ = 1, 2000 do json.decode(s) end
print("decoded")
