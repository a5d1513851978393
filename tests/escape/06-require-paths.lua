-- expect: exit=0 stdout~"^contained 11/11$"
local bad = { "../x", "/etc/passwd", "rbl.host", "rbl.std", "ffi", "io", "os", "debug",
  "outside_link", "..escape.x", "a/../../etc/passwd" }
local n = 0
for _, m in ipairs(bad) do
  local ok, e = pcall(require, m)
  if not ok then n = n + 1 else print("LOADED " .. m) end
end
print("contained " .. n .. "/" .. #bad)
