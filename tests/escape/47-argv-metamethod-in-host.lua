-- expect: exit=0 stdout!~"RUNBOOK CODE IN HOST"
local mt = { __name = "array", __len = function() print("RUNBOOK CODE IN HOST (__len)"); return 1 end,
  __index = function(_, k) print("RUNBOOK CODE IN HOST (__index " .. tostring(k) .. ")") end }
pcall(exec, setmetatable({ "/bin/echo", "x" }, mt), setmetatable({}, mt))
