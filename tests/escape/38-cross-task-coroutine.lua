-- expect: exit=0 stdout~"^contained 3/3$"
local n = 0
-- a coroutine created in a task that has ended, resumed from another
local co
parallel(function() co = coroutine.create(function() while true do coroutine.yield(tenant) end end) end)
if coroutine.resume(co) then n = n + 1 end
-- another task's own thread, parked in sleep: resuming or closing it must be refused
local main
parallel(function() main = coroutine.running(); sleep(0.3) end, function()
  sleep(0.05)
  if not coroutine.resume(main) then n = n + 1 end
  if not pcall(coroutine.close, main) then n = n + 1 end
end)
print("contained " .. n .. "/3")
