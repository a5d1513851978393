-- expect: exit=3 stderr~"output limit" stdout!~"AFTER KILL"
local x <close> = setmetatable({}, { __close = function() log("close"); print("AFTER KILL") end })
while true do print(("y"):rep(200)) end
