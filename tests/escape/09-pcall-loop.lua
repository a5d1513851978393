-- expect: exit=1 stderr~"timed out"
while true do pcall(function() while true do end end) end
