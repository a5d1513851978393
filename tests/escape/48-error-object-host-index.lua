-- expect: exit=1 stdout!~"RUNBOOK CODE IN HOST"
error(setmetatable({}, { __index = function(_, k) print("RUNBOOK CODE IN HOST (" .. tostring(k) .. ")") end }))
