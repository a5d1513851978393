-- expect: exit=3 stderr~"memory limit of 64 MiB exceeded.*limits.memory_mb"
-- The parsed tree is outside Lua's allocator: the run's byte budget counts it.
local s = "[" .. string.rep("1,", 4e6) .. "1]"
local ok, v = pcall(json.decode, s)
print("decoded", ok, v and #v)
