-- expect: exit=0 stdout~"^contained 6/6$" stdout~"^print: \[redacted\] \[redacted\]$" stdout!~"s3cr3t-canary"
local s = secret("RBL_ESC_TOKEN")
local n = 0
for _, f in ipairs {
  function() return s:upper() end,
  function() return #s end,
  function() return s .. "" end,
  function() return string.upper(s) end,
  function() return s.x end,
  function() return string.rep(s, 2) end,
} do if not pcall(f) then n = n + 1 end end
print("print: " .. tostring(s) .. " " .. string.format("%s", s))
print(json.encode({ s }))
local r = exec({ "/bin/echo", s })
print("echo: " .. r.stdout)
assert(getmetatable(s) == "secret")
print("contained " .. n .. "/6")
