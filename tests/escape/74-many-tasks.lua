-- expect: exit=3 stderr~"memory limit"
-- 200 000 tasks at once: the scheduler's own allocations must end the run, not panic Lua.
local l = {}
for i = 1, 200000 do l[i] = i end
each(l, function() sleep(1) end, { concurrency = 200000 })
