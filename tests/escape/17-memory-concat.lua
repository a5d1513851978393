-- expect: exit=3 stderr~"memory limit" step_timeout=10
while true do
  pcall(function() local s = "x" while true do s = s .. s .. "y" end end)
end
