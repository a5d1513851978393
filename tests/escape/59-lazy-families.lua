-- expect: exit=0 stdout~"^refused before load 6/6$" stdout~"^loaded: table function table function function function$" stdout~"^refused after load 4/4$"
-- Families load on the first touch of one of their names (entry.lua, sandbox.c): a name not
-- loaded yet is as read-only as a loaded one, reads as the family's value, and stays guarded.
local before = {
  function() docker = {} end,
  function() kube_patch = print end,
  function() _G.prom = 1 end,
  function() rawset(_G, "notify", print) end,
  function() _ENV.verify_isolation = nil end,
  function() drift_compare = function() end end,
}
local n = 0
for i, f in ipairs(before) do
  if pcall(f) then print("NOT REFUSED " .. i) else n = n + 1 end
end
print("refused before load " .. n .. "/" .. #before)
print("loaded: " .. type(docker) .. " " .. type(kube_patch) .. " " .. type(prom) .. " " .. type(notify)
  .. " " .. type(verify_isolation) .. " " .. type(drift_compare))
local after = {
  function() docker = {} end,
  function() docker.ps = print end,
  function() kube.get = print end,
  function() rawset(_G, "prom", 1) end,
}
n = 0
for i, f in ipairs(after) do
  if pcall(f) then print("NOT REFUSED " .. i) else n = n + 1 end
end
print("refused after load " .. n .. "/" .. #after)
