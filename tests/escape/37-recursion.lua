-- expect: exit=0 stdout~"^contained 4/4$" step_timeout=10
local n = 0
local function f(k) return 1 + f(k + 1) end
if not pcall(f, 1) then n = n + 1 end
local t = setmetatable({}, {}); getmetatable(t).__index = function(s, k) return s[k .. "x"] end
if not pcall(function() return t.a end) then n = n + 1 end
local function g() return pcall(g) end
local ok, r = pcall(g); if ok then n = n + 1 end -- bottoms out in an error, caught
local function h() return tostring(setmetatable({}, { __tostring = h })) end
if not pcall(h) then n = n + 1 end
print("contained " .. n .. "/4")
