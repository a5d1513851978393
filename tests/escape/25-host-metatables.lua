-- expect: exit=0 stdout~"^contained 6/6$"
local n = 0
local function hidden(v) local m = getmetatable(v); if type(m) ~= "table" then n = n + 1 else print("LEAK", v) end end
local ok, err = pcall(exec, "not a table")          -- a host error object (rbl.error)
hidden(err)
hidden(json.decode("[1,2]"))                        -- json array marker metatable
hidden(json.decode("{}"))
hidden(json.array({}))
hidden(drift_compare({ a = 1 }, { a = 2 }))         -- a drift list
hidden(json.null)
-- a traceback-free error still only carries text
assert(not tostring(err):find("rbl%.host"))
print("contained " .. n .. "/6")
