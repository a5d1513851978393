-- The runbook's globals: the primitives and helpers the sandbox receives (see docs/runbook-language.md).
local host = require "rbl.host"
local prim = require "rbl.prim"
local json = require "rbl.json"
local proc = require "rbl.proc"

local M = {}
local select, type, tostring, error, pairs, ipairs = select, type, tostring, error, pairs, ipairs

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
    local err = { code = type(first) == "table" and first.code or "failed",
      message = string.format("%s: %d of %d failed: %s", what, nerr, #fns, table.concat(parts, "; ")),
      errors = errors, results = results }
    error(setmetatable(err, { __tostring = function(e) return e.code .. ": " .. e.message end }), 0)
  end
  return results
end

local function concurrency_of(opts)
  if opts == nil then return nil end
  if type(opts) ~= "table" then error("options must be a table", 3) end
  local c = opts.concurrency
  if c ~= nil and (math.type(c) ~= "integer" or c < 1) then
    error("concurrency must be a positive integer", 3)
  end
  return c
end

local function resolve_program(name, allow)
  local path
  if name:find("/", 1, true) then path = name
  else
    for dir in (os.getenv("PATH") or "/usr/bin:/bin"):gmatch("[^:]+") do
      local p = dir .. "/" .. name
      local f = io.open(p, "rb")
      if f then f:close(); path = p; break end
    end
  end
  if not path then return nil end
  for _, a in ipairs(allow) do
    if a == path or a == name then return path end
  end
  return nil, path
end

function M.build(book)
  local g = {}
  local cfg = host.config() or {}

  g.log = function(f, ...)
    local msg = fmt(f, ...)
    host.record("log", { message = msg, tenant = host.tenant() })
    book.note_log(msg)
    host.progress("  " .. msg)
  end

  g.sleep = prim.define("sleep", { effect = function(call, s)
    if type(s) ~= "number" then error("sleep: seconds must be a number", 0) end
    host.sleep(call, s)
  end })

  g.parallel = function(...)
    local fns = { ... }
    for i = 1, select("#", ...) do
      if type(fns[i]) ~= "function" then error("parallel: argument " .. i .. " is not a function", 2) end
    end
    return gather(fns, nil, "parallel")
  end

  g.each = function(list, fn, opts)
    if type(list) ~= "table" then error("each: list must be a table", 2) end
    if type(fn) ~= "function" then error("each: fn must be a function", 2) end
    local c = concurrency_of(opts)
    local fns, n = {}, #list
    for i = 1, n do local v = list[i]; fns[i] = function() return fn(v, i) end end
    return gather(fns, { concurrency = c }, "each")
  end

  g.each_tenant = function(fn, opts)
    if type(fn) ~= "function" then error("each_tenant: fn must be a function", 2) end
    local c = concurrency_of(opts)
    local ts, fns = host.tenants(), {}
    for i = 1, #ts do local t = ts[i]; fns[i] = function() return fn(t) end end
    local res = gather(fns, { concurrency = c, tenants = ts }, "each_tenant")
    local by = {}
    for i = 1, #ts do by[ts[i]] = res[i] end
    return by
  end

  local allow = (cfg.exec and cfg.exec.allow) or {}
  g.exec = prim.define("exec", {
    scope = function(call, argv, opts)
      if type(argv) ~= "table" or type(argv[1]) ~= "string" then
        host.raise("invalid", "exec: argv must be a table of strings, program first")
      end
      if argv[1]:find("\0", 1, true) then
        host.refuse(call, "exec: program name contains a NUL byte")
      end
      for i = 1, #argv do
        local a = argv[i]
        if type(a) ~= "string" and type(a) ~= "number" and tostring(a) ~= "[redacted]" then
          host.raise("invalid", "exec: argv[" .. i .. "] is not a string")
        end
        if type(a) == "string" and a:find("\0", 1, true) then
          host.raise("invalid", "exec: argv[" .. i .. "] contains a NUL byte")
        end
      end
      local env = type(opts) == "table" and opts.env or nil
      if env ~= nil then
        if type(env) ~= "table" then host.raise("invalid", "exec: env must be a table") end
        for k in pairs(env) do
          if type(k) ~= "string" or not k:match("^[%a_][%w_]*$") then
            host.raise("invalid", "exec: env name " .. tostring(k) .. " is not a valid variable name")
          end
          if k:match("^LD_") or k == "BASH_ENV" or k == "ENV" or k == "PATH" or k == "IFS" then
            host.refuse(call, "exec: setting " .. k .. " would change which code the program runs")
          end
        end
      end
      local path, found = resolve_program(argv[1], allow)
      if not path then
        host.refuse(call, string.format("program %q is not on the exec allow list%s", argv[1],
          found and (" (resolved to " .. found .. ")") or ""))
      end
      return { program = path }
    end,
    effect = function(call, argv, opts)
      local path = resolve_program(argv[1], allow)
      local r = proc.spawn(call, path, argv, opts or {})
      return r, { exit_code = r.exit_code, duration_ms = r.duration_ms,
        stdout_bytes = #r.stdout, stderr_bytes = #r.stderr, stdout = r.stdout:sub(1, 512),
        stderr = r.stderr:sub(1, 512), truncated = r.truncated }
    end,
  })

  g.secret = function(name)
    if type(name) ~= "string" or not name:match("^[%w_]+$") then
      error("secret: name must be letters, digits and _", 2)
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

  -- Optional modules contributed by other files: each returns a table of globals.
  for _, modname in ipairs({ "rbl.drift_prims", "rbl.docker", "rbl.kube", "rbl.isolation" }) do
    local ok, mod = pcall(require, modname)
    if ok and type(mod) == "table" and mod.globals then
      for k, v in pairs(mod.globals(book, g)) do g[k] = v end
    elseif not ok and not tostring(mod):find("not found", 1, true) then
      error(mod, 0)
    end
  end
  return g
end

return M
