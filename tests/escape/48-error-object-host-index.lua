-- expect: exit=1 stdout!~"RUNBOOK CODE IN HOST" xfail="runbook.lua errtext() reads e.code/e.message through the runbook's __index in host code"
error(setmetatable({}, { __index = function(_, k) print("RUNBOOK CODE IN HOST (" .. tostring(k) .. ")") end }))
