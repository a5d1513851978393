-- expect: exit=1 stderr~"timed out"
local function closer() return setmetatable({}, { __close = function() log("close ran"); while true do end end }) end
for _ = 1, 3 do
  pcall(function() local x <close> = closer(); error("boom") end)
end
