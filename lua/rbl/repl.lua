-- rbl repl: evaluate one chunk as its own task, print results compactly (lists of objects as
-- aligned rows), complete names, help from the families registry and the doc pages, and save
-- a session as a runbook skeleton. The C side (src/cli/repl.c) reads lines and keeps history.
local host = require "rbl.host"
local json = require "rbl.json"
local families = require "rbl.families"
local prim = require "rbl.prim"

local M = {}
local type, pairs, ipairs, tostring, rawget, pcall = type, pairs, ipairs, tostring, rawget, pcall
local fmt = string.format

M.json_mode = false
M.ok_lines = {} -- {text, expr} of the lines that ran without error, for :save

local MAX_ROWS, MAX_WIDTH = 50, 48

local function scalar(v)
  local t = type(v)
  return t == "string" or t == "number" or t == "boolean"
end

local function cell(v)
  if v == nil then return "" end
  if v == json.null then return "null" end
  if scalar(v) then
    local s = tostring(v)
    if #s > MAX_WIDTH then s = s:sub(1, MAX_WIDTH - 3) .. "..." end
    return s
  end
  if type(v) == "table" then
    local n = #v
    if n > 0 then return fmt("[%d items]", n) end
    local k = 0
    for _ in pairs(v) do k = k + 1 end
    if k == 0 then return json.is_array(v) and "[]" or "{}" end
    return fmt("{%d fields}", k)
  end
  return "<" .. type(v) .. ">"
end

-- Columns for a list of objects: Kubernetes objects and Docker containers by what people look
-- at; anything else by the scalar fields most rows have (at most 6).
local function columns(rows)
  local first = rows[1]
  if type(rawget(first, "metadata")) == "table" then
    return {
      { "NAME", function(r) return r.metadata and r.metadata.name end },
      { "NAMESPACE", function(r) return r.metadata and r.metadata.namespace end },
      { "KIND", function(r) return r.kind end },
      { "STATUS", function(r) return type(r.status) == "table" and (r.status.phase or r.status.readyReplicas) or nil end },
      { "CREATED", function(r) return r.metadata and r.metadata.creationTimestamp end },
    }
  end
  if rawget(first, "Id") and type(rawget(first, "Names")) == "table" then
    return {
      { "NAME", function(r) return type(r.Names) == "table" and tostring(r.Names[1] or ""):gsub("^/", "") or nil end },
      { "ID", function(r) return type(r.Id) == "string" and r.Id:sub(1, 12) or nil end },
      { "IMAGE", function(r) return r.Image end },
      { "STATE", function(r) return r.State end },
      { "STATUS", function(r) return r.Status end },
    }
  end
  local count, order = {}, {}
  for i = 1, math.min(#rows, MAX_ROWS) do
    if type(rows[i]) == "table" then
      for k, v in pairs(rows[i]) do
        if type(k) == "string" and (scalar(v) or v == json.null) then
          if not count[k] then order[#order + 1] = k end
          count[k] = (count[k] or 0) + 1
        end
      end
    end
  end
  local FIRST = { name = 1, id = 2, kind = 3, namespace = 4, status = 5, state = 6 }
  table.sort(order, function(a, b)
    local fa, fb = FIRST[a:lower()] or 99, FIRST[b:lower()] or 99
    if fa ~= fb then return fa < fb end
    if count[a] ~= count[b] then return count[a] > count[b] end
    return a < b
  end)
  local cols = {}
  for i = 1, math.min(#order, 6) do
    local k = order[i]
    cols[i] = { k:upper(), function(r) return r[k] end }
  end
  return cols
end

local function rows_text(rows)
  local cols = columns(rows)
  if #cols == 0 then return nil end
  local cells, width = {}, {}
  for c, col in ipairs(cols) do width[c] = #col[1] end
  local n = math.min(#rows, MAX_ROWS)
  for i = 1, n do
    local line = {}
    for c, col in ipairs(cols) do
      local ok, v = pcall(col[2], rows[i])
      line[c] = cell(ok and v or nil)
      if #line[c] > width[c] then width[c] = #line[c] end
    end
    cells[i] = line
  end
  local out = {}
  local function emit(vals)
    local parts = {}
    for c = 1, #cols do parts[c] = c < #cols and fmt("%-" .. width[c] .. "s", vals[c]) or vals[c] end
    out[#out + 1] = (table.concat(parts, "  "):gsub("%s+$", ""))
  end
  local head = {}
  for c, col in ipairs(cols) do head[c] = col[1] end
  emit(head)
  for i = 1, n do emit(cells[i]) end
  if #rows > n then out[#out + 1] = fmt("... %d more (:json for all)", #rows - n) end
  out[#out + 1] = fmt("(%d %s)", #rows, #rows == 1 and "row" or "rows")
  return table.concat(out, "\n")
end

local function is_list_of_tables(v)
  if type(v) ~= "table" or #v == 0 then return false end
  for i = 1, math.min(#v, 5) do if type(v[i]) ~= "table" then return false end end
  return true
end

-- One object: its scalar fields as "key: value", nested ones as their size.
local function object_text(v)
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  if #keys == 0 then return json.is_array(v) and "[]" or "{}" end
  table.sort(keys, function(a, b)
    local sa, sb = scalar(v[a]), scalar(v[b])
    if sa ~= sb then return sa end
    return tostring(a) < tostring(b)
  end)
  local w = 0
  for _, k in ipairs(keys) do if #tostring(k) > w then w = #tostring(k) end end
  w = math.min(w, 24)
  local out = {}
  for i, k in ipairs(keys) do
    if i > 40 then out[#out + 1] = fmt("... %d more fields (:json for all)", #keys - 40); break end
    out[#out + 1] = fmt("%-" .. w .. "s  %s", tostring(k), cell(v[k]))
  end
  return table.concat(out, "\n")
end

function M.show(v)
  if M.json_mode and type(v) == "table" then
    local s = json.encode(v, true)
    if s then return s end
  end
  if type(v) == "string" then return v end
  if type(v) ~= "table" or v == json.null then return tostring(v) end
  if getmetatable(v) and type(v.summary) == "function" and v.exists ~= nil then -- a drift list
    local ok, s = pcall(v.summary, v)
    if ok then return s end
  end
  local list = v
  if not is_list_of_tables(v) and is_list_of_tables(rawget(v, "items")) then list = v.items end
  if is_list_of_tables(list) then
    local t = rows_text(list)
    if t then return t end
  end
  local ok, t = pcall(object_text, v)
  if ok then return t end
  return tostring(v)
end

-- Every write asks on the terminal (or through `rbl approve`) unless the session started with
-- --yes; without a terminal a write is refused (docs/approvals.md).
local function write_gate(name, tenant, target)
  local info = host.info() or {}
  if info.yes then return end
  local what = name
  if type(target) == "table" then
    local t = target
    what = name .. " " .. tostring(t.kind or t.resource or t.program or "") .. " " ..
      tostring(t.name or t.container or "") .. (t.namespace and (" in " .. t.namespace) or "")
  end
  if not host.isatty() then
    host.raise("approval_denied", "rbl repl: " .. what .. ": writes are confirmed on a terminal and this " ..
      "session has none; start it with --yes to allow them")
  end
  host.record("approval_request", { message = "repl write: " .. what, tenant = tenant, step = "repl",
    approvers = 1, change = what })
  local expect = tenant or "yes" -- a write bound to no tenant: type yes
  local prompt = string.format("rbl: write: %s\ntype %s to approve, or 'no' to deny: ",
    what, tenant and ("the tenant's name (" .. tenant .. ")") or "yes")
  local who = info.user
  for _ = 1, 3 do
    local answer = host.tty_ask(prompt)
    if answer == expect then
      host.record("approval_grant", { by = who, via = "tty", tenant = tenant, step = "repl" })
      return
    end
    if answer == nil or answer == "no" or answer == "n" then break end
    prompt = string.format("'%s' is not it; type %s, or 'no': ", answer, expect)
  end
  host.record("approval_denial", { by = who, via = "tty", tenant = tenant, step = "repl" })
  host.raise("approval_denied", "rbl repl: " .. what .. ": not approved at the terminal")
end

-- Runs chunk as a child task (Ctrl-C cancels it and the session goes on); the results become
-- `_` (the first) in env. -> the text to print
function M.line(chunk, env, text, is_expr)
  prim.write_gate = write_gate
  local res, errs, n = host.run_all({ function() return table.pack(chunk()) end })
  if n > 0 then error(errs[1], 0) end
  local r, out = res[1], {}
  if r.n > 0 then rawset(env, "_", r[1]) end
  M.last = r.n > 0 and r[1] or M.last
  for i = 1, r.n do out[i] = M.show(r[i]) end
  M.ok_lines[#M.ok_lines + 1] = { text = text, expr = is_expr }
  return table.concat(out, "\t")
end

function M.note(text) M.ok_lines[#M.ok_lines + 1] = { text = text } end

-- :json: the last result as JSON; :json on|off: every table result as JSON.
function M.json_command(arg)
  if arg == "on" then M.json_mode = true; return "json output on" end
  if arg == "off" then M.json_mode = false; return "json output off" end
  if M.last == nil then return "no result yet" end
  local s, err = json.encode(M.last, true)
  return s or ("cannot encode the last result: " .. tostring(err))
end

-- ---- completion ----

local function sorted_keys(t, prefix, out, seen, sep, base)
  local ok = pcall(function()
    for k, v in pairs(t) do
      if type(k) == "string" and k:match("^[%a_][%w_]*$") and k:sub(1, #prefix) == prefix then
        local full = base .. sep .. k
        if not seen[full] then
          seen[full] = true
          out[#out + 1] = full .. (type(v) == "function" and sep ~= ":" and "(" or "")
        end
      end
    end
  end)
  return ok
end

-- Completions of text: globals (the session's env, the registry, _), the members of a table
-- path (docker., kube., _.metadata.), methods after ':'.
function M.complete(env, text)
  local out, seen = {}, {}
  local base, sep, prefix = text:match("^(.*)([%.:])([%w_]*)$")
  if not base then
    prefix = text
    for _, f in ipairs(families) do
      for _, g in ipairs(f.globals) do
        if not g:find(".", 1, true) and g:sub(1, #prefix) == prefix and not seen[g] then
          seen[g] = true
          out[#out + 1] = g .. (type(env[g]) == "function" and "(" or "")
        end
      end
    end
    sorted_keys(env, prefix, out, seen, "", "")
    for _, k in ipairs({ "help", "_" }) do
      if k:sub(1, #prefix) == prefix and not seen[k] then out[#out + 1] = k end
    end
  else
    local v = env
    for part in base:gmatch("[^%.]+") do
      if not part:match("^[%a_][%w_]*$") then return {} end
      local ok, nv = pcall(function() return v[part] end)
      if not ok or type(nv) ~= "table" then return {} end
      v = nv
    end
    sorted_keys(v, prefix, out, seen, sep, base)
  end
  table.sort(out)
  return out
end

-- ---- help ----

local function docs_text(path)
  local ok, docs = pcall(require, "rbl.docs")
  if not ok then return nil end
  return docs.get(path)
end

local function resolve(env, name)
  local v = env
  for part in name:gmatch("[^%.]+") do
    if type(v) ~= "table" then return nil end
    local ok, nv = pcall(function() return v[part] end)
    if not ok then return nil end
    v = nv
  end
  return v
end

-- The registry row and name of what help() was given: a name ("kube.get") or the value.
local function find(env, what)
  for _, f in ipairs(families) do
    for _, g in ipairs(f.globals) do
      if (type(what) == "string" and what == g) or (type(what) ~= "string" and what ~= nil and resolve(env, g) == what) then
        return f, g
      end
    end
  end
  return nil
end

local function section(text, name)
  local lines = {}
  for l in (text .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = l end
  local pat = "`" .. name:gsub("[%.%[%]%(%)%%%-%+%*%?%^%$]", "%%%0")
  for i, l in ipairs(lines) do
    if l:match("^#+ ") and l:find(pat .. "[%(`{ ]") then
      local out = { (l:gsub("^#+ ", "")) }
      for j = i + 1, math.min(#lines, i + 30) do
        if lines[j]:match("^#+ ") then break end
        out[#out + 1] = lines[j]
      end
      while out[#out] == "" do out[#out] = nil end
      return table.concat(out, "\n")
    end
  end
  for _, l in ipairs(lines) do
    if l:match("^|") and l:find(pat .. "[%(`{ ]") then
      local cells = {}
      for c in l:gmatch("|([^|]*)") do
        c = c:match("^%s*(.-)%s*$")
        if c ~= "" then cells[#cells + 1] = c end
      end
      return table.concat(cells, "\n  -> ")
    end
  end
  return nil
end

M.COMMANDS = [[
REPL commands:
  :tenant [NAME|-]   show the authorised tenants, bind to NAME (audited), or unbind (-)
  :json [on|off]     the last result as JSON; on/off: every result as JSON
  :save FILE         write this session's successful lines as a runbook skeleton
  :help              this text;  help() the families;  help(kube_patch) one primitive
  :quit              end the session (also Ctrl-D)
Lines: Lua statements or expressions (=expr prints too); an unfinished chunk continues on
the next line (>> prompt). The last result is _. Tab completes globals, family members and
the fields of _.]]

function M.help(env, what)
  if what == nil then
    local out = { "Primitive families (rbl check --list-globals lists every name):" }
    for _, f in ipairs(families) do
      out[#out + 1] = fmt("  %-10s %s", f.name, table.concat(f.globals, " "))
      out[#out + 1] = fmt("  %-10s   (%s)", "", f.doc)
    end
    out[#out + 1] = ""
    out[#out + 1] = "help(name) for one, e.g. help(kube_patch) or help(\"docker.restart\")."
    out[#out + 1] = M.COMMANDS
    return table.concat(out, "\n")
  end
  local f, name = find(env, what)
  if not f then
    if type(what) == "string" then return fmt("help: no primitive named %q (help() lists them)", what) end
    return fmt("help: that %s is not one of rbl's primitives (help() lists them)", type(what))
  end
  local text = docs_text(f.doc)
  local s = text and section(text, name)
  if not s and f.doc ~= "docs/runbook-language.md" then
    local lang = docs_text("docs/runbook-language.md")
    s = lang and section(lang, name)
  end
  return fmt("%s  (family %s, %s)\n%s", name, f.name, f.doc, s or "(no entry on the page)")
end

-- ---- banner, save ----

function M.banner()
  local cfg = host.config() or {}
  local out = {}
  local ok, conn = pcall(function() return require("rbl.kubeconfig").load(type(cfg.kube) == "table" and cfg.kube or {}) end)
  if ok and type(conn) == "table" then
    out[#out + 1] = fmt("kube:   context %s, server %s (%s)", tostring(conn.context or "in-cluster"),
      tostring(conn.server), tostring(conn.source or "in-cluster"))
  else
    local msg = type(conn) == "table" and tostring(conn.message) or tostring(conn)
    out[#out + 1] = "kube:   not configured (" .. msg:gsub("^kube: ", "") .. ")"
  end
  local d = os.getenv("DOCKER_HOST")
  if d == "" then d = nil end
  local dc = type(cfg.docker) == "table" and cfg.docker.host or nil
  out[#out + 1] = "docker: " .. (d or dc or "unix:///var/run/docker.sock") .. (d and " (DOCKER_HOST)" or dc and " (config)" or "")
  return table.concat(out, "\n")
end

-- The session's successful lines as a runbook skeleton (text), for :save.
function M.skeleton(id, incident, tenant)
  local out = {
    fmt("-- Saved by rbl repl from incident %s (tenant %s) on %s.", incident, tenant or "(several)", os.date("!%Y-%m-%dT%H:%M:%SZ")),
    "-- Review it, then: rbl check FILE; rbl run FILE --tenant " .. (tenant or "T") .. " --dry-run",
    fmt("runbook { id = %q, description = %q }", id, "investigation saved from rbl repl, incident " .. incident),
    "",
    "step \"investigate\" {",
    "  run = function(ctx)",
  }
  local n = 0
  for _, l in ipairs(M.ok_lines) do
    local text = l.text
    if text:match("^:tenant") then
      out[#out + 1] = "    -- " .. text .. "  (run with --tenant instead)"
    elseif not text:match("^%s*help%s*%(") then
      if l.expr then
        n = n + 1
        text = fmt("ctx.r%d = %s", n, (text:gsub("^=", "")))
      end
      for line in (text .. "\n"):gmatch("([^\n]*)\n") do out[#out + 1] = "    " .. line end
    end
  end
  out[#out + 1] = "  end,"
  out[#out + 1] = "}"
  return table.concat(out, "\n") .. "\n"
end

return M
