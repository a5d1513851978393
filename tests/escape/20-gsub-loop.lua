-- expect: exit=1 stderr~"timed out"
pcall(string.gsub, "abc", "%w", function() while true do end end)
