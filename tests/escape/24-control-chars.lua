-- expect: exit=0 stdout~"x1b\[31mred.x07.x00end" stderr~"x1b\]0;title"
print("\27[31mred\7\0end\27[0m")
log("\27]0;title\7 \r CR \8 BS \127 DEL")
print(setmetatable({}, { __tostring = function() return "\27[2J\27[H" end }))
