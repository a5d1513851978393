-- expect: exit=1 stderr~"(timed out|too complex|budget)"
local s = string.rep("a", 1e5)
while true do pcall(string.find, s, ".-.-.-.-.-.-.-b") end
