-- expect: exit=1 stderr~"timed out" stdout!~"swallowed"
-- coroutine.close runs the coroutine's pending __close handlers; a step timeout raised in one
-- came back as (false, err) and the run ended resolved. It must end the run like any timeout.
local co = coroutine.create(function()
  local x <close> = setmetatable({}, { __close = function() while true do end end })
  coroutine.yield()
end)
coroutine.resume(co)
local ok, err = coroutine.close(co)
print("swallowed: " .. tostring(ok) .. " " .. tostring(err))
