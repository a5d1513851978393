-- expect: exit=1 stderr~"timed out"
while true do xpcall(error, function() while true do end end) end
