-- expect: exit=0 stdout!~"RUNBOOK CODE IN HOST" xfail="host.c copy_table keeps a runbook metatable whose __name is array/object: its metamethods run in host code"
local mt = { __name = "array", __len = function() print("RUNBOOK CODE IN HOST (__len)"); return 1 end,
  __index = function(_, k) print("RUNBOOK CODE IN HOST (__index " .. tostring(k) .. ")") end }
pcall(exec, setmetatable({ "/bin/echo", "x" }, mt), setmetatable({}, mt))
