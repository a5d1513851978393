-- expect: exit=1 stderr~"top-level code failed" stderr!~"\\x1b"
-- The error object's __tostring loops: whoever formats it (host code) must still be stopped.
error(setmetatable({}, { __tostring = function() while true do end end }))
