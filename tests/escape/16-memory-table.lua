-- expect: exit=3 stderr~"memory limit" step_timeout=10
while true do
  pcall(function() local t = {} while true do t[#t + 1] = { 1, 2, 3, 4 } end end)
end
