-- Entry points the C host calls: prepare the runbook's globals, run it, check it.
local host = require "rbl.host"
local runbook = require "rbl.runbook"
local std = require "rbl.std"

local M = {}

local function coerce(v, like)
  if type(like) == "number" then
    local n = tonumber(v)
    if n == nil then error(string.format("--param: '%s' is not a number", v), 0) end
    return n
  elseif type(like) == "boolean" then
    if v == "true" or v == "1" or v == "yes" then return true end
    if v == "false" or v == "0" or v == "no" then return false end
    error(string.format("--param: '%s' is not a boolean", v), 0)
  end
  return v
end

local function params_proxy(book, cli)
  local proxy = {}
  setmetatable(proxy, {
    __index = function(_, k)
      local defaults = book.meta.params or {}
      local v = cli[k]
      if v ~= nil then return coerce(v, defaults[k]) end
      return defaults[k]
    end,
    __newindex = function(_, k) error("params are read-only (" .. tostring(k) .. ")", 2) end,
    __pairs = function()
      local all = {}
      for k, v in pairs(book.meta.params or {}) do all[k] = v end
      for k, v in pairs(cli) do all[k] = coerce(v, (book.meta.params or {})[k]) end
      return next, all, nil
    end,
    __metatable = "read-only",
  })
  return host.protect(proxy)
end

-- -> book, extras (the globals the sandbox adds to the standard allow-list)
function M.prepare(default_id)
  local info = host.info()
  local book = runbook.new_book(default_id)
  local g = std.build(book)
  g.runbook, g.step = book.runbook, book.step
  local ts = {}
  for i, t in ipairs(host.tenants()) do ts[i] = t end
  g.tenants = ts
  g.incident = info.incident
  g.params = params_proxy(book, info.cli_params or {})
  g.dry_run = info.dry_run and true or false
  return book, g
end

function M.main(book, chunk)
  return runbook.main(book, chunk)
end

-- rbl check: evaluate top-level code with inert primitives, then check the structure.
function M.check(book, chunk)
  local res, errs, n = host.run_all({ chunk })
  if n > 0 then
    local e = errs[1]
    if not (type(e) == "table" and rawget(e, "code") == "check") then
      return (tostring(e):match("^[^\n]*"))
    end
  end
  local problems = {}
  for _, s in ipairs(book.steps) do
    if s.def.rollback == "auto" and not s.def.run then problems[#problems + 1] = s.name .. ": rollback without run" end
  end
  if #book.steps > 0 and not book.declared then
    problems[#problems + 1] = "steps declared without runbook{ id = ... }"
  end
  return table.concat(problems, "; ")
end

return M
