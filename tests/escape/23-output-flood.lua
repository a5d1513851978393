-- expect: exit=3 stderr~"output limit"
while true do pcall(print, ("x"):rep(100)) end
