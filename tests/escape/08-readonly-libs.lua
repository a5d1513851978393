-- expect: exit=0 stdout~"^refused 13/13$" stdout~"^format ok  1\.2 07$" stderr~"log ok 3 items"
local evil = function() return "EVIL" end
local tries = {
  function() string.format = evil end,
  function() table.insert = evil end,
  function() rawset(string, "format", evil) end,
  function() rawset(table, "concat", evil) end,
  function() setmetatable(string, {}) end,
  function() getmetatable("").__index = { format = evil } end,
  function() getmetatable("").__index.format = evil end,
  function() local _, raw = pairs(string); raw.format = evil end,
  function() local _, raw = pairs(string); rawset(raw, "format", evil) end,
  function() math.pi = 3 end,
  function() os.date = evil end,
  function() coroutine.wrap = evil end,
  function() json.encode = evil end,
}
local n = 0
for i, f in ipairs(tries) do
  local ok = pcall(f)
  if not ok then n = n + 1 else print("NOT REFUSED " .. i) end
end
assert(getmetatable("") ~= nil and type(getmetatable("")) ~= "table", "real string metatable leaked")
print("refused " .. n .. "/" .. #tries)
print("format ok " .. string.format("%4.1f %02d", 1.25, 7))
log("log ok %d items %s", 3, ("x"):upper())
