-- rbl.iac: the intended state of infrastructure, read from files beside the runbook
-- (Terraform state / `terraform show -json`, Kubernetes manifests, JSON, YAML).
--
-- File access is rbl.drift.c (src/families/drift/drift.c): paths are relative to the runbook's directory and
-- confined to it. Everything else here is pure Lua over decoded tables, so the address
-- and manifest lookups are testable with a stubbed reader (M.set_reader).
-- Reference: src/families/drift/drift.md.

local M = {}

local type, ipairs, pairs, tostring, tonumber, error, setmetatable, pcall, require =
  type, ipairs, pairs, tostring, tonumber, error, setmetatable, pcall, require
local sfmt, concat, sort = string.format, table.concat, table.sort

local reader  -- {json = fn(path) -> value, yaml = fn(path) -> array of documents}
local NULL    -- json.null, read as "absent"

local function get_reader()
  if not reader then
    local ok, iacc = pcall(require, "rbl.drift.c")
    if not ok then error("iac: the rbl.drift.c host module is not available", 0) end
    reader = { json = iacc.read_json, yaml = iacc.read_yaml }
  end
  if NULL == nil then
    local ok, json = pcall(require, "rbl.json")
    NULL = ok and type(json) == "table" and json.null or false
  end
  return reader
end

-- Tests and tools: set_reader{json = fn, yaml = fn, null = sentinel}.
function M.set_reader(r)
  reader = r and { json = r.json, yaml = r.yaml } or nil
  NULL = r and r.null or false
end

-- A structured primitive error (host.raise, the one error object); under plain lua5.4 (the
-- family's own tests) a table of the same shape.
local function raise(code, fmt, ...)
  local msg = sfmt(fmt, ...)
  local ok, host = pcall(require, "rbl.host")
  if ok and type(host) == "table" and host.raise then host.raise(code, msg) end
  error({ code = code, message = msg }, 0)
end

local function val(x)
  if x == NULL and NULL then return nil end
  return x
end

local function is_list(t)
  return type(t) == "table" and (t[1] ~= nil or next(t) == nil)
end

---------------------------------------------------------------------------- addresses

-- Parses a resource address: module.a["k"].module.b[0].data.type.name["key"].
-- Returns {modules = {{name, key}...}, mode, type, name, key, has_key} or nil, why.
local function parse_address(addr)
  local pos, n = 1, #addr
  local function ident()
    local s = addr:match("^[%a_][%w_%-]*", pos)
    if s then pos = pos + #s end
    return s
  end
  local function index()
    if addr:sub(pos, pos) ~= "[" then return nil, false end
    pos = pos + 1
    local key
    if addr:sub(pos, pos) == '"' then
      local buf, j = {}, pos + 1
      while j <= n do
        local c = addr:sub(j, j)
        if c == "\\" then buf[#buf + 1] = addr:sub(j + 1, j + 1); j = j + 2
        elseif c == '"' then break
        else buf[#buf + 1] = c; j = j + 1 end
      end
      if j > n then return nil, nil, "unterminated string" end
      key, pos = concat(buf), j + 1
    else
      local num = addr:match("^%d+", pos)
      if not num then return nil, nil, "index must be a number or a quoted string" end
      key, pos = tonumber(num), pos + #num
    end
    if addr:sub(pos, pos) ~= "]" then return nil, nil, "expected ]" end
    pos = pos + 1
    return key, true
  end
  local function dot()
    if addr:sub(pos, pos) ~= "." then return false end
    pos = pos + 1
    return true
  end
  local a = { modules = {}, mode = "managed" }
  while addr:sub(pos, pos + 6) == "module." do
    pos = pos + 7
    local name = ident()
    if not name then return nil, "module name expected" end
    local key, has, why = index()
    if why then return nil, why end
    a.modules[#a.modules + 1] = { name = name, key = key, has_key = has }
    if not dot() then return nil, "resource expected after module." .. name end
  end
  if addr:sub(pos, pos + 4) == "data." then a.mode = "data"; pos = pos + 5 end
  a.type = ident()
  if not a.type or not dot() then return nil, "expected TYPE.NAME" end
  a.name = ident()
  if not a.name then return nil, "expected TYPE.NAME" end
  local key, has, why = index()
  if why then return nil, why end
  a.key, a.has_key = key, has
  if pos <= n then return nil, sfmt("unexpected %q", addr:sub(pos)) end
  return a
end
M.parse_address = parse_address

local function key_text(k)
  if k == nil then return "" end
  if type(k) == "number" then return sfmt("[%d]", k) end
  return '["' .. tostring(k):gsub('[\\"]', "\\%0") .. '"]'
end

local function module_text(mods)
  local out = {}
  for i, m in ipairs(mods) do out[i] = "module." .. m.name .. key_text(m.key) end
  return concat(out, ".")
end

local function resource_text(module, mode, rtype, name, key)
  local s = (mode == "data" and "data." or "") .. rtype .. "." .. name .. key_text(key)
  if module and module ~= "" then s = module .. "." .. s end
  return s
end

---------------------------------------------------------------------------- terraform

-- A cty dynamic value as the state stores it ({value = v, type = T}) unwraps to v.
local PRIMS = { string = true, number = true, bool = true, dynamic = true }
local function is_cty_type(t)
  if type(t) == "string" then return PRIMS[t] ~= nil end
  return is_list(t) and type(t[1]) == "string" and #t == 2
end

local function unwrap_attrs(attrs)
  if type(attrs) ~= "table" then return attrs end
  local out = {}
  for k, v in pairs(attrs) do
    if type(v) == "table" and not is_list(v) and v.value ~= nil and is_cty_type(v.type) then
      local only_two = true
      for kk in pairs(v) do if kk ~= "value" and kk ~= "type" then only_two = false end end
      if only_two then v = v.value end
    end
    out[k] = v
  end
  return setmetatable(out, getmetatable(attrs))
end

-- Every instance of a state v4 document: {address, attributes}.
local function state_instances(doc)
  local out = {}
  for _, r in ipairs(doc.resources or {}) do
    local module = val(r.module)
    for _, inst in ipairs(r.instances or {}) do
      out[#out + 1] = {
        address = resource_text(module, val(r.mode), r.type, r.name, val(inst.index_key)),
        values = function() return unwrap_attrs(inst.attributes) end,
      }
    end
  end
  return out
end

-- Every resource of a `terraform show -json` (or plan's planned_values) document.
local function show_instances(doc)
  local out = {}
  local function walk(mod)
    if type(mod) ~= "table" then return end
    for _, r in ipairs(val(mod.resources) or {}) do
      out[#out + 1] = { address = r.address, values = function() return r.values end }
    end
    for _, child in ipairs(val(mod.child_modules) or {}) do walk(child) end
  end
  local vals = val(doc.values) or val(doc.planned_values)
  walk(vals and val(vals.root_module))
  return out
end

-- Up to five addresses most like the one asked for: same TYPE.NAME, same name, same
-- type, same module, then the shorter.
local function near(insts, a, want_module)
  local scored = {}
  for _, inst in ipairs(insts) do
    local s = inst.address
    local score = 0
    if s:find(a.type .. "." .. a.name, 1, true) then score = score + 4 end
    if s:find("." .. a.name, 1, true) then score = score + 2 end
    if s:find(a.type .. ".", 1, true) then score = score + 1 end
    if s:sub(1, #want_module) == want_module then score = score + 1 end
    scored[#scored + 1] = { s = s, score = score }
  end
  sort(scored, function(x, y)
    if x.score ~= y.score then return x.score > y.score end
    if #x.s ~= #y.s then return #x.s < #y.s end
    return x.s < y.s
  end)
  local out = {}
  for i = 1, math.min(5, #scored) do out[i] = scored[i].s end
  return concat(out, ", ")
end

-- Finds address in a decoded state v4 or show -json document: the attribute values.
function M.find_terraform(doc, address, where)
  where = where or "document"
  if type(address) ~= "string" then raise("invalid", "iac.terraform: address must be a string") end
  local a, why = parse_address(address)
  if not a then raise("invalid", "iac.terraform: bad address %q: %s", address, why) end
  local insts
  if type(doc) == "table" and val(doc.resources) and val(doc.version) then
    if val(doc.version) ~= 4 then
      raise("invalid", "iac.terraform: %s: state version %s is not supported (4 is)", where, tostring(val(doc.version)))
    end
    insts = state_instances(doc)
  elseif type(doc) == "table" and (val(doc.values) or val(doc.planned_values)) then
    insts = show_instances(doc)
  else
    raise("invalid", "iac.terraform: %s: not a Terraform state (v4) or `terraform show -json` document", where)
  end
  local mod = module_text(a.modules)
  local want = resource_text(mod, a.mode, a.type, a.name, a.key)
  for _, inst in ipairs(insts) do
    if inst.address == want then return inst.values() end
  end
  if #insts == 0 then raise("not_found", "iac.terraform: %s: no resource %s (the file has no resources)", where, want) end
  raise("not_found", "iac.terraform: %s: no resource %s; near: %s", where, want, near(insts, a, mod))
end

-- iac.terraform(path, address) -> the instance's attribute values
function M.terraform(path, address)
  local doc = get_reader().json(path)
  return M.find_terraform(doc, address, path)
end

---------------------------------------------------------------------------- manifests

local function objects_of(docs)
  local out = {}
  local function add(d)
    d = val(d)
    if type(d) ~= "table" then return end
    if is_list(d) then for _, x in ipairs(d) do add(x) end; return end
    local items = val(d.items)
    if type(d.kind) == "string" and d.kind:match("List$") and type(items) == "table" then
      for _, x in ipairs(items) do add(x) end
      return
    end
    out[#out + 1] = d
  end
  add(docs)
  return out
end

-- Finds kind/name (kind case-insensitive, namespace optional) among decoded documents.
function M.find_manifest(docs, kind, name, namespace, where)
  where = where or "document"
  if type(kind) ~= "string" or type(name) ~= "string" then
    raise("invalid", "iac.manifest: kind and name must be strings")
  end
  if namespace ~= nil and type(namespace) ~= "string" then
    raise("invalid", "iac.manifest: namespace must be a string")
  end
  local lk = kind:lower()
  local found, seen = {}, {}
  for _, o in ipairs(objects_of(docs)) do
    local md = type(val(o.metadata)) == "table" and o.metadata or {}
    local ns = val(md.namespace)
    local okind = type(o.kind) == "string" and o.kind or "?"
    seen[#seen + 1] = okind .. "/" .. tostring(val(md.name)) .. (ns and (" (" .. ns .. ")") or "")
    if okind:lower() == lk and val(md.name) == name and (namespace == nil or ns == nil or ns == namespace) then
      found[#found + 1] = o
    end
  end
  if #found == 1 then return found[1] end
  if #found > 1 then
    local nss = {}
    for i, o in ipairs(found) do nss[i] = tostring(val(o.metadata.namespace)) end
    raise("invalid", "iac.manifest: %s: %s/%s is in several namespaces (%s): pass one",
      where, kind, name, concat(nss, ", "))
  end
  sort(seen)
  raise("not_found", "iac.manifest: %s: no %s/%s%s; the file has: %s", where, kind, name,
    namespace and (" in namespace " .. namespace) or "", #seen > 0 and concat(seen, ", ") or "nothing")
end

-- iac.manifest(path, kind, name [, namespace]) -> the object
function M.manifest(path, kind, name, namespace)
  local r = get_reader()
  local docs
  if type(path) == "string" and path:lower():match("%.json$") then docs = r.json(path)
  else docs = r.yaml(path) end
  return M.find_manifest(docs, kind, name, namespace, path)
end

---------------------------------------------------------------------------- plain files

-- iac.json(path) -> the document
function M.json(path) return get_reader().json(path) end

-- iac.yaml(path) -> the document when the file holds one, else the array of documents.
-- Empty documents (a trailing "---", as kubectl writes) are left out, as kubectl does.
function M.yaml(path)
  local docs = get_reader().yaml(path)
  if type(docs) ~= "table" then return docs end
  local kept = setmetatable({}, getmetatable(docs))
  for i = 1, #docs do
    if val(docs[i]) ~= nil then kept[#kept + 1] = docs[i] end
  end
  if #kept == 1 then return kept[1] end
  return kept
end

return M
