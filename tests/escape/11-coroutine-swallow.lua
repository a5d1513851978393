-- expect: exit=1 stderr~"timed out"
while true do
  coroutine.resume(coroutine.create(function() while true do end end))
  pcall(coroutine.wrap(function() while true do pcall(coroutine.yield) end end))
end
