-- expect: exit=0 stdout~"^refused 14/14$" stdout~"^after: t1 ESC 1 false$"
local tries = {
  function() tenant = "evil" end,
  function() tenants = { "evil" } end,
  function() incident = "X" end,
  function() params = {} end,
  function() dry_run = true end,
  function() params.x = 1 end,
  function() tenants[1] = "evil" end,
  function() table.insert(tenants, "evil") end,
  function() rawset(_G, "tenant", "evil") end,
  function() rawset(_ENV, "incident", "evil") end,
  function() setmetatable(_G, {}) end,
  function() setmetatable(_ENV, { __index = function() return "evil" end }) end,
  function() local _, raw = pairs(tenants); raw[1] = "evil" end,
  function() _G.tenant = "evil" end,
}
local n = 0
for i, f in ipairs(tries) do
  local ok = pcall(f)
  if not ok then n = n + 1 else print("NOT REFUSED " .. i) end
end
-- a local _ENV only shadows names for this scope: the host's view is unchanged
do local _ENV = { tenant = "evil", print = print }; print("shadow: " .. tenant) end
print("refused " .. n .. "/" .. #tries)
print("after: " .. tenant .. " " .. incident .. " " .. #tenants .. " " .. tostring(dry_run))
