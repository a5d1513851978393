-- Entry points the C host calls: prepare the runbook's globals, run it, check it.
local host = require "rbl.host"
local runbook = require "rbl.runbook"
local families = require "rbl.families"
local params = require "rbl.params"
local partial = require "rbl.partial"

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
-- The core family is loaded at once; every other family on the first touch of one of its
-- names (the sandbox's global lookup calls the loader; pairs(_G) loads them all first), so a
-- run pays only for the families it uses. -> g (the core's names), lazy (name -> loader)
local function build_globals(book)
  local g, want, members, owner = {}, {}, {}, {}
  local lazy, loaded = {}, {}
  for _, f in ipairs(families) do
    for _, n in ipairs(f.globals) do
      want[n] = f.name
      local t = n:match("^([^.]+)%.")
      if t then members[t] = true elseif f.name ~= "core" then owner[n] = f end
    end
  end
  -- families see one table of every global (isolation asks for docker and kube through it),
  -- loading a family when one of its names is read
  local all = setmetatable({}, { __index = function(_, k)
    local f = owner[k]
    if f and not loaded[f.name] then lazy[k](k) end
    return rawget(g, k)
  end })
  local function load(f)
    loaded[f.name] = true
    local mod = require(f.module)
    local out = {}
    for k, v in pairs(mod.globals(book, all)) do
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
      out[k] = v
    end
    for n, fam in pairs(want) do
      if fam == f.name and n ~= "tenant" then -- tenant: computed per task by the sandbox
        error(string.format("rbl: family %s does not provide its registered name %s (bug in rbl)", fam, n), 0)
      end
    end
    for n, o in pairs(owner) do
      if o == f then lazy[n] = nil end
    end
    return out
  end
  for _, f in ipairs(families) do
    if f.name == "core" then
      load(f)
    else
      local function loader() return load(f) end
      for n, o in pairs(owner) do
        if o == f then lazy[n] = loader end
      end
    end
  end
  -- notify's config on_end summary is sent even when the runbook never names notify
  local cfg = host.config()
  local ncfg = type(cfg) == "table" and rawget(cfg, "notify")
  if type(ncfg) == "table" and rawget(ncfg, "on_end") ~= nil and lazy.notify then lazy.notify("notify") end
  return g, lazy
end

-- -> book, extras (the globals the sandbox adds to the standard allow-list, the core's now),
--    lazy (name -> function loading the family that owns it: returns that family's globals)
function M.prepare(default_id)
  local book = runbook.new_book(default_id)
  local g, lazy = build_globals(book)
  return book, g, lazy
end

function M.main(book, chunk)
  return runbook.main(book, chunk)
end

-- Before a run (src/cli/preflight.c): evaluate top-level code with inert primitives, then
-- check --param and the step selection against what it declared. -> "" (fine), the problem,
-- or with help, the runbook's parameters and steps. A declaration the inert evaluation did not
-- reach (top-level code stopped before it) is checked by the run itself when it is made.
function M.preflight(book, chunk, help)
  local _, _, nerr = host.run_all({ chunk })
  local complete = nerr == 0
  if help then
    local text = params.help(book.meta, book.params_spec, book.steps)
    if not complete then text = text .. "(top-level code stopped under inert evaluation: the list may be incomplete)\n" end
    return text
  end
  if book.usage_error then return book.usage_error end
  local info = host.info()
  if book.params_spec then
    local _, err = params.resolve(book.params_spec, info.cli_params or {})
    if err then return err end
  end
  if not complete then return "" end
  local _, err = partial.select(book, info.select)
  if err then return err end
  if info.resume then
    local skip, from = partial.resume(book, info.resume)
    if not skip then return from end
  end
  return ""
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
