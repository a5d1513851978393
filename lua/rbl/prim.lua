-- The one path every primitive takes: begin -> scope -> intent (durable) -> effect -> result.
local host = require "rbl.host"

local M = {}
local unpack, pcall, error, type = table.unpack, pcall, error, type

-- Hooks the DSL sets so effects can report reversible changes and drift to the current step.
M.on_undo = function() end

local function fail_before_intent(call, name, args, err)
  host.record("failed", { call = call:id(), prim = name, tenant = call:tenant(), phase = "scope",
    error = type(err) == "table" and { code = err.code, message = err.message } or { code = "failed", message = tostring(err) } })
  error(err, 0)
end

-- impl.scope(call, ...) -> target (optional; reads only); impl.effect(call, ...) ->
-- value, summary, before, undo (undo: a function that reverses the change, for rollback "auto").
function M.define(name, impl)
  local scope, effect = impl.scope, impl.effect
  return function(...)
    local call, args, n = host.begin(name, ...)
    local target
    if scope then
      local ok, t = pcall(scope, call, unpack(args, 1, n))
      if not ok then fail_before_intent(call, name, args, t) end
      target = t
    end
    host.intent(call, args, target)
    local ok, res, summary, before, undo = pcall(effect, call, unpack(args, 1, n))
    if not ok then
      host.result(call, false, res)
      error(res, 0)
    end
    host.result(call, true, nil, summary, before)
    if undo then M.on_undo(name, call:id(), undo) end
    return res
  end
end

return M
