-- Entry points the C host calls: prepare the runbook's globals, run it, check it.
local host = require "rbl.host"
local runbook = require "rbl.runbook"
local families = require "rbl.families"

local M = {}

-- What a family exported, as registry names: "name", and "t.f" for each member of a table
-- of functions. A table the registry gives no members must hold data only (tenants, params).
local function exported(k, v, members, out)
  out[#out + 1] = k
  if type(v) == "table" and (getmetatable(v) == nil or getmetatable(v) == "read-only") then
    for mk, mv in pairs(v) do
      if members[k] or type(mv) == "function" then out[#out + 1] = k .. "." .. tostring(mk) end
    end
  end
end

-- Builds the sandbox's globals from the families registry (src/families/families.c), and
-- holds every family to its row: nothing unregistered, nothing registered missing.
local function build_globals(book)
  local g, want, members = {}, {}, {}
  for _, f in ipairs(families) do
    for _, n in ipairs(f.globals) do
      want[n] = f.name
      local t = n:match("^([^.]+)%.")
      if t then members[t] = true end
    end
  end
  for _, f in ipairs(families) do
    local mod = require(f.module)
    for k, v in pairs(mod.globals(book, g)) do
      if g[k] ~= nil then error(string.format("rbl: family %s redefines global %s (bug in rbl)", f.name, k), 0) end
      local names = {}
      exported(k, v, members, names)
      for _, n in ipairs(names) do
        if want[n] ~= f.name then
          error(string.format("rbl: family %s exports %s, which its registry row does not name (bug in rbl)", f.name, n), 0)
        end
        want[n] = nil
      end
      g[k] = v
    end
  end
  for n, fam in pairs(want) do
    if n ~= "tenant" then -- computed per task by the sandbox
      error(string.format("rbl: family %s does not provide its registered name %s (bug in rbl)", fam, n), 0)
    end
  end
  return g
end

-- -> book, extras (the globals the sandbox adds to the standard allow-list)
function M.prepare(default_id)
  local book = runbook.new_book(default_id)
  return book, build_globals(book)
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
