-- expect: exit=1 stderr~"(timed out|too complex|budget)"
local s = ("a"):rep(1e5)
while true do
  pcall(function() return s:find(".-.-.-.-.-.-.-b") end)
  pcall(function() return s:match("(.-)(.-)(.-)(.-)b") end)
  pcall(function() for _ in s:gmatch(".-.-.-.-b") do end end)
end
