-- rbl repl: evaluate one line as its own task and format what it returns.
local host = require "rbl.host"
local json = require "rbl.json"

local M = {}

local function show(v)
  if type(v) == "table" then
    local s = json.encode(v, true)
    if s then return s end
  end
  return tostring(v)
end

-- The line runs as a child task, so Ctrl-C cancels it and the session goes on.
function M.line(chunk)
  local res, errs, n = host.run_all({ function() return table.pack(chunk()) end })
  if n > 0 then error(errs[1], 0) end
  local r, out = res[1], {}
  for i = 1, r.n do out[i] = show(r[i]) end
  return table.concat(out, "\t")
end

return M
