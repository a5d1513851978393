-- The exec family: local programs from the config's allow list, argv as a table, no shell.
local host = require "rbl.host"
local prim = require "rbl.prim"
local proc = require "rbl.proc"
local json = require "rbl.json"

local M = {}
local type, tostring, pairs, ipairs = type, tostring, pairs, ipairs

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
  if host.mutant_no_lua_scope() then return path end -- test build: the C gate alone decides
  return nil, path
end

function M.globals()
  local cfg = host.config() or {}
  local g = {}
  local allow = (cfg.exec and cfg.exec.allow) or {}
  g.exec = prim.define("exec", {
    -- {read_only = true}: runs under --dry-run too, recorded read_only; otherwise a write
    write = function(_, opts) return not (type(opts) == "table" and opts.read_only == true) end,
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
      if host.dry_run() and not (type(opts) == "table" and opts.read_only == true) then
        local shown = {}
        for i = 1, #argv do shown[i] = tostring(argv[i]) end
        prim.plan(call, { argv = json.array(shown), changes = json.array({}) })
        return { exit_code = 0, stdout = "", stderr = "", duration_ms = 0, dry_run = true },
               { dry_run = true, sent = false }
      end
      local r = proc.spawn(call, path, argv, opts or {})
      -- the summary's cut is made after masking: it never keeps the start of a secret
      return r, { exit_code = r.exit_code, duration_ms = r.duration_ms,
        stdout_bytes = #r.stdout, stderr_bytes = #r.stderr, stdout = host.cut(r.stdout, 512),
        stderr = host.cut(r.stderr, 512), truncated = r.truncated }
    end,
  })

  return g
end

return M
