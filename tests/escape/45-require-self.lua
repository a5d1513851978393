-- expect: exit=0 stdout~"^contained$"
-- self_mod.lua requires itself: a clean error, not a crash
local ok, e = pcall(require, "self_mod")
print(ok and "LOADED" or "contained")
