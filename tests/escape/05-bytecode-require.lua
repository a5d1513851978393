-- expect: exit=0 stdout~"^contained binary chunks are not allowed$"
-- run.sh writes bytecode_mod.lua (luac output, or a \27Lua header) into the runbook dir.
local ok, e = pcall(require, "bytecode_mod")
print(ok and "LOADED" or ("contained " .. (tostring(e):match("binary chunks are not allowed") or tostring(e))))
