-- expect: exit=0 stdout~"^contained 8/8$" stdout~"^big: 3$"
local n = 0
local f = function(v) return v end
for _, t in ipairs {
  function() return parallel(1, "x") end,
  function() return parallel(f, nil, f) end,
  function() return each({ 1 }, nil) end,
  function() return each(nil, f) end,
  function() return each({ 1, 2 }, f, { concurrency = 0 }) end,
  function() return each({ 1, 2 }, f, { concurrency = 1e9 }) end,
  function() return each({ 1, 2 }, f, "fast") end,
  function() return each_tenant("x") end,
} do if not pcall(t) then n = n + 1 end end
print("big: " .. #each({ 1, 2, 3 }, f, { concurrency = 1000000000 }))
print("contained " .. n .. "/8")
