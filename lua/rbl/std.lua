-- The core family's globals: the DSL, fan-out, log, sleep, secrets, json (docs/runbook-language.md).
local host = require "rbl.host"
local prim = require "rbl.prim"
local json = require "rbl.json"

local M = {}
local select, type, tostring, error, pairs, ipairs, next = select, type, tostring, error, pairs, ipairs, next

local function fmt(f, ...)
  if select("#", ...) == 0 then return tostring(f) end
  return string.format(tostring(f), ...)
end

-- Runs fns as concurrent tasks; raises one error gathering every failure.
local function gather(fns, opts, what)
  local results, errors, nerr = host.run_all(fns, opts)
  if nerr > 0 then
    local parts, first = {}, nil
    for i = 1, #fns do
      local e = errors[i]
      if e ~= nil then
        first = first or e
        parts[#parts + 1] = string.format("[%d] %s", i, tostring(e))
        if #parts >= 5 then break end
      end
    end
    local code = type(first) == "table" and type(first.code) == "string" and first.code or "failed"
    error(host.error(code, string.format("%s: %d of %d failed: %s", what, nerr, #fns, table.concat(parts, "; ")),
      { errors = errors, results = results }), 0)
  end
  return results
end

local function concurrency_of(what, opts)
  if opts == nil then return nil end
  if type(opts) ~= "table" then host.raise("invalid", what .. ": options must be a table") end
  local c = opts.concurrency
  if c ~= nil and (math.type(c) ~= "integer" or c < 1) then
    host.raise("invalid", what .. ": concurrency must be a positive integer")
  end
  return c
end

-- params: the declared parameters' checked values (rbl.params) once runbook{} declared them;
-- before that, or in a runbook that declares none, the --param strings as given.
local function params_proxy(book, cli)
  local function current()
    return book.param_values or cli
  end
  local proxy = {}
  setmetatable(proxy, {
    __index = function(_, k) return current()[k] end,
    __newindex = function(_, k) host.raise("invalid", "params are read-only (" .. tostring(k) .. ")") end,
    __pairs = function()
      local all = {}
      for k, v in pairs(current()) do all[k] = v end
      return next, all, nil
    end,
    __metatable = "read-only",
  })
  return host.protect(proxy)
end

function M.globals(book)
  local g = {}
  local cfg = host.config() or {}

  g.log = function(f, ...)
    local msg = fmt(f, ...)
    host.record("log", { message = msg, tenant = host.tenant() })
    book.note_log(msg)
    -- Line breaks print as lines, each indented under the step (so no line of a message can
    -- pass for rbl's own); every other control character stays escaped (host.progress).
    if not host.progress_event({ event = "log", step = book.current and book.current.name, tenant = host.tenant(),
        message = msg }) then
      -- bounded: the first 8 KiB and 100 lines (the audit and the report have all of it)
      local shown, n = #msg > 8192 and msg:sub(1, 8192) .. "\n..." or msg, 0
      for line in (shown .. "\n"):gmatch("([^\n]*)\n") do
        n = n + 1
        if n > 100 then host.progress("  ..."); break end
        host.progress("  " .. line)
      end
    end
  end

  g.sleep = prim.define("sleep", { effect = function(call, s)
    if type(s) ~= "number" then host.raise("invalid", "sleep: seconds must be a number") end
    host.sleep(call, s)
  end })

  g.parallel = function(...)
    local fns = { ... }
    for i = 1, select("#", ...) do
      if type(fns[i]) ~= "function" then host.raise("invalid", "parallel: argument " .. i .. " is not a function") end
    end
    return gather(fns, nil, "parallel")
  end

  g.each = function(list, fn, opts)
    if type(list) ~= "table" then host.raise("invalid", "each: list must be a table") end
    if type(fn) ~= "function" then host.raise("invalid", "each: fn must be a function") end
    local c = concurrency_of("each", opts)
    local fns, n = {}, #list
    for i = 1, n do local v = list[i]; fns[i] = function() return fn(v, i) end end
    return gather(fns, { concurrency = c }, "each")
  end

  g.each_tenant = function(fn, opts)
    if type(fn) ~= "function" then host.raise("invalid", "each_tenant: fn must be a function") end
    local c = concurrency_of("each_tenant", opts)
    local ts, fns = host.tenants(), {}
    for i = 1, #ts do local t = ts[i]; fns[i] = function() return fn(t) end end
    local res = gather(fns, { concurrency = c, tenants = ts }, "each_tenant")
    local by = {}
    for i = 1, #ts do by[ts[i]] = res[i] end
    return by
  end

  g.secret = function(name)
    if type(name) ~= "string" or not name:match("^[%w_]+$") then
      host.raise("invalid", "secret: name must be letters, digits and _")
    end
    local v
    local files = cfg.secrets or {}
    if files[name] then
      local f, err = io.open(files[name], "rb")
      if not f then host.raise("not_found", "secret " .. name .. ": " .. tostring(err)) end
      v = f:read("a"):gsub("\n$", "")
      f:close()
    else
      v = os.getenv(name)
    end
    if v == nil then host.raise("not_found", "secret " .. name .. ": no such environment variable or configured file") end
    host.record("secret", { name = name })
    return host.secret(name, v)
  end

  g.json = { encode = json.encode, decode = json.decode, null = json.null,
    array = json.array, object = json.object }

  -- Each runtime family answers for itself; the name is one global.
  g.detect_runtime = function(kind, ...)
    if kind == nil or kind == "docker" then return require("rbl.docker").detect(...) end
    if kind == "kubernetes" then return require("rbl.kube").detect(...) end
    host.raise("invalid", string.format("detect_runtime: unknown runtime %q (docker or kubernetes)", tostring(kind)))
  end

  local info = host.info()
  g.runbook, g.step = book.runbook, book.step
  local ts = {}
  for i, t in ipairs(host.tenants()) do ts[i] = t end
  g.tenants = ts
  g.incident = info.incident
  g.params = params_proxy(book, info.cli_params or {})
  g.dry_run = info.dry_run and true or false
  return g
end

return M
