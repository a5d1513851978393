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

-- keys (each_tenant: the tenant names) label the failures and key the raised error's
-- errors and results instead of the index.
local function failures(fns, errors, keys)
  local parts, first = {}, nil
  for i = 1, #fns do
    local e = errors[i]
    if e ~= nil then
      first = first or e
      parts[#parts + 1] = string.format("[%s] %s", keys and keys[i] or i, (tostring(e):match("^[^\n]*")))
      if #parts >= 5 then break end
    end
  end
  local code = type(first) == "table" and type(first.code) == "string" and first.code or "failed"
  return code, table.concat(parts, "; ")
end

-- With an error budget: within it, results and errors by index are returned; once it is
-- spent (more than max_errors failed), the error says how many items never started.
local function keyed(keys, errors, results)
  if not keys then return errors, results end
  local by_e, by_r = {}, {}
  for i = 1, #keys do by_e[keys[i]], by_r[keys[i]] = errors[i], results[i] end
  return by_e, by_r
end

local function budgeted(fns, opts, what, book, keys)
  local results, errors, nerr, unstarted = host.run_all(fns, opts)
  local n = #fns
  local cur = book.current or book.top
  if cur then
    cur.fanout = cur.fanout or {}
    cur.fanout[#cur.fanout + 1] = { what = what, items = n, started = n - unstarted, failed = nerr,
      succeeded = n - unstarted - nerr, not_started = unstarted, max_errors = opts.max_errors,
      max_errors_given = opts.max_errors_given, ramp = opts.ramp or nil, concurrency = opts.concurrency }
  end
  if nerr <= opts.max_errors then return results, errors end
  local code, parts = failures(fns, errors, keys)
  local kerrors, kresults = keyed(keys, errors, results)
  error(host.error(code, string.format("%s: error budget spent: %d of %d failed (max_errors %s), %d never started, %d succeeded: %s",
    what, nerr, n, tostring(opts.max_errors_given), unstarted, n - unstarted - nerr, parts),
    { errors = kerrors, results = kresults, failed = nerr, not_started = unstarted, started = n - unstarted }), 0)
end

-- Runs fns as concurrent tasks; raises one error gathering every failure.
local function gather(fns, opts, what, book, keys)
  if opts and opts.max_errors then return budgeted(fns, opts, what, book, keys) end
  local results, errors, nerr = host.run_all(fns, opts)
  if nerr > 0 then
    local code, parts = failures(fns, errors, keys)
    errors, results = keyed(keys, errors, results)
    error(host.error(code, string.format("%s: %d of %d failed: %s", what, nerr, #fns, parts),
      { errors = errors, results = results }), 0)
  end
  return results
end

-- {concurrency, max_errors, ramp} of each/each_tenant, checked, for n items: max_errors a
-- count, or "P%" of the items rounded down (more than P% failed <=> more than floor(n*P/100)).
local function fanout_opts(what, opts, n)
  if opts == nil then return {} end
  if type(opts) ~= "table" then host.raise("invalid", what .. ": options must be a table") end
  local c = rawget(opts, "concurrency")
  if c ~= nil and (math.type(c) ~= "integer" or c < 1) then
    host.raise("invalid", what .. ": concurrency must be a positive integer")
  end
  local o = { concurrency = c }
  local m = rawget(opts, "max_errors")
  if m ~= nil then
    local count
    if math.type(m) == "integer" and m >= 0 then count = m
    elseif type(m) == "string" then
      local p = tonumber(m:match("^%s*(%d+%.?%d*)%s*%%%s*$"))
      if p and p <= 100 then count = math.floor(n * p / 100 + 1e-9) end
    end
    if not count then
      host.raise("invalid", what .. ": max_errors must be a count (an integer >= 0) or a percentage such as \"10%\"")
    end
    o.max_errors, o.max_errors_given = count, m
  end
  local r = rawget(opts, "ramp")
  if r ~= nil and type(r) ~= "boolean" then host.raise("invalid", what .. ": ramp must be true or false") end
  o.ramp = r
  return o
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
      -- bounded: the first 8 KiB and 100 lines (the audit and the report have all of it),
      -- cut after masking, so a cut through a secret cannot print its first bytes
      local masked = host.mask(msg)
      local shown, n = #masked > 8192 and masked:sub(1, 8192) .. "\n..." or masked, 0
      for line in (shown .. "\n"):gmatch("([^\n]*)\n") do
        n = n + 1
        if n > 100 then host.progress("  ..."); break end
        host.progress("  " .. line)
      end
    end
  end

  -- approve(message, {approvers = n, timeout = seconds}): waits for people (docs/approvals.md)
  g.approve = function(message, opts)
    if host.check_mode() then return prim.inert end
    if type(message) ~= "string" or message == "" then
      host.raise("invalid", "approve: message must be a non-empty string")
    end
    if opts ~= nil and type(opts) ~= "table" then host.raise("invalid", "approve: options must be a table") end
    local o = {}
    for _, k in ipairs({ "approvers", "timeout" }) do
      local v = opts and rawget(opts, k)
      if v ~= nil and (math.type(v) == nil or v <= 0) then
        host.raise("invalid", "approve: " .. k .. " must be a positive number")
      end
      o[k] = v
    end
    return book.ask_approval(message, o, book.current and book.current.name or nil)
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
    return gather(fns, nil, "parallel", book)
  end

  g.each = function(list, fn, opts)
    if type(list) ~= "table" then host.raise("invalid", "each: list must be a table") end
    if type(fn) ~= "function" then host.raise("invalid", "each: fn must be a function") end
    local fns, n = {}, #list
    local o = fanout_opts("each", opts, n)
    for i = 1, n do local v = list[i]; fns[i] = function() return fn(v, i) end end
    return gather(fns, o, "each", book)
  end

  g.each_tenant = function(fn, opts)
    if type(fn) ~= "function" then host.raise("invalid", "each_tenant: fn must be a function") end
    local ts, fns = host.tenants(), {}
    local o = fanout_opts("each_tenant", opts, #ts)
    o.tenants = ts
    for i = 1, #ts do local t = ts[i]; fns[i] = function() return fn(t) end end
    local res, errs = gather(fns, o, "each_tenant", book, ts)
    local by, eby = {}, {}
    for i = 1, #ts do by[ts[i]] = res[i]; if errs then eby[ts[i]] = errs[i] end end
    return by, errs and eby or nil
  end

  g.secret = function(name)
    if type(name) ~= "string" or not name:match("^[%w_]+$") then
      host.raise("invalid", "secret: name must be letters, digits and _")
    end
    if host.check_mode() then return prim.inert end -- rbl check reads no secret
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
