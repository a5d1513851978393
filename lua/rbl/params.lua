-- Declared parameters: runbook{ params = {...} } read as a contract, --param values checked
-- against it (unknown name, type, choices, required), and "did you mean" for a mistyped name.
local M = {}
local type, pairs, ipairs, tostring, tonumber = type, pairs, ipairs, tostring, tonumber
local fmt = string.format

local FIELDS = { type = true, required = true, default = true, choices = true, description = true }
local TYPES = { string = true, number = true, boolean = true }

-- Levenshtein distance, bounded: names are short, the lists small (rbl check's linter uses it too).
local function distance(a, b)
  if #a > 64 or #b > 64 then return math.huge end
  local prev = {}
  for j = 0, #b do prev[j] = j end
  for i = 1, #a do
    local cur = { [0] = i }
    for j = 1, #b do
      local cost = a:sub(i, i) == b:sub(j, j) and 0 or 1
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    end
    prev = cur
  end
  return prev[#b]
end
M.distance = distance

-- " (did you mean 'x'?)" for the closest candidate within a third of the name's length
-- (at least 2 edits), the same name in another case, or one the name is a prefix of; else "".
function M.suggest(name, candidates)
  name = tostring(name)
  local best, bestd = nil, math.huge
  for _, c in ipairs(candidates) do
    local d = c:lower() == name:lower() and 0 or distance(name, c)
    if d > 1 and #name >= 3 and (c:sub(1, #name) == name or name:sub(1, #c) == c) then d = 1 end -- a prefix
    if d < bestd or (d == bestd and best and c < best) then best, bestd = c, d end
  end
  if best and bestd <= math.max(2, #name // 3) then return fmt(" (did you mean '%s'?)", best) end
  return ""
end

local function sorted_keys(t)
  local ks = {}
  for k in pairs(t) do ks[#ks + 1] = k end
  table.sort(ks)
  return ks
end
M.sorted_keys = sorted_keys

local function show(v)
  return type(v) == "string" and fmt("%q", v) or tostring(v)
end

-- Reads runbook{ params = ... }: a plain value is a default (its type is the parameter's);
-- a table is a declaration. -> spec {name = {type, required, default, choices, description}}
-- or nil, message naming the parameter and the fix.
function M.declare(params)
  local spec = {}
  for name, d in pairs(params) do
    if type(name) ~= "string" or not name:match("^[%a_][%w_%.%-]*$") then
      return nil, fmt("params: name %s must be letters, digits, _ . - (starting with a letter or _)", show(name))
    end
    local where = "params." .. name
    if type(d) ~= "table" then
      if not TYPES[type(d)] then
        return nil, fmt("%s: a default must be a string, number or boolean, or a declaration table {type=, default=, ...}; got a %s", where, type(d))
      end
      spec[name] = { type = type(d), default = d }
    else
      for k in pairs(d) do
        if not FIELDS[k] then
          return nil, fmt("%s: unknown field '%s'%s (fields: type, required, default, choices, description)",
            where, tostring(k), M.suggest(k, sorted_keys(FIELDS)))
        end
      end
      local p = { required = d.required, default = d.default, choices = d.choices, description = d.description }
      local t = d.type
      if t == nil then
        if d.default ~= nil then t = type(d.default)
        elseif type(d.choices) == "table" and d.choices[1] ~= nil then t = type(d.choices[1])
        else t = "string" end
      end
      if not TYPES[t] then return nil, fmt("%s: type must be \"string\", \"number\" or \"boolean\", got %s", where, show(t)) end
      p.type = t
      if p.required ~= nil and type(p.required) ~= "boolean" then return nil, where .. ": required must be true or false" end
      if p.description ~= nil and type(p.description) ~= "string" then return nil, where .. ": description must be a string" end
      if p.required and p.default ~= nil then
        return nil, where .. ": a required parameter has no default (drop one of required and default)"
      end
      if p.default ~= nil and type(p.default) ~= t then
        return nil, fmt("%s: default %s is not a %s", where, show(p.default), t)
      end
      if p.choices ~= nil then
        if type(p.choices) ~= "table" or p.choices[1] == nil then return nil, where .. ": choices must be a non-empty list" end
        local n = 0
        for _ in pairs(p.choices) do n = n + 1 end
        if n ~= #p.choices then return nil, where .. ": choices must be a list" end
        for _, c in ipairs(p.choices) do
          if type(c) ~= t then return nil, fmt("%s: choice %s is not a %s", where, show(c), t) end
        end
        if p.default ~= nil and not M.in_choices(p, p.default) then
          return nil, fmt("%s: default %s is not one of its choices", where, show(p.default))
        end
      end
      spec[name] = p
    end
  end
  return spec
end

function M.in_choices(p, v)
  for _, c in ipairs(p.choices) do if c == v then return true end end
  return false
end

local function choices_text(p)
  local t = {}
  for i, c in ipairs(p.choices) do t[i] = tostring(c) end
  return table.concat(t, ", ")
end

-- A --param string as the declared type, or nil, why.
local function convert(p, raw)
  if p.type == "number" then
    local n = tonumber(raw)
    if n == nil or n ~= n or n == math.huge or n == -math.huge then return nil, "is not a number" end
    return n
  elseif p.type == "boolean" then
    if raw == "true" or raw == "yes" or raw == "1" then return true end
    if raw == "false" or raw == "no" or raw == "0" then return false end
    return nil, "is not a boolean (true/false, yes/no, 1/0)"
  end
  return raw
end

-- The values the runbook sees: --param (cli: name -> string) over the defaults, every value
-- checked. -> values, or nil, message (the first problem; unknown names first).
-- opts.partial: skip the required check (rbl check evaluates without --param).
function M.resolve(spec, cli, opts)
  local names = sorted_keys(spec)
  for _, k in ipairs(sorted_keys(cli)) do
    if not spec[k] then
      return nil, fmt("unknown parameter --param %s=...%s; this runbook's parameters: %s (rbl run FILE --help)",
        k, M.suggest(k, names), #names > 0 and table.concat(names, ", ") or "none")
    end
  end
  local values = {}
  for _, name in ipairs(names) do
    local p, raw = spec[name], cli[name]
    if raw ~= nil then
      local v, why = convert(p, raw)
      if v == nil then return nil, fmt("--param %s=%s: %s (parameter %s is a %s)", name, raw, why, name, p.type) end
      if p.choices and not M.in_choices(p, v) then
        local strs = {}
        for i, c in ipairs(p.choices) do strs[i] = tostring(c) end
        return nil, fmt("--param %s=%s: not one of %s%s", name, raw, choices_text(p), M.suggest(raw, strs))
      end
      values[name] = v
    elseif p.required and not (opts and opts.partial) then
      return nil, fmt("missing --param %s=...: the parameter is required%s", name,
        p.description and (" (" .. p.description .. ")") or "")
    else
      values[name] = p.default
    end
  end
  return values
end

-- `rbl run FILE --help`: the runbook's parameters, one per line.
function M.help(meta, spec, steps)
  local out = {}
  out[#out + 1] = fmt("runbook %s%s", tostring(meta.id or "?"), meta.description and (": " .. meta.description) or "")
  local names = sorted_keys(spec or {})
  if #names == 0 then
    out[#out + 1] = "parameters: none (--param is refused)"
  else
    out[#out + 1] = "parameters (--param NAME=VALUE):"
    for _, name in ipairs(names) do
      local p = spec[name]
      local bits = { p.type }
      if p.required then bits[#bits + 1] = "required" end
      if p.default ~= nil then bits[#bits + 1] = "default " .. tostring(p.default) end
      if p.choices then bits[#bits + 1] = "one of " .. choices_text(p) end
      out[#out + 1] = fmt("  %-20s %s%s", name, table.concat(bits, ", "), p.description and ("  " .. p.description) or "")
    end
  end
  if steps and #steps > 0 then
    local ns = {}
    for i, s in ipairs(steps) do ns[i] = s.name end
    out[#out + 1] = "steps (--only, --from, --skip): " .. table.concat(ns, ", ")
  end
  return table.concat(out, "\n") .. "\n"
end

return M
