-- The one path every primitive takes: begin -> scope -> intent (durable) -> effect -> result.
local host = require "rbl.host"

local M = {}
local unpack, pcall, error, type, ipairs, rawget = table.unpack, pcall, error, type, ipairs, rawget

-- Hooks the DSL sets so effects can report reversible changes and drift to the current step.
-- on_undo(name, call_id, undo, uncertain) -> a handle (a table with fn and uncertain) or nil.
M.on_undo = function() end
-- on_call(id, name, tenant, target, args, ok, summary_or_err, duration_ms): every call that
-- reached its intent, for the report's per-step calls.
M.on_call = function() end
-- on_intent(name, args): after scope, before the intent: the DSL notes which steps wrote.
M.on_intent = function() end
-- on_start(call, name, tenant, target, args): the intent is durable, the effect starts. A call
-- that never reaches on_call was canceled in flight (host.canceled(call) says how): the DSL
-- lists it in the report's calls all the same.
M.on_start = function() end

-- Primitives that only read (or wait, or tell a person): a run that called nothing else made
-- no change (nothing_to_do), and a resumed run may repeat a step that called only these.
-- Any other primitive counts as a write, so one added later is a write until listed here.
local READS = { sleep = true, ["retry.backoff"] = true, detect_runtime = true, drift_compare = true,
  notify = true, wait_until = true, verify_isolation = true,
  ["docker.ps"] = true, ["docker.inspect"] = true, ["docker.logs"] = true, ["docker.stats"] = true,
  ["docker.top"] = true, ["kube.get"] = true, ["kube.list"] = true, ["kube.can_i"] = true,
  ["kube.logs"] = true, ["kube.events"] = true, ["kube.rollout_status"] = true, ["kube.wait"] = true }
local READ_PREFIXES = { "^iac%.", "^prom%." }
-- exec and docker_exec: a write unless the runbook marked the call {read_only = true}.
local OPTS_AT = { exec = 2, docker_exec = 3 }

function M.is_write(name, args)
  if type(name) ~= "string" then return true end
  if READS[name] then return false end
  for _, p in ipairs(READ_PREFIXES) do if name:find(p) then return false end end
  local at = OPTS_AT[name]
  local o = at and type(args) == "table" and rawget(args, at)
  if type(o) == "table" and rawget(o, "read_only") == true then return false end
  return true
end

-- Where in the runbook a failing primitive was called (file:line of the innermost frame that
-- is not rbl's own), stored on the error object as `where` for the report and the progress.
local getinfo = debug and debug.getinfo
local function mark_where(err)
  if type(err) ~= "table" or not getinfo or rawget(err, "where") ~= nil then return end
  for level = 3, 40 do
    local info = getinfo(level, "Sl")
    if not info then return end
    if info.what ~= "C" and info.currentline and info.currentline > 0 and not info.source:match("^=%[rbl%]") then
      pcall(rawset, err, "where", info.short_src .. ":" .. info.currentline)
      return
    end
  end
end
M.mark_where = mark_where

local pending = setmetatable({}, { __mode = "k" }) -- call -> handle of its uncertain undo

-- For the effect of a write, before the request that changes anything leaves: the
-- before-state goes with the call (a canceled or failed call's result carries it, so
-- `rbl rollback` finds it) and, when undo is given, the current step can undo the write
-- whatever becomes of the call. undo(opts) reads back whether the write took effect and
-- returns "done" or "not_needed". Called again for the same call (a retry), it replaces both.
function M.before(call, state, undo, name)
  host.before(call, state)
  local h = pending[call]
  if h then
    h.fn, h.uncertain = undo, true
    if not undo then h.dropped = true end
  elseif undo then
    pending[call] = M.on_undo(name or "write", call:id(), undo, true)
  end
end

local function fail_before_intent(call, name, args, err)
  host.record("failed", { call = call:id(), prim = name, tenant = call:tenant(), phase = "scope",
    error = type(err) == "table" and { code = err.code, message = err.message } or { code = "failed", message = tostring(err) } })
  mark_where(err)
  error(err, 0)
end

-- Under rbl check, primitives do nothing and return this inert value, so top-level code
-- (`local spec = iac.terraform(...)`) goes on to declare the steps that check inspects.
local inert
local inert_mt = { __metatable = "check", __tostring = function() return "<rbl check>" end,
  __concat = function() return "<rbl check>" end, __len = function() return 0 end,
  __call = function() return inert end, __index = function() return inert end,
  __eq = function() return false end, __lt = function() return false end, __le = function() return false end,
  __add = function() return 0 end, __sub = function() return 0 end, __mul = function() return 0 end,
  __div = function() return 0 end, __unm = function() return 0 end }
inert = setmetatable({}, inert_mt)
M.inert = inert

-- Plans (docs/runbook-language.md, "Dry run and plans"). Under --dry-run every write that
-- returns becomes a plan item; under --plan FILE every write must be one of the plan's items.
M.on_plan = function() end -- set by the DSL: a planned write (dry run)
M.plan_guard = nil          -- set by the DSL under --plan: (name, tenant, args_sha256) -> ok, why
M.write_gate = nil          -- set by rbl repl: (name, tenant, target) before every write; raises to refuse
local planned = setmetatable({}, { __mode = "k" }) -- call -> its plan item (dry run)

-- For an effect under dry run: adds what would happen to the call's plan item (changes =
-- { {path, before, after, before_exists}... }, resourceVersion, container_state, argv, ...).
function M.plan(call, fields)
  local it = planned[call]
  if it then for k, v in pairs(fields) do it[k] = v end end
end

-- impl.scope(call, ...) -> target (optional; reads only); impl.effect(call, ...) ->
-- value, summary, before, undo (undo: a function that reverses the change, for rollback "auto").
-- impl.write: true for a primitive that changes something, or function(...) -> bool deciding
-- per call (false: the call is read-only, e.g. docker_exec{read_only = true}). impl.plan =
-- false: a write that is never planned (rollback's own undo primitives).
-- impl.record_args(target, args, n) -> args (optional): what the audit intent and the report show
-- of the arguments (e.g. a Secret's data redacted); the effect always gets the real arguments.
function M.define(name, impl)
  local scope, effect, write, plannable = impl.scope, impl.effect, impl.write, impl.plan ~= false
  assert(impl.record_args == nil or type(impl.record_args) == "function")
  return function(...)
    if host.check_mode() then return inert end
    local call, args, n = host.begin(name, ...)
    local is_write, read_only = write == true, false
    if write == nil then -- not declared: the one classification (a new verb is a write until listed)
      is_write = M.is_write(name, args)
    elseif type(write) == "function" then
      is_write = write(unpack(args, 1, n)) and true or false
      read_only = not is_write
    end
    local target
    if scope then
      local ok, t = pcall(scope, call, unpack(args, 1, n))
      if not ok then fail_before_intent(call, name, args, t) end
      target = t
    end
    local shown = args
    if impl.record_args then shown = impl.record_args(target, args, n) end
    local args_sha
    if is_write and plannable and (host.dry_run() or M.plan_guard) then
      args_sha = host.canonical_sha256({ name, args })
      if M.plan_guard then
        local gok, why = M.plan_guard(name, call:tenant(), args_sha, target)
        if not gok then fail_before_intent(call, name, args, host.error("conflict", why)) end
      end
    end
    if is_write and plannable and M.write_gate and not host.dry_run() then
      local gok, gerr = pcall(M.write_gate, name, call:tenant(), target)
      if not gok then fail_before_intent(call, name, args, gerr) end
    end
    M.on_intent(name, args)
    host.intent(call, shown, target, is_write, read_only)
    pcall(M.on_start, call, name, call:tenant(), target, shown)
    if args_sha and host.dry_run() then
      planned[call] = { prim = name, tenant = call:tenant(), target = target, args_sha256 = args_sha }
    end
    local t0 = host.now_ms()
    local ok, res, summary, before, undo = pcall(effect, call, unpack(args, 1, n))
    local ms = math.floor(host.now_ms() - t0 + 0.5)
    local h = pending[call]
    pending[call] = nil
    local item = planned[call]
    planned[call] = nil
    if ok and item then M.on_plan(item) end
    if not ok then
      -- a failed write keeps its uncertain undo: its request may have been applied
      if h and not host.sent(call) then h.dropped = true end
      host.result(call, false, res)
      pcall(M.on_call, call:id(), name, call:tenant(), target, shown, false, res, ms)
      mark_where(res)
      error(res, 0)
    end
    host.result(call, true, nil, summary, before)
    pcall(M.on_call, call:id(), name, call:tenant(), target, shown, true, summary, ms)
    if h then
      if undo then h.fn, h.uncertain = undo, false else h.dropped = true end
    elseif undo then
      M.on_undo(name, call:id(), undo, false)
    end
    return res
  end
end

return M
